use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Why a MAC address or an IP prefix did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseNetError {
    #[error("`{0}` is not a MAC address (expected six hex octets separated by ':')")]
    Mac(String),
    #[error("`{0}` is not an IP prefix (expected ADDRESS/LENGTH)")]
    Prefix(String),
}

/// An Ethernet MAC address, written `52:54:00:12:34:56` in JSON and in ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MacAddress(pub [u8; 6]);

impl fmt::Display for MacAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

impl FromStr for MacAddress {
    type Err = ParseNetError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let mut octets = [0u8; 6];
        let mut parts = text.split(':');
        for octet in &mut octets {
            let part = parts.next().filter(|p| p.len() == 2);
            *octet = part
                .and_then(|p| u8::from_str_radix(p, 16).ok())
                .ok_or_else(|| ParseNetError::Mac(text.to_owned()))?;
        }
        match parts.next() {
            None => Ok(MacAddress(octets)),
            Some(_) => Err(ParseNetError::Mac(text.to_owned())),
        }
    }
}

/// An interface address with its prefix length, written `10.0.0.1/24` in JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IpPrefix {
    pub addr: IpAddr,
    pub prefix_len: u8,
}

impl IpPrefix {
    /// Builds a prefix, refusing a length longer than the address family allows.
    pub fn new(addr: IpAddr, prefix_len: u8) -> Option<Self> {
        let max = if addr.is_ipv4() { 32 } else { 128 };
        (prefix_len <= max).then_some(IpPrefix { addr, prefix_len })
    }

    /// The network this address belongs to (`10.0.0.0/24` for `10.0.0.1/24`).
    pub fn network(self) -> IpPrefix {
        let addr = match self.addr {
            IpAddr::V4(v4) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix_len))
                    .unwrap_or(0);
                IpAddr::V4((u32::from(v4) & mask).into())
            }
            IpAddr::V6(v6) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix_len))
                    .unwrap_or(0);
                IpAddr::V6((u128::from(v6) & mask).into())
            }
        };
        IpPrefix {
            addr,
            prefix_len: self.prefix_len,
        }
    }
}

impl fmt::Display for IpPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix_len)
    }
}

impl FromStr for IpPrefix {
    type Err = ParseNetError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let err = || ParseNetError::Prefix(text.to_owned());
        let (addr, len) = text.split_once('/').ok_or_else(err)?;
        let addr = addr.parse().map_err(|_| err())?;
        let len = len.parse().map_err(|_| err())?;
        IpPrefix::new(addr, len).ok_or_else(err)
    }
}

/// Serializes a value as its text form for people (JSON) and as `binary` on the wire.
pub(super) fn serialize_dual<S, B>(
    text: &dyn fmt::Display,
    binary: &B,
    serializer: S,
) -> Result<S::Ok, S::Error>
where
    S: Serializer,
    B: Serialize,
{
    if serializer.is_human_readable() {
        serializer.collect_str(text)
    } else {
        binary.serialize(serializer)
    }
}

/// The inverse of [`serialize_dual`].
pub(super) fn deserialize_dual<'de, D, T, B>(
    deserializer: D,
    from_binary: impl FnOnce(B) -> Option<T>,
) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: FromStr,
    T::Err: fmt::Display,
    B: Deserialize<'de> + fmt::Debug,
{
    if deserializer.is_human_readable() {
        let text = std::borrow::Cow::<'de, str>::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    } else {
        let raw = B::deserialize(deserializer)?;
        let shown = format!("{raw:?}");
        from_binary(raw).ok_or_else(|| serde::de::Error::custom(format!("invalid value {shown}")))
    }
}

impl Serialize for MacAddress {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serialize_dual(self, &self.0, serializer)
    }
}

impl<'de> Deserialize<'de> for MacAddress {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserialize_dual(deserializer, |octets: [u8; 6]| Some(MacAddress(octets)))
    }
}

impl Serialize for IpPrefix {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serialize_dual(self, &(self.addr, self.prefix_len), serializer)
    }
}

impl<'de> Deserialize<'de> for IpPrefix {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserialize_dual(deserializer, |(addr, len): (IpAddr, u8)| {
            IpPrefix::new(addr, len)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_round_trip_and_errors() {
        let mac: MacAddress = "52:54:00:AB:cd:0f".parse().expect("valid mac");
        assert_eq!(mac.to_string(), "52:54:00:ab:cd:0f");
        for bad in [
            "52:54:00:ab:cd",
            "52:54:00:ab:cd:0f:11",
            "5254.00ab.cd0f",
            "zz:54:00:ab:cd:0f",
            "1:2:3:4:5:6",
        ] {
            assert_eq!(
                bad.parse::<MacAddress>(),
                Err(ParseNetError::Mac(bad.to_owned()))
            );
        }
    }

    #[test]
    fn prefix_round_trip_network_and_errors() {
        let p: IpPrefix = "10.99.0.7/24".parse().expect("valid prefix");
        assert_eq!(p.network().to_string(), "10.99.0.0/24");
        let v6: IpPrefix = "fe80::1:2/64".parse().expect("valid v6");
        assert_eq!(v6.network().to_string(), "fe80::/64");
        assert_eq!(
            "0.0.0.0/0"
                .parse::<IpPrefix>()
                .map(|p| p.network().to_string()),
            Ok("0.0.0.0/0".into())
        );
        for bad in ["10.0.0.1", "10.0.0.1/33", "::1/129", "x/8", "10.0.0.1/-1"] {
            assert!(bad.parse::<IpPrefix>().is_err(), "{bad}");
        }
    }

    #[test]
    fn json_is_textual() {
        let p: IpPrefix = "192.0.2.1/32".parse().expect("valid");
        assert_eq!(
            serde_json::to_string(&p).ok(),
            Some("\"192.0.2.1/32\"".into())
        );
        let mac = MacAddress([0xfa, 0x16, 0x3e, 0, 0, 1]);
        assert_eq!(
            serde_json::to_string(&mac).ok(),
            Some("\"fa:16:3e:00:00:01\"".into())
        );
        assert!(serde_json::from_str::<IpPrefix>("\"1.2.3.4/40\"").is_err());
    }
}
