use std::fmt;
use std::str::FromStr;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::net::{deserialize_dual, serialize_dual};

/// A point in time with microsecond precision: RFC 3339 in JSON, an integer on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Timestamp {
    micros_since_epoch: i64,
}

impl Timestamp {
    pub const fn from_unix_micros(micros_since_epoch: i64) -> Self {
        Timestamp { micros_since_epoch }
    }

    pub fn now() -> Self {
        let micros = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
            .unwrap_or(0);
        Timestamp::from_unix_micros(micros)
    }

    pub const fn unix_micros(self) -> i64 {
        self.micros_since_epoch
    }

    fn to_datetime(self) -> Option<OffsetDateTime> {
        OffsetDateTime::from_unix_timestamp_nanos(i128::from(self.micros_since_epoch) * 1000).ok()
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.to_datetime().and_then(|dt| dt.format(&Rfc3339).ok()) {
            Some(text) => f.write_str(&text),
            None => write!(f, "@{}us", self.micros_since_epoch),
        }
    }
}

/// A timestamp that is not RFC 3339 or lies outside the representable range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not an RFC 3339 timestamp (e.g. 2026-11-22T10:00:00Z)")]
pub struct ParseTimestampError(String);

impl FromStr for Timestamp {
    type Err = ParseTimestampError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let dt = OffsetDateTime::parse(text, &Rfc3339)
            .map_err(|_| ParseTimestampError(text.to_owned()))?;
        let micros = i64::try_from(dt.unix_timestamp_nanos() / 1000)
            .map_err(|_| ParseTimestampError(text.to_owned()))?;
        Ok(Timestamp::from_unix_micros(micros))
    }
}

impl Serialize for Timestamp {
    /// As RFC 3339 text for people; a time RFC 3339 cannot write (past year 9999) is refused
    /// rather than written in a form nothing reads back.
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable()
            && self
                .to_datetime()
                .and_then(|dt| dt.format(&Rfc3339).ok())
                .is_none()
        {
            return Err(serde::ser::Error::custom(format!(
                "timestamp {}µs since 1970 is outside the years RFC 3339 writes (0000 to 9999)",
                self.micros_since_epoch
            )));
        }
        serialize_dual(self, &self.micros_since_epoch, serializer)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserialize_dual(deserializer, |micros: i64| {
            Some(Timestamp::from_unix_micros(micros))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_round_trip() {
        let ts: Timestamp = "2026-11-22T10:00:00.123456Z".parse().expect("valid");
        assert_eq!(ts.to_string(), "2026-11-22T10:00:00.123456Z");
        assert_eq!(ts.unix_micros() % 1_000_000, 123_456);
        assert!("yesterday".parse::<Timestamp>().is_err());
        let json = serde_json::to_string(&ts).unwrap_or_default();
        assert_eq!(serde_json::from_str::<Timestamp>(&json).ok(), Some(ts));
    }

    #[test]
    fn a_time_past_year_9999_is_not_written_as_text_nothing_reads_back() {
        // 300 000 000 000 s after 2026: a schedule's next run that once made every schedule
        // unreadable.
        let far = Timestamp::from_unix_micros(1_764_000_000_000_000 + 300_000_000_000_000_000);
        let refused = serde_json::to_string(&far).map_err(|e| e.to_string());
        assert_eq!(
            refused,
            Err(format!(
                "timestamp {}µs since 1970 is outside the years RFC 3339 writes (0000 to 9999)",
                far.unix_micros()
            ))
        );
        let last: Timestamp = "9999-12-31T23:59:59.999999Z".parse().expect("valid");
        let json = serde_json::to_string(&last).unwrap_or_default();
        assert_eq!(serde_json::from_str::<Timestamp>(&json).ok(), Some(last));
    }
}
