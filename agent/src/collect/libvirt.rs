//! Instances from libvirt's domain XML: what the original got from `virsh dumpxml`. The agent
//! reads the files libvirt keeps for running domains (`/run/libvirt/qemu/<name>.xml`, a
//! `<domstatus>` wrapping the `<domain>`; plain `<domain>` documents are read too) and its
//! persistent definitions (`/etc/libvirt/qemu/<name>.xml`), and follows both directories with
//! inotify. A domain that is defined but not running stays an instance, with its power state
//! `shut off`: a VM that stops or crashes shows as down instead of vanishing.
//!
//! Each domain becomes an `instance` whose id is its UUID (Nova's instance id), with Nova's
//! metadata when present (display name, project, user, flavor) and its interfaces: target
//! device (the tap, hence the vNIC's id), MAC, source bridge or network, and the Neutron port
//! id for Open vSwitch virtual ports.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use calipso_proto::{AttrValue, Object, ObjectId, ObjectType};
use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use inotify::{Inotify, WatchMask};
use quick_xml::events::{BytesStart, Event};
use tokio_util::sync::CancellationToken;

use super::{Collector, CollectorError, Scope};
use crate::outbox::Outbox;

const NAME: &str = "libvirt";
/// Waiting this long after a change lets libvirt finish writing a domain's files.
const SETTLE: Duration = Duration::from_millis(10);

/// A domain XML document that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    #[error("malformed XML: {0}")]
    Xml(String),
    #[error("no <domain> with a <uuid> and a <name>")]
    Incomplete,
}

/// One interface of a domain.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct DomainInterface {
    pub kind: Option<String>,
    pub mac: Option<String>,
    pub source_bridge: Option<String>,
    pub source_network: Option<String>,
    pub source_dev: Option<String>,
    pub target_dev: Option<String>,
    pub model: Option<String>,
    pub virtualport: Option<String>,
    /// OVS virtual ports carry the Neutron port id.
    pub interface_id: Option<String>,
}

/// What the agent keeps of a domain.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Domain {
    pub name: String,
    pub uuid: String,
    pub display_name: Option<String>,
    pub flavor: Option<String>,
    pub project_id: Option<String>,
    pub project_name: Option<String>,
    pub user_id: Option<String>,
    pub user_name: Option<String>,
    pub nova_version: Option<String>,
    pub interfaces: Vec<DomainInterface>,
    /// libvirt's state of a running domain (`<domstatus state=…>`: running, paused, …); `None`
    /// in a plain `<domain>` document.
    pub state: Option<String>,
}

/// The power state of a domain that is defined but has no run-state file.
pub const SHUT_OFF: &str = "shut off";

fn attr(element: &BytesStart<'_>, key: &[u8]) -> Option<String> {
    element
        .attributes()
        .filter_map(Result::ok)
        .find(|a| a.key.local_name().as_ref() == key)
        .and_then(|a| a.unescape_value().ok().map(|v| v.into_owned()))
}

