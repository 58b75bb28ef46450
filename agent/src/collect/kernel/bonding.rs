//! `/proc/net/bonding/<bond>`: the bonding driver's own report, which the original stored on
//! bond host_pnics key by key (`Bonding Mode`, `MII Status`, `802.3ad info` …, one block per
//! `Slave Interface`). Parsed into an attribute map of the same shape.

use std::collections::BTreeMap;

use calipso_proto::AttrValue;

/// Parses the report: top-level `key: value` lines, nested sections (a line ending in `:`
/// followed by indented lines, such as `802.3ad info`), and one map per slave under `members`.
pub fn parse(text: &str) -> BTreeMap<String, AttrValue> {
    let mut top = BTreeMap::new();
    let mut members = BTreeMap::new();
    let mut current_member: Option<(String, BTreeMap<String, AttrValue>)> = None;
    let mut section: Option<(String, BTreeMap<String, AttrValue>)> = None;

    let flush_section = |section: &mut Option<(String, BTreeMap<String, AttrValue>)>,
                         target: &mut BTreeMap<String, AttrValue>| {
        if let Some((name, values)) = section.take() {
            target.insert(name, AttrValue::Map(values.into()));
        }
    };

    for line in text.lines() {
        if line.trim().is_empty() {
            continue;
        }
        let indented = line.starts_with(char::is_whitespace);
        let Some((key, value)) = line.trim().split_once(':') else {
            continue;
        };
        let (key, value) = (key.trim().to_owned(), value.trim().to_owned());
        if key == "Slave Interface" {
            let target = current_member.as_mut().map_or(&mut top, |(_, m)| m);
            flush_section(&mut section, target);
            if let Some((name, values)) = current_member.take() {
                members.insert(name, AttrValue::Map(values.into()));
            }
            current_member = Some((value, BTreeMap::new()));
            continue;
        }
        if indented && let Some((_, values)) = section.as_mut() {
            values.insert(key, AttrValue::from(value));
            continue;
        }
        let target = current_member.as_mut().map_or(&mut top, |(_, m)| m);
        flush_section(&mut section, target);
        if value.is_empty() {
            section = Some((key, BTreeMap::new()));
        } else {
            target.insert(key, AttrValue::from(value));
        }
    }
    let target = current_member.as_mut().map_or(&mut top, |(_, m)| m);
    flush_section(&mut section, target);
    if let Some((name, values)) = current_member.take() {
        members.insert(name, AttrValue::Map(values.into()));
    }
    if !members.is_empty() {
        top.insert("members".into(), AttrValue::Map(members.into()));
    }
    top
}

#[cfg(test)]
mod tests {
    use super::*;
    use calipso_proto::AttrMap;

    /// The shape the bonding driver writes for an 802.3ad bond with two ports.
    const SAMPLE: &str = "Ethernet Channel Bonding Driver: v6.1.0

Bonding Mode: IEEE 802.3ad Dynamic link aggregation
Transmit Hash Policy: layer3+4 (1)
MII Status: up
MII Polling Interval (ms): 100
Up Delay (ms): 0
Down Delay (ms): 0

802.3ad info
LACP active: on
LACP rate: fast
Aggregator selection policy (ad_select): stable
System priority: 65535
Active Aggregator Info:
\tAggregator ID: 1
\tNumber of ports: 2
\tPartner Mac Address: 00:1c:73:aa:bb:cc

Slave Interface: eno1
MII Status: up
Speed: 10000 Mbps
Duplex: full
Link Failure Count: 0
Permanent HW addr: 3c:fd:fe:00:00:01
Slave queue ID: 0
Aggregator ID: 1

Slave Interface: eno2
MII Status: down
Speed: Unknown
Duplex: Unknown
Link Failure Count: 3
Permanent HW addr: 3c:fd:fe:00:00:02
Slave queue ID: 0
";

    fn get<'a>(map: &'a AttrMap, path: &[&str]) -> Option<&'a AttrValue> {
        let (first, rest) = path.split_first()?;
        let value = map.get(first)?;
        if rest.is_empty() {
            return Some(value);
        }
        match value {
            AttrValue::Map(inner) => get(inner, rest),
            _ => None,
        }
    }

    #[test]
    fn parses_modes_sections_and_members() {
        let parsed = AttrMap::from(parse(SAMPLE));
        let text = |path: &[&str]| {
            get(&parsed, path)
                .and_then(AttrValue::as_str)
                .map(str::to_owned)
        };
        assert_eq!(
            text(&["Bonding Mode"]).as_deref(),
            Some("IEEE 802.3ad Dynamic link aggregation")
        );
        assert_eq!(text(&["MII Polling Interval (ms)"]).as_deref(), Some("100"));
        assert_eq!(
            text(&["Active Aggregator Info", "Partner Mac Address"]).as_deref(),
            Some("00:1c:73:aa:bb:cc")
        );
        assert_eq!(
            text(&["members", "eno1", "Speed"]).as_deref(),
            Some("10000 Mbps")
        );
        assert_eq!(
            text(&["members", "eno2", "MII Status"]).as_deref(),
            Some("down")
        );
        assert_eq!(
            text(&["members", "eno2", "Link Failure Count"]).as_deref(),
            Some("3")
        );
        assert_eq!(
            text(&["Ethernet Channel Bonding Driver"]).as_deref(),
            Some("v6.1.0")
        );
    }
}
