//! One rtnetlink socket per namespace, subscribed to links, addresses and neighbours (bridge
//! FDB). It dumps the namespace's state, then forwards every change. On `ENOBUFS` (the kernel
//! dropped notifications because the socket's buffer was full) it dumps again, and if the
//! socket fails it opens a new one and dumps again: nothing is silently missed.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::Duration;

use calipso_proto::IpPrefix;
use futures::{StreamExt, TryStreamExt};
use netlink_packet_core::{NLM_F_REQUEST, NetlinkMessage, NetlinkPayload};
use netlink_packet_route::nsid::{NsidAttribute, NsidMessage};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::AsyncSocket;
use rtnetlink::MulticastGroup;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::facts::{LinkFacts, address_facts, fdb_facts, link_facts};
use super::netns::{Namespace, NsName, ns_label};

/// Everything the collector keeps about one namespace.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NsView {
    pub links: BTreeMap<u32, LinkFacts>,
    pub addrs: BTreeMap<u32, BTreeSet<IpPrefix>>,
    /// Remote destinations in the bridge FDB, per (vxlan) device.
    pub fdb: BTreeMap<u32, BTreeSet<IpAddr>>,
}

/// A change to one namespace's view.
#[derive(Debug)]
pub enum NsUpdate {
    /// The namespace is open and about to be dumped.
    Attach(Namespace),
    /// A complete view, replacing what was known (after start, an overrun or a reconnect).
    Full {
        name: NsName,
        view: NsView,
        handle: rtnetlink::Handle,
    },
    Link(NsName, Box<LinkFacts>),
    LinkRemoved(NsName, u32),
    Address {
        name: NsName,
        ifindex: u32,
        prefix: IpPrefix,
        present: bool,
    },
    Fdb {
        name: NsName,
        ifindex: u32,
        dst: IpAddr,
        present: bool,
    },
    /// The namespace cannot be followed any more (it was deleted).
    Ended(NsName),
}

impl NsView {
    /// Applies one change; returns whether anything changed.
    pub fn apply(&mut self, update: NsUpdate) -> bool {
        match update {
            NsUpdate::Link(_, facts) => {
                let facts = *facts;
                self.links.insert(facts.ifindex, facts.clone()).as_ref() != Some(&facts)
            }
            NsUpdate::LinkRemoved(_, ifindex) => {
                self.addrs.remove(&ifindex);
                self.fdb.remove(&ifindex);
                self.links.remove(&ifindex).is_some()
            }
            NsUpdate::Address {
                ifindex,
                prefix,
                present: true,
                ..
            } => self.addrs.entry(ifindex).or_default().insert(prefix),
            NsUpdate::Address {
                ifindex,
                prefix,
                present: false,
                ..
            } => self
                .addrs
                .get_mut(&ifindex)
                .is_some_and(|set| set.remove(&prefix)),
            NsUpdate::Fdb {
                ifindex,
                dst,
                present: true,
                ..
            } => self.fdb.entry(ifindex).or_default().insert(dst),
            NsUpdate::Fdb {
                ifindex,
                dst,
                present: false,
                ..
            } => self
                .fdb
                .get_mut(&ifindex)
                .is_some_and(|set| set.remove(&dst)),
            // Whole-namespace updates are the collector's to apply, not one view's.
            NsUpdate::Full { .. } | NsUpdate::Attach(_) | NsUpdate::Ended(_) => false,
        }
    }
}

/// Dumps links, addresses and FDB remotes.
pub async fn dump(handle: &rtnetlink::Handle) -> Result<NsView, rtnetlink::Error> {
    let mut view = NsView::default();
    let mut links = handle.link().get().execute();
    while let Some(message) = links.try_next().await? {
        if let Some(facts) = link_facts(&message) {
            view.links.insert(facts.ifindex, facts);
        }
    }
    let mut addresses = handle.address().get().execute();
    while let Some(message) = addresses.try_next().await? {
        if let Some((ifindex, prefix)) = address_facts(&message) {
            view.addrs.entry(ifindex).or_default().insert(prefix);
        }
    }
    let mut neighbours = handle
        .neighbours()
        .get()
        .set_address_family(AddressFamily::Bridge)
        .execute();
    while let Some(message) = neighbours.try_next().await? {
        if let Some((ifindex, dst)) = fdb_facts(&message) {
            view.fdb.entry(ifindex).or_default().insert(dst);
        }
    }
    Ok(view)
}

/// Reads one link again (by index), or `None` if it no longer exists.
pub async fn get_link(handle: &rtnetlink::Handle, ifindex: u32) -> Option<LinkFacts> {
    let mut links = handle.link().get().match_index(ifindex).execute();
    match links.try_next().await {
        Ok(Some(message)) => link_facts(&message),
        _ => None,
    }
}

/// What `namespace` calls `other` in `IFLA_LINK_NETNSID` (`RTM_GETNSID` by file descriptor).
pub async fn nsid_of(handle: &rtnetlink::Handle, other: &Namespace) -> Option<i32> {
    let mut request = NsidMessage::default();
    request.header.family = AddressFamily::Unspec;
    request.attributes.push(NsidAttribute::Fd(other.raw_fd()));
    let mut message = NetlinkMessage::from(RouteNetlinkMessage::GetNsId(request));
    message.header.flags = NLM_F_REQUEST;
    let mut responses = handle.clone().request(message).ok()?;
    while let Some(response) = responses.next().await {
        if let NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewNsId(reply)) = response.payload
        {
            return reply.attributes.iter().find_map(|a| match a {
                NsidAttribute::Id(id) if *id >= 0 => Some(*id),
                _ => None,
            });
        }
    }
    None
}