/// Parses a domain (or domstatus) document.
pub fn parse_domain(xml: &str) -> Result<Domain, DomainError> {
    let mut reader = quick_xml::Reader::from_str(xml);
    reader.config_mut().trim_text(true);
    let mut domain = Domain::default();
    let mut path: Vec<String> = Vec::new();
    let mut interface: Option<DomainInterface> = None;
    loop {
        let event = reader
            .read_event()
            .map_err(|e| DomainError::Xml(e.to_string()))?;
        let (element, empty) = match &event {
            Event::Start(e) => (Some(e), false),
            Event::Empty(e) => (Some(e), true),
            _ => (None, false),
        };
        if let Some(element) = element {
            let name = String::from_utf8_lossy(element.local_name().as_ref()).into_owned();
            let parent = path.last().map(String::as_str);
            let in_domain_devices = path.ends_with(&["domain".into(), "devices".into()]);
            match (parent, name.as_str()) {
                (_, "interface") if in_domain_devices => {
                    interface = Some(DomainInterface {
                        kind: attr(element, b"type"),
                        ..DomainInterface::default()
                    });
                }
                (Some("interface"), field) => {
                    if let Some(iface) = interface.as_mut() {
                        match field {
                            "mac" => iface.mac = attr(element, b"address"),
                            "source" => {
                                iface.source_bridge = attr(element, b"bridge");
                                iface.source_network = attr(element, b"network");
                                iface.source_dev = attr(element, b"dev");
                            }
                            "target" => iface.target_dev = attr(element, b"dev"),
                            "model" => iface.model = attr(element, b"type"),
                            "virtualport" => iface.virtualport = attr(element, b"type"),
                            _ => {}
                        }
                    }
                }
                (Some("virtualport"), "parameters") => {
                    if let Some(iface) = interface.as_mut() {
                        iface.interface_id = attr(element, b"interfaceid");
                    }
                }
                (Some("instance"), "flavor") => domain.flavor = attr(element, b"name"),
                (Some("instance"), "package") => domain.nova_version = attr(element, b"version"),
                (Some("owner"), "project") => domain.project_id = attr(element, b"uuid"),
                (Some("owner"), "user") => domain.user_id = attr(element, b"uuid"),
                (None, "domstatus") => domain.state = attr(element, b"state"),
                _ => {}
            }
            if empty {
                if name == "interface" {
                    domain.interfaces.extend(interface.take());
                }
            } else {
                path.push(name);
            }
            continue;
        }
        match event {
            Event::Text(text) => {
                let text = text
                    .unescape()
                    .map_err(|e| DomainError::Xml(e.to_string()))?
                    .into_owned();
                let at = |p: &[&str]| {
                    path.len() >= p.len()
                        && path[path.len() - p.len()..]
                            .iter()
                            .map(String::as_str)
                            .eq(p.iter().copied())
                };
                if at(&["domain", "name"]) {
                    domain.name = text;
                } else if at(&["domain", "uuid"]) {
                    domain.uuid = text;
                } else if at(&["metadata", "instance", "name"]) {
                    domain.display_name = Some(text);
                } else if at(&["owner", "project"]) {
                    domain.project_name = Some(text);
                } else if at(&["owner", "user"]) {
                    domain.user_name = Some(text);
                }
            }
            Event::End(_) if path.pop().as_deref() == Some("interface") => {
                domain.interfaces.extend(interface.take());
            }
            Event::Eof => break,
            _ => {}
        }
    }
    if domain.uuid.is_empty() || domain.name.is_empty() {
        return Err(DomainError::Incomplete);
    }
    Ok(domain)
}

impl Domain {
    /// The instance object, with its interfaces naming the vNICs they plug into and its power
    /// state (`running` for a run-state document without one).
    pub fn to_object(&self, scope: &Scope) -> Object {
        let power_state = self.state.as_deref().unwrap_or("running");
        let name = self
            .display_name
            .clone()
            .unwrap_or_else(|| self.name.clone());
        let mut object = Object::new(
            ObjectId::global(ObjectType::Instance, &self.uuid),
            ObjectType::Instance,
            name,
            scope.environment.as_str(),
        )
        .with_host(scope.host.as_str())
        .with_parent(ObjectId::host(&scope.host), ObjectType::Host)
        .with_extra("uuid", self.uuid.to_ascii_lowercase())
        .with_extra("local_name", self.name.as_str())
        .with_extra("power_state", power_state);
        let optional = [
            ("flavor", &self.flavor),
            ("project_id", &self.project_id),
            ("project", &self.project_name),
            ("user_id", &self.user_id),
            ("user", &self.user_name),
            ("nova_version", &self.nova_version),
        ];
        for (key, value) in optional {
            if let Some(value) = value {
                object = object.with_extra(key, value.as_str());
            }
        }
        let interfaces = self
            .interfaces
            .iter()
            .map(|iface| {
                let mut map = BTreeMap::new();
                let fields = [
                    ("type", &iface.kind),
                    ("mac_address", &iface.mac),
                    ("source_bridge", &iface.source_bridge),
                    ("source_network", &iface.source_network),
                    ("source_dev", &iface.source_dev),
                    ("target_dev", &iface.target_dev),
                    ("model", &iface.model),
                    ("virtualport", &iface.virtualport),
                    ("iface_id", &iface.interface_id),
                ];
                for (key, value) in fields {
                    if let Some(value) = value {
                        map.insert(key.to_owned(), AttrValue::from(value.as_str()));
                    }
                }
                if let Some(dev) = &iface.target_dev {
                    let vnic = ObjectId::host_local(ObjectType::Vnic, &scope.host, dev);
                    map.insert("vnic".into(), AttrValue::from(vnic.as_str()));
                }
                AttrValue::Map(map.into())
            })
            .collect::<Vec<_>>();
        object.with_extra("interfaces", AttrValue::List(interfaces))
    }
}

