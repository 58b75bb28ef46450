//! Tunnel endpoints (`otep`): each remote endpoint answers ICMP echo from the local underlay
//! address, with loss and round-trip time under thresholds (the original's `check_ping`), one
//! result per tunnel, rolled up as the original did: no tunnel ok is an error, any tunnel not
//! ok a warning.
//!
//! Echo requests go out of a raw ICMP socket (the agent holds `CAP_NET_RAW`; unprivileged
//! ICMP sockets are off unless `net.ipv4.ping_group_range` allows them) bound to the local
//! address, created in the host's namespace.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use calipso_proto::{Object, ObjectType, StatusLevel};
use futures::FutureExt;
use futures::future::BoxFuture;
use surge_ping::{Client, Config, ICMP, IcmpPacket, PingIdentifier, PingSequence};

use super::{Check, Verdict, text_attr, text_list};
use crate::collect::kernel::Namespace;
use crate::config::HealthConfig;

/// How a tunnel is probed and judged.
#[derive(Debug, Clone, PartialEq)]
pub struct PingSettings {
    /// Echo requests per tunnel and check.
    pub count: u16,
    /// Between two requests.
    pub interval: Duration,
    /// How long a reply may take before it counts as lost.
    pub reply_timeout: Duration,
    /// Loss (percent) above which a tunnel is a warning …
    pub loss_warning: f64,
    /// … and an error.
    pub loss_error: f64,
    /// Average round trip above which a tunnel is a warning …
    pub rtt_warning: Duration,
    /// … and an error.
    pub rtt_error: Duration,
}

#[derive(Debug)]
pub struct TunnelCheck {
    /// The agent's settings, or its environment's (see [`Check::configure`]).
    settings: Mutex<PingSettings>,
    /// The host's namespace when it is not the agent's own (labs, tests).
    host_netns: Option<PathBuf>,
}

/// What probing one remote endpoint found.
#[derive(Debug, Clone, PartialEq)]
struct Probe {
    remote: IpAddr,
    sent: u16,
    round_trips: Vec<Duration>,
}

impl Probe {
    fn loss_percent(&self) -> f64 {
        let lost = self.sent.saturating_sub(self.round_trips.len() as u16);
        f64::from(lost) * 100.0 / f64::from(self.sent.max(1))
    }

    fn average(&self) -> Option<Duration> {
        let count = u32::try_from(self.round_trips.len())
            .ok()
            .filter(|c| *c > 0)?;
        Some(self.round_trips.iter().sum::<Duration>() / count)
    }

    fn judge(&self, settings: &PingSettings) -> (StatusLevel, String) {
        let loss = self.loss_percent();
        let average = self.average();
        let over = |limit: Duration| average.is_some_and(|a| a > limit);
        let level = if loss > settings.loss_error || over(settings.rtt_error) {
            StatusLevel::Error
        } else if loss > settings.loss_warning || over(settings.rtt_warning) {
            StatusLevel::Warning
        } else {
            StatusLevel::Ok
        };
        // The figures of a good tunnel change on every run and say nothing: it is just ok.
        let text = match (level, average) {
            (StatusLevel::Ok, _) => format!("{}: ok", self.remote),
            (_, Some(average)) => format!(
                "{}: {loss:.0}% loss, {:.1} ms",
                self.remote,
                average.as_secs_f64() * 1000.0
            ),
            (_, None) => format!("{}: {loss:.0}% loss", self.remote),
        };
        (level, text)
    }
}

/// ICMP echo reply: type 0 (RFC 792), 129 for ICMPv6 (RFC 4443).
fn is_echo_reply(packet: &IcmpPacket) -> bool {
    match packet {
        IcmpPacket::V4(packet) => packet.get_icmp_type().0 == 0,
        IcmpPacket::V6(packet) => packet.get_icmpv6_type().0 == 129,
    }
}

/// The otep's verdict from its tunnels' results.
fn roll_up(results: &[(StatusLevel, String)]) -> Verdict {
    let ok = results
        .iter()
        .filter(|(l, _)| *l == StatusLevel::Ok)
        .count();
    let mut listed: Vec<&(StatusLevel, String)> = results.iter().collect();
    // The worst first: what an operator reads before the line is cut.
    listed.sort_by_key(|(level, _)| std::cmp::Reverse(*level == StatusLevel::Error));
    let details = listed
        .iter()
        .map(|(_, text)| text.as_str())
        .collect::<Vec<_>>()
        .join("; ");
    let summary = format!("{ok} of {} tunnels ok: {details}", results.len());
    if ok == 0 {
        Verdict::error(summary)
    } else if ok < results.len() {
        Verdict::warning(summary)
    } else {
        Verdict::ok(summary)
    }
}

impl TunnelCheck {
    pub fn new(settings: PingSettings, host_netns: Option<PathBuf>) -> Self {
        TunnelCheck {
            settings: Mutex::new(settings),
            host_netns,
        }
    }