/// An update with the generation of the follower that produced it, so that a follower of a
/// deleted namespace cannot write into a new namespace of the same name.
pub type Tagged = (u64, NsUpdate);

/// Follows one namespace until `stop` is cancelled or the namespace disappears, sending a
/// `Full` view first and then every change. `rcvbuf` sets the socket's receive buffer (the
/// kernel caps it at `net.core.rmem_max`).
pub async fn follow(
    namespace: Namespace,
    generation: u64,
    rcvbuf: Option<u32>,
    updates: mpsc::Sender<Tagged>,
    stop: CancellationToken,
) {
    let name = namespace.name.clone();
    let runtime = tokio::runtime::Handle::current();
    let mut failures = 0u32;
    loop {
        let groups = [
            MulticastGroup::Link,
            MulticastGroup::Ipv4Ifaddr,
            MulticastGroup::Ipv6Ifaddr,
            MulticastGroup::Neigh,
        ];
        let opened = namespace.run_inside(runtime.clone(), move || {
            rtnetlink::new_multicast_connection(&groups)
        });
        let (mut connection, handle, mut messages) = match opened {
            Ok(opened) => opened,
            Err(err) => {
                tracing::warn!(netns = ns_label(&name), %err, "cannot open a netlink socket in the namespace");
                let _ = updates.send((generation, NsUpdate::Ended(name))).await;
                return;
            }
        };
        if let Some(size) = rcvbuf.and_then(|size| i32::try_from(size).ok())
            && let Err(err) = connection.socket_mut().socket_mut().set_rx_buf_sz(size)
        {
            tracing::warn!(netns = ns_label(&name), %err, "cannot set the netlink receive buffer");
        }
        let connection = tokio::spawn(connection);
        let mut needs_dump = true;
        loop {
            if needs_dump {
                // Notifications already queued describe a state the dump supersedes.
                while messages.try_recv().is_ok() {}
                match dump(&handle).await {
                    Ok(view) => {
                        let full = NsUpdate::Full {
                            name: name.clone(),
                            view,
                            handle: handle.clone(),
                        };
                        if updates.send((generation, full)).await.is_err() {
                            connection.abort();
                            return;
                        }
                        needs_dump = false;
                        failures = 0;
                    }
                    Err(err) => {
                        tracing::warn!(netns = ns_label(&name), %err, "netlink dump failed");
                        break;
                    }
                }
            }
            let message = tokio::select! {
                () = stop.cancelled() => {
                    connection.abort();
                    return;
                }
                message = messages.next() => message,
            };
            let Some((message, _)) = message else { break };
            match message.payload {
                NetlinkPayload::Overrun(_) => {
                    tracing::warn!(
                        netns = ns_label(&name),
                        "netlink notifications were lost (ENOBUFS): dumping again"
                    );
                    needs_dump = true;
                }
                NetlinkPayload::InnerMessage(inner) => {
                    if let Some(update) = to_update(&name, inner)
                        && updates.send((generation, update)).await.is_err()
                    {
                        connection.abort();
                        return;
                    }
                }
                _ => {}
            }
        }
        connection.abort();
        failures += 1;
        let delay =
            crate::backoff::delay(failures, Duration::from_millis(100), Duration::from_secs(5));
        tracing::warn!(
            netns = ns_label(&name),
            ?delay,
            "netlink socket lost: reopening"
        );
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(delay) => {}
        }
    }
}

fn to_update(name: &NsName, message: RouteNetlinkMessage) -> Option<NsUpdate> {
    let address = |msg: &netlink_packet_route::address::AddressMessage, present| {
        address_facts(msg).map(|(ifindex, prefix)| NsUpdate::Address {
            name: name.clone(),
            ifindex,
            prefix,
            present,
        })
    };
    let fdb = |msg: &netlink_packet_route::neighbour::NeighbourMessage, present| {
        fdb_facts(msg).map(|(ifindex, dst)| NsUpdate::Fdb {
            name: name.clone(),
            ifindex,
            dst,
            present,
        })
    };
    match &message {
        RouteNetlinkMessage::NewAddress(msg) => address(msg, true),
        RouteNetlinkMessage::DelAddress(msg) => address(msg, false),
        RouteNetlinkMessage::NewNeighbour(msg) => fdb(msg, true),
        RouteNetlinkMessage::DelNeighbour(msg) => fdb(msg, false),
        RouteNetlinkMessage::NewLink(link) => {
            link_facts(link).map(|facts| NsUpdate::Link(name.clone(), Box::new(facts)))
        }
        // A bridge-family delete means the port left its bridge, not that the device is gone.
        RouteNetlinkMessage::DelLink(link)
            if link.header.interface_family != AddressFamily::Bridge =>
        {
            Some(NsUpdate::LinkRemoved(name.clone(), link.header.index))
        }
        _ => None,
    }
}