/// The directories being watched, and their events.
type Watched = (Vec<PathBuf>, inotify::EventStream<Vec<u8>>);

/// Follows libvirt's run-state and definition directories.
#[derive(Debug)]
pub struct Libvirt {
    scope: Scope,
    dir: PathBuf,
    /// Persistent domain definitions (`/etc/libvirt/qemu`).
    config_dir: PathBuf,
}

impl Libvirt {
    pub fn new(scope: Scope, dir: PathBuf, config_dir: PathBuf) -> Self {
        Libvirt {
            scope,
            dir,
            config_dir,
        }
    }

    /// Every running domain, and every defined one that is not running (shut off); unreadable
    /// documents are logged and skipped.
    fn read_all(&self) -> Vec<Object> {
        let mut domains = read_dir_domains(&self.dir);
        let running: std::collections::HashSet<String> = domains
            .iter()
            .map(|d| d.uuid.to_ascii_lowercase())
            .collect();
        domains.extend(
            read_dir_domains(&self.config_dir)
                .into_iter()
                .filter(|d| !running.contains(&d.uuid.to_ascii_lowercase()))
                .map(|d| Domain {
                    state: Some(SHUT_OFF.into()),
                    ..d
                }),
        );
        domains.sort_by(|a, b| a.uuid.cmp(&b.uuid));
        domains.iter().map(|d| d.to_object(&self.scope)).collect()
    }

    /// The directories that exist now, watched with one inotify instance.
    fn watch(&self) -> std::io::Result<Option<Watched>> {
        let present: Vec<PathBuf> = [&self.dir, &self.config_dir]
            .into_iter()
            .filter(|dir| dir.is_dir())
            .cloned()
            .collect();
        if present.is_empty() {
            return Ok(None);
        }
        let inotify = Inotify::init()?;
        let mask = WatchMask::CLOSE_WRITE
            | WatchMask::MOVED_TO
            | WatchMask::MOVED_FROM
            | WatchMask::DELETE
            | WatchMask::CREATE
            | WatchMask::DELETE_SELF;
        for dir in &present {
            inotify.watches().add(dir, mask)?;
        }
        Ok(Some((present, inotify.into_event_stream(vec![0u8; 4096])?)))
    }
}

fn read_dir_domains(dir: &Path) -> Vec<Domain> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut domains = Vec::new();
    for path in entries.filter_map(|e| e.ok()).map(|e| e.path()) {
        if path.extension().and_then(|e| e.to_str()) != Some("xml") {
            continue;
        }
        match std::fs::read_to_string(&path)
            .map_err(|e| e.to_string())
            .and_then(|xml| parse_domain(&xml).map_err(|e| e.to_string()))
        {
            Ok(domain) => domains.push(domain),
            Err(err) => tracing::warn!(file = %path.display(), %err, "domain XML skipped"),
        }
    }
    domains.sort_by(|a, b| a.uuid.cmp(&b.uuid));
    domains
}

