//! The host object itself: identity, OS, kernel, CPU and memory (what the original read with
//! `cat /etc/os-release` and `arch` over SSH). These facts have no change events, so they are
//! re-read on a long interval; volatile numbers (memory in use, load) are left out on purpose,
//! or every refresh would be a change.

use std::time::Duration;

use calipso_proto::{AttrValue, Object, ObjectId, ObjectType};
use futures::FutureExt;
use futures::future::BoxFuture;
use sysinfo::System;
use tokio_util::sync::CancellationToken;

use super::{Collector, CollectorError, Scope};
use crate::outbox::Outbox;

const NAME: &str = "host_facts";

/// Reads the host's own facts.
#[derive(Debug)]
pub struct HostFacts {
    scope: Scope,
    refresh: Duration,
}

impl HostFacts {
    pub fn new(scope: Scope, refresh: Duration) -> Self {
        HostFacts { scope, refresh }
    }

    fn read(&self) -> Object {
        let host = &self.scope.host;
        let mut object = Object::new(
            ObjectId::host(host),
            ObjectType::Host,
            host.as_str(),
            self.scope.environment.as_str(),
        )
        .with_host(host.as_str())
        .with_extra("agent_version", env!("CARGO_PKG_VERSION"))
        .with_extra("architecture", System::cpu_arch())
        .with_extra("os_id", System::distribution_id())
        .with_extra("os_id_like", System::distribution_id_like());
        let optional = [
            ("os_name", System::name().ok()),
            ("os_version", System::os_version().ok()),
            ("os_pretty_name", System::long_os_version().ok()),
            ("kernel_version", System::kernel_version().ok()),
        ];
        for (key, value) in optional {
            if let Some(value) = value {
                object = object.with_extra(key, value);
            }
        }
        if let Ok(mut system) = System::new() {
            system.refresh_memory();
            let total = i64::try_from(system.total_memory()).unwrap_or(i64::MAX);
            object = object.with_extra("memory_bytes", AttrValue::Int(total));
        }
        if let Ok(cpus) = std::thread::available_parallelism() {
            object = object.with_extra(
                "cpu_count",
                AttrValue::Int(i64::try_from(cpus.get()).unwrap_or(i64::MAX)),
            );
        }
        if let Ok(boot) = System::boot_time() {
            object = object.with_extra(
                "boot_time",
                AttrValue::Int(i64::try_from(boot).unwrap_or(i64::MAX)),
            );
        }
        object
    }
}

impl Collector for HostFacts {
    fn name(&self) -> &'static str {
        NAME
    }

    fn scan(&mut self) -> BoxFuture<'_, Result<Vec<Object>, CollectorError>> {
        async move { Ok(vec![self.read()]) }.boxed()
    }

    fn follow(
        self: Box<Self>,
        outbox: Outbox,
        shutdown: CancellationToken,
    ) -> BoxFuture<'static, Result<(), CollectorError>> {
        async move {
            loop {
                outbox
                    .replace_all(NAME, vec![self.read()])
                    .map_err(|e| CollectorError {
                        collector: NAME,
                        message: e.to_string(),
                    })?;
                tokio::select! {
                    () = shutdown.cancelled() => return Ok(()),
                    () = tokio::time::sleep(self.refresh) => {}
                }
            }
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_host_object_is_stable_between_reads() {
        let mut facts = HostFacts::new(
            Scope {
                host: "h1".into(),
                environment: "lab".into(),
            },
            Duration::from_secs(60),
        );
        let first = facts.scan().await.expect("scan");
        let second = facts.scan().await.expect("scan");
        assert_eq!(
            first, second,
            "host facts must not change between two reads of an idle host"
        );
        let host = &first[0];
        assert_eq!(host.id.as_str(), "host:h1");
        assert_eq!(host.object_type, ObjectType::Host);
        assert!(
            host.attributes
                .extra
                .get("memory_bytes")
                .and_then(AttrValue::as_i64)
                .is_some_and(|m| m > 0)
        );
        assert!(host.attributes.extra.contains_key("kernel_version"));
    }
}