    fn settings(&self) -> PingSettings {
        self.settings
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// A raw ICMP socket for `local`'s family, bound to it, in the host's namespace.
    fn client(&self, local: Option<IpAddr>, v6: bool) -> std::io::Result<Client> {
        let mut config = Config::builder()
            .kind(if v6 { ICMP::V6 } else { ICMP::V4 })
            .sock_type_hint(socket2::Type::RAW);
        if let Some(local) = local.filter(|l| l.is_ipv6() == v6) {
            config = config.bind(SocketAddr::new(local, 0));
        }
        let config = config.build();
        let namespace = Namespace::host(self.host_netns.as_deref())?;
        namespace.run_inside(tokio::runtime::Handle::current(), move || {
            Client::new(&config)
        })
    }

    async fn probe(client: &Client, remote: IpAddr, ident: u16, settings: &PingSettings) -> Probe {
        let mut pinger = client.pinger(remote, PingIdentifier(ident)).await;
        pinger.timeout(settings.reply_timeout);
        let payload = [0u8; 56];
        let mut round_trips = Vec::new();
        for seq in 0..settings.count {
            if seq > 0 {
                tokio::time::sleep(settings.interval).await;
            }
            // An ICMP error quoting the request (host unreachable) also comes back here: only
            // an echo reply is an answer.
            if let Ok((packet, rtt)) = pinger.ping(PingSequence(seq), &payload).await
                && is_echo_reply(&packet)
            {
                round_trips.push(rtt);
            }
        }
        Probe {
            remote,
            sent: settings.count,
            round_trips,
        }
    }

    async fn check(&self, object: Object) -> Verdict {
        let local = text_attr(&object, "ip_address").and_then(|a| a.parse::<IpAddr>().ok());
        let remotes: Vec<IpAddr> = text_list(&object, "remote_endpoints")
            .into_iter()
            .filter_map(|r| r.parse().ok())
            .collect();
        if remotes.is_empty() {
            return Verdict::ok("no remote endpoints");
        }
        let mut clients: Vec<(bool, Client)> = Vec::new();
        for v6 in [false, true] {
            if !remotes.iter().any(|remote| remote.is_ipv6() == v6) {
                continue;
            }
            match self.client(local, v6) {
                Ok(client) => clients.push((v6, client)),
                Err(err) => {
                    return Verdict::unknown(format!(
                        "cannot open an ICMP socket{}: {err}",
                        local.map(|l| format!(" on {l}")).unwrap_or_default()
                    ));
                }
            }
        }
        let settings = self.settings();
        // Distinct identifiers keep the replies of concurrent probes apart.
        let first_ident = rand::random::<u16>();
        let probes = remotes.iter().zip(0u16..).filter_map(|(remote, index)| {
            let (_, client) = clients.iter().find(|(v6, _)| *v6 == remote.is_ipv6())?;
            Some(Self::probe(
                client,
                *remote,
                first_ident.wrapping_add(index),
                &settings,
            ))
        });
        let probes = futures::future::join_all(probes).await;
        let judged: Vec<(StatusLevel, String)> =
            probes.iter().map(|p| p.judge(&settings)).collect();
        roll_up(&judged)
    }
}

impl Check for TunnelCheck {
    fn name(&self) -> &'static str {
        "tunnel"
    }

    fn covers(&self) -> &'static [ObjectType] {
        &[ObjectType::Otep]
    }

    fn configure(&self, config: &HealthConfig) {
        *self.settings.lock().unwrap_or_else(PoisonError::into_inner) = config.ping();
    }

    fn run(self: Arc<Self>, object: Object) -> BoxFuture<'static, Verdict> {
        async move { self.check(object).await }.boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> PingSettings {
        PingSettings {
            count: 10,
            interval: Duration::from_millis(100),
            reply_timeout: Duration::from_secs(1),
            loss_warning: 1.0,
            loss_error: 20.0,
            rtt_warning: Duration::from_millis(300),
            rtt_error: Duration::from_secs(1),
        }
    }

    fn probe(remote: &str, answered: usize, rtt_ms: u64) -> Probe {
        Probe {
            remote: remote.parse().expect("address"),
            sent: 10,
            round_trips: vec![Duration::from_millis(rtt_ms); answered],
        }
    }

    #[test]
    fn each_tunnel_is_judged_by_loss_and_round_trip() {
        let s = settings();
        assert_eq!(
            probe("10.0.0.2", 10, 1).judge(&s),
            (StatusLevel::Ok, "10.0.0.2: ok".into())
        );
        assert_eq!(
            probe("10.0.0.2", 9, 1).judge(&s),
            (StatusLevel::Warning, "10.0.0.2: 10% loss, 1.0 ms".into())
        );
        assert_eq!(probe("10.0.0.2", 9, 1).judge(&s).0, StatusLevel::Warning);
        assert_eq!(probe("10.0.0.2", 10, 400).judge(&s).0, StatusLevel::Warning);
        assert_eq!(probe("10.0.0.2", 7, 1).judge(&s).0, StatusLevel::Error);
        assert_eq!(
            probe("10.0.0.3", 0, 0).judge(&s),
            (StatusLevel::Error, "10.0.0.3: 100% loss".into())
        );
    }

    #[test]
    fn the_otep_rolls_up_as_the_original_did() {
        let ok = (StatusLevel::Ok, "10.0.0.2: 0% loss, 0.3 ms".to_owned());
        let lost = (StatusLevel::Error, "10.0.0.3: 100% loss".to_owned());
        let slow = (
            StatusLevel::Warning,
            "10.0.0.4: 0% loss, 400.0 ms".to_owned(),
        );
        assert_eq!(
            roll_up(std::slice::from_ref(&ok)),
            Verdict::ok("1 of 1 tunnels ok: 10.0.0.2: 0% loss, 0.3 ms")
        );
        assert_eq!(
            roll_up(&[ok.clone(), lost.clone()]),
            Verdict::warning("1 of 2 tunnels ok: 10.0.0.3: 100% loss; 10.0.0.2: 0% loss, 0.3 ms")
        );
        assert_eq!(
            roll_up(&[slow, lost]).level,
            StatusLevel::Error,
            "no tunnel ok"
        );
    }
}