impl Collector for Libvirt {
    fn name(&self) -> &'static str {
        NAME
    }

    fn scan(&mut self) -> BoxFuture<'_, Result<Vec<Object>, CollectorError>> {
        async move { Ok(self.read_all()) }.boxed()
    }

    fn follow(
        self: Box<Self>,
        outbox: Outbox,
        shutdown: CancellationToken,
    ) -> BoxFuture<'static, Result<(), CollectorError>> {
        async move {
            let failed = |e: &dyn std::fmt::Display| CollectorError {
                collector: NAME,
                message: e.to_string(),
            };
            loop {
                // Watch first, then read, so that nothing written in between is missed.
                let watched = self.watch().map_err(|e| failed(&e))?;
                outbox
                    .replace_all(NAME, self.read_all())
                    .map_err(|e| failed(&e))?;
                let Some((present, mut stream)) = watched else {
                    // No libvirt on this host (yet): look again later.
                    tokio::select! {
                        () = shutdown.cancelled() => return Ok(()),
                        () = tokio::time::sleep(Duration::from_secs(5)) => continue,
                    }
                };
                let mut recheck = tokio::time::interval(Duration::from_secs(5));
                loop {
                    tokio::select! {
                        () = shutdown.cancelled() => return Ok(()),
                        _ = recheck.tick() => {
                            // A directory libvirt created since (its first domain) is watched too.
                            let now = [&self.dir, &self.config_dir].into_iter().filter(|d| d.is_dir()).count();
                            if now != present.len() {
                                break;
                            }
                        }
                        event = stream.next() => {
                            let Some(Ok(event)) = event else { break };
                            if event.mask.contains(inotify::EventMask::DELETE_SELF) {
                                break;
                            }
                            tokio::time::sleep(SETTLE).await;
                            outbox.replace_all(NAME, self.read_all()).map_err(|e| failed(&e))?;
                        }
                    }
                }
            }
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIXTURE: &str = include_str!("../../../../shared/fixtures/libvirt/instance-00000026.xml");

    #[test]
    fn reads_the_nova_domain_fixture() {
        let domain = parse_domain(FIXTURE).expect("the fixture parses");
        assert_eq!(domain.name, "instance-00000026");
        assert_eq!(domain.uuid, "bf0cb914-b316-486c-a4ce-f22deb453c52");
        assert_eq!(domain.display_name.as_deref(), Some("test"));
        assert_eq!(domain.flavor.as_deref(), Some("m1.micro"));
        assert_eq!(
            domain.project_id.as_deref(),
            Some("75c0eb79ff4a42b0ae4973c8375ddf40")
        );
        assert_eq!(domain.project_name.as_deref(), Some("OSDNA-project"));
        assert_eq!(domain.user_name.as_deref(), Some("admin"));
        assert_eq!(domain.interfaces.len(), 1);
        let iface = &domain.interfaces[0];
        assert_eq!(iface.kind.as_deref(), Some("bridge"));
        assert_eq!(iface.mac.as_deref(), Some("fa:16:3e:e8:7f:04"));
        assert_eq!(iface.source_bridge.as_deref(), Some("qbr1f72bd15-8a"));
        assert_eq!(iface.target_dev.as_deref(), Some("tap1f72bd15-8a"));
        assert_eq!(iface.model.as_deref(), Some("virtio"));

        let object = domain.to_object(&Scope {
            host: "node-2".into(),
            environment: "lab".into(),
        });
        assert_eq!(
            object.id.as_str(),
            "instance:bf0cb914-b316-486c-a4ce-f22deb453c52"
        );
        assert_eq!(object.name, "test");
        let Some(AttrValue::List(ifaces)) = object.attributes.extra.get("interfaces") else {
            panic!("interfaces")
        };
        let Some(AttrValue::Map(first)) = ifaces.first() else {
            panic!("an interface map")
        };
        assert_eq!(
            first.get("vnic"),
            Some(&AttrValue::Str("vnic:node-2:tap1f72bd15-8a".into()))
        );
    }

    #[test]
    fn domstatus_and_ovs_virtualport() {
        let xml = r#"<domstatus state='running'><domain type='kvm' id='1'><name>instance-00000001</name>
            <uuid>11111111-2222-3333-4444-555555555555</uuid><devices>
            <interface type='bridge'><mac address='52:54:00:12:34:56'/><source bridge='br-int'/>
            <virtualport type='openvswitch'><parameters interfaceid='port-uuid-1'/></virtualport>
            <target dev='vm1-tap'/></interface></devices></domain></domstatus>"#;
        let domain = parse_domain(xml).expect("parses");
        assert_eq!(domain.display_name, None);
        let iface = &domain.interfaces[0];
        assert_eq!(iface.virtualport.as_deref(), Some("openvswitch"));
        assert_eq!(iface.interface_id.as_deref(), Some("port-uuid-1"));
        assert_eq!(iface.target_dev.as_deref(), Some("vm1-tap"));
    }

    #[test]
    fn bad_documents_are_errors() {
        assert_eq!(
            parse_domain("<domain><name>x</name></domain>"),
            Err(DomainError::Incomplete)
        );
        assert!(matches!(
            parse_domain("<domain><name>x</nam></domain>"),
            Err(DomainError::Xml(_))
        ));
        assert_eq!(parse_domain(""), Err(DomainError::Incomplete));
    }
}
