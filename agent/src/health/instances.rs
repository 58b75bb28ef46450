//! Instances: the domain is running. libvirt's state comes with the model (the libvirt
//! collector reads run-state documents and persistent definitions), so a VM that stopped or
//! crashed is still an instance, and this check turns it to error (the original's cvim
//! `virsh domstatus` check, without a shell).

use std::sync::Arc;

use calipso_proto::{Object, ObjectType};
use futures::future::BoxFuture;

use super::{Check, Verdict, text_attr};

#[derive(Debug, Default)]
pub struct InstanceCheck;

impl InstanceCheck {
    fn check(object: &Object) -> Verdict {
        match text_attr(object, "power_state") {
            Some(state @ ("running" | "blocked")) => Verdict::ok(state),
            Some(state @ ("paused" | "pmsuspended")) => {
                Verdict::warning(format!("{state}: the VM does not run"))
            }
            Some(state) => Verdict::error(format!("not running ({state})")),
            None => Verdict::unknown("libvirt reports no state"),
        }
    }
}

impl Check for InstanceCheck {
    fn name(&self) -> &'static str {
        "instance"
    }

    fn covers(&self) -> &'static [ObjectType] {
        &[ObjectType::Instance]
    }

    fn run(self: Arc<Self>, object: Object) -> BoxFuture<'static, Verdict> {
        Box::pin(std::future::ready(Self::check(&object)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use calipso_proto::ObjectId;

    #[test]
    fn only_a_running_domain_is_ok() {
        let instance = |state: &str| {
            Object::new(
                ObjectId::from_raw("instance:6f1c"),
                ObjectType::Instance,
                "vm-1",
                "lab",
            )
            .with_extra("power_state", state)
        };
        assert_eq!(
            InstanceCheck::check(&instance("running")),
            Verdict::ok("running")
        );
        assert_eq!(
            InstanceCheck::check(&instance("paused")),
            Verdict::warning("paused: the VM does not run")
        );
        assert_eq!(
            InstanceCheck::check(&instance("shut off")),
            Verdict::error("not running (shut off)")
        );
        assert_eq!(
            InstanceCheck::check(&instance("crashed")),
            Verdict::error("not running (crashed)")
        );
    }
}
