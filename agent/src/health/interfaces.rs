//! Physical NICs (`host_pnic`) and vNICs: administrative and operational state, carrier (for a
//! VM's tap: whether the VM holds it), and error and drop counter rates over thresholds.
//!
//! State comes from the model the kernel collector keeps current from netlink; counters from
//! sysfs, read for interfaces of the agent's own namespace (the kernel numbers another
//! namespace's interfaces in that namespace's sysfs only).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use calipso_proto::{AttrValue, Object, ObjectId, ObjectType};
use futures::future::BoxFuture;

use crate::config::HealthConfig;

use super::{Check, Verdict, flag_attr, read_trimmed, text_attr, text_list};

/// Error and drop rates (per second) above which an interface is a warning.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimits {
    pub errors_per_second: f64,
    pub drops_per_second: f64,
}

/// The counters that say traffic is being lost.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Counters {
    rx_errors: u64,
    tx_errors: u64,
    rx_dropped: u64,
    tx_dropped: u64,
}

#[derive(Debug)]
pub struct InterfaceCheck {
    sysfs_net: PathBuf,
    /// The agent's limits, or its environment's (see [`Check::configure`]).
    limits: Mutex<RateLimits>,
    samples: Mutex<HashMap<ObjectId, (Instant, Counters)>>,
}

impl InterfaceCheck {
    pub fn new(sysfs_net: PathBuf, limits: RateLimits) -> Self {
        InterfaceCheck {
            sysfs_net,
            limits: Mutex::new(limits),
            samples: Mutex::new(HashMap::new()),
        }
    }

    fn counters(&self, name: &str) -> Option<Counters> {
        let dir = self.sysfs_net.join(name).join("statistics");
        let read = |counter: &str| read_trimmed(&dir.join(counter))?.parse::<u64>().ok();
        Some(Counters {
            rx_errors: read("rx_errors")?,
            tx_errors: read("tx_errors")?,
            rx_dropped: read("rx_dropped")?,
            tx_dropped: read("tx_dropped")?,
        })
    }

    /// The rates since the previous sample of this interface, if there was one.
    fn rates(&self, id: &ObjectId, now: Counters) -> Option<(f64, f64)> {
        let at = Instant::now();
        let mut samples = self.samples.lock().unwrap_or_else(PoisonError::into_inner);
        let (then_at, then) = samples.insert(id.clone(), (at, now))?;
        let seconds = at.duration_since(then_at).as_secs_f64();
        // Counters that went backwards were reset (driver reload): no rate from that pair.
        let delta = |new: u64, old: u64| new.checked_sub(old);
        let errors = delta(now.rx_errors, then.rx_errors)? + delta(now.tx_errors, then.tx_errors)?;
        let drops =
            delta(now.rx_dropped, then.rx_dropped)? + delta(now.tx_dropped, then.tx_dropped)?;
        (seconds > 0.0).then(|| (errors as f64 / seconds, drops as f64 / seconds))
    }

    fn check(&self, object: &Object) -> Verdict {
        if let Some(verdict) = state_verdict(object) {
            return verdict;
        }
        let mut notes = vec!["up".to_owned()];
        if let Some(speed) = speed_of(object) {
            notes.push(format!("{speed} Mb/s"));
        }
        if let Some(best) = best_speed(object)
            && speed_of(object).is_some_and(|speed| speed < best)
        {
            return Verdict::warning(format!(
                "{}, below the {best} Mb/s the NIC supports",
                notes.join(", ")
            ));
        }
        if text_attr(object, "duplex") == Some("half") {
            // A full-duplex link that negotiated half duplex loses frames to collisions.
            return Verdict::warning(format!("{}, half duplex", notes.join(", ")));
        }
        let own_namespace = text_attr(object, "netns").is_none();
        if own_namespace
            && let Some(counters) = self.counters(&object.name)
            && let Some((errors, drops)) = self.rates(&object.id, counters)
        {
            let limits = *self.limits.lock().unwrap_or_else(PoisonError::into_inner);
            let mut losses = Vec::new();
            if errors > limits.errors_per_second {
                losses.push(format!(
                    "{errors:.1} errors/s (over {})",
                    limits.errors_per_second
                ));
            }
            if drops > limits.drops_per_second {
                losses.push(format!(
                    "{drops:.1} drops/s (over {})",
                    limits.drops_per_second
                ));
            }
            if !losses.is_empty() {
                return Verdict::warning(format!("{}: {}", notes.join(", "), losses.join(", ")));
            }
        }
        Verdict::ok(notes.join(", "))
    }
}

/// The negotiated speed in Mb/s (unknown speeds are reported as 0 or -1 by the kernel).
fn speed_of(object: &Object) -> Option<i64> {
    object
        .attributes
        .extra
        .get("speed_mbps")
        .and_then(AttrValue::as_i64)
        .filter(|speed| *speed > 0)
}

/// The fastest of the NIC's supported link modes (`10000baseT/Full` → 10000).
fn best_speed(object: &Object) -> Option<i64> {
    text_list(object, "link_modes")
        .into_iter()
        .filter_map(|mode| {
            let digits: String = mode.chars().take_while(char::is_ascii_digit).collect();
            digits.parse::<i64>().ok()
        })
        .max()
}

/// The verdict of an interface's state alone when it is not up; `None` when it is.
fn state_verdict(object: &Object) -> Option<Verdict> {
    if flag_attr(object, "admin_up") == Some(false) {
        return Some(Verdict::error("administratively down"));
    }
    let is_tap = text_attr(object, "tun_mode") == Some("tap");
    if flag_attr(object, "carrier") == Some(false) {
        return Some(Verdict::error(if is_tap {
            "down: no carrier (no VM holds the tap)"
        } else {
            "down: no carrier"
        }));
    }
    match text_attr(object, "operstate") {
        Some(state @ ("down" | "lowerlayerdown" | "notpresent")) => {
            Some(Verdict::error(format!("down: operstate {state}")))
        }
        Some(state @ ("dormant" | "testing")) => {
            Some(Verdict::warning(format!("operstate {state}")))
        }
        _ => None,
    }
}

impl Check for InterfaceCheck {
    fn name(&self) -> &'static str {
        "interface"
    }

    fn covers(&self) -> &'static [ObjectType] {
        &[ObjectType::HostPnic, ObjectType::Vnic]
    }

    fn configure(&self, config: &HealthConfig) {
        *self.limits.lock().unwrap_or_else(PoisonError::into_inner) = config.rate_limits();
    }

    fn run(self: Arc<Self>, object: Object) -> BoxFuture<'static, Verdict> {
        // Four reads of sysfs files the kernel answers from memory (at most): cheaper inline
        // than a trip to the blocking pool.
        Box::pin(std::future::ready(self.check(&object)))
    }

    fn forget(&self, id: &ObjectId) {
        self.samples
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use calipso_proto::StatusLevel;

    fn nic(name: &str, attributes: &[(&str, calipso_proto::AttrValue)]) -> Object {
        let mut object = Object::new(
            ObjectId::from_raw(format!("compute-1-{name}")),
            ObjectType::HostPnic,
            name,
            "lab",
        );
        for (key, value) in attributes {
            object.attributes.extra.insert(key, value.clone());
        }
        object
    }

    fn write_counters(dir: &std::path::Path, name: &str, errors: u64, drops: u64) {
        let stats = dir.join(name).join("statistics");
        std::fs::create_dir_all(&stats).expect("mkdir");
        for (file, value) in [
            ("rx_errors", errors),
            ("tx_errors", 0),
            ("rx_dropped", drops),
            ("tx_dropped", 0),
        ] {
            std::fs::write(stats.join(file), format!("{value}\n")).expect("write");
        }
    }

    #[test]
    fn state_decides_before_counters() {
        let check = InterfaceCheck::new(
            "/nonexistent".into(),
            RateLimits {
                errors_per_second: 1.0,
                drops_per_second: 10.0,
            },
        );
        let cases = [
            (
                nic(
                    "eth1",
                    &[("admin_up", false.into()), ("operstate", "down".into())],
                ),
                StatusLevel::Error,
                "administratively down",
            ),
            (
                nic(
                    "tap1",
                    &[("carrier", false.into()), ("tun_mode", "tap".into())],
                ),
                StatusLevel::Error,
                "down: no carrier (no VM holds the tap)",
            ),
            (
                nic("eth2", &[("operstate", "lowerlayerdown".into())]),
                StatusLevel::Error,
                "down: operstate lowerlayerdown",
            ),
            (
                nic("eth3", &[("operstate", "dormant".into())]),
                StatusLevel::Warning,
                "operstate dormant",
            ),
            (
                nic(
                    "eth0",
                    &[
                        ("operstate", "up".into()),
                        ("carrier", true.into()),
                        ("speed_mbps", 10000u32.into()),
                    ],
                ),
                StatusLevel::Ok,
                "up, 10000 Mb/s",
            ),
            (
                nic(
                    "eth4",
                    &[
                        ("operstate", "up".into()),
                        ("speed_mbps", 1000u32.into()),
                        (
                            "link_modes",
                            vec!["1000baseT/Full".to_owned(), "10000baseT/Full".to_owned()].into(),
                        ),
                    ],
                ),
                StatusLevel::Warning,
                "up, 1000 Mb/s, below the 10000 Mb/s the NIC supports",
            ),
            (
                nic(
                    "eth5",
                    &[
                        ("operstate", "up".into()),
                        ("speed_mbps", 100u32.into()),
                        ("duplex", "half".into()),
                    ],
                ),
                StatusLevel::Warning,
                "up, 100 Mb/s, half duplex",
            ),
        ];
        for (object, level, text) in cases {
            assert_eq!(
                check.check(&object),
                Verdict {
                    level,
                    text: text.into(),
                    perfdata: String::new(),
                },
                "{}",
                object.name
            );
        }
    }

    #[test]
    fn error_and_drop_rates_over_their_limits_warn() {
        let dir = tempfile::tempdir().expect("tempdir");
        let check = InterfaceCheck::new(
            dir.path().to_owned(),
            RateLimits {
                errors_per_second: 1.0,
                drops_per_second: 10.0,
            },
        );
        let eth0 = nic("eth0", &[("operstate", "up".into())]);
        write_counters(dir.path(), "eth0", 100, 100);
        assert_eq!(
            check.check(&eth0),
            Verdict::ok("up"),
            "a first sample has no rate"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
        write_counters(dir.path(), "eth0", 100, 100);
        assert_eq!(check.check(&eth0), Verdict::ok("up"), "no new loss");
        std::thread::sleep(std::time::Duration::from_millis(100));
        // 50 errors and 500 drops in about 0.1 s: far over both limits.
        write_counters(dir.path(), "eth0", 150, 600);
        let verdict = check.check(&eth0);
        assert_eq!(verdict.level, StatusLevel::Warning);
        assert!(
            verdict.text.starts_with("up: ")
                && verdict.text.contains("errors/s (over 1)")
                && verdict.text.contains("drops/s (over 10)"),
            "{}",
            verdict.text
        );
        // A counter reset (driver reload) is no loss.
        write_counters(dir.path(), "eth0", 0, 0);
        assert_eq!(check.check(&eth0), Verdict::ok("up"));
    }
}
