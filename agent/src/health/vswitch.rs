//! Open vSwitch (`vedge`): ovsdb-server answers, ovs-vswitchd answers on its control socket,
//! vswitchd has applied the configuration written to the database (`cur_cfg` reaching
//! `next_cfg`), and no interface reports an error. The original looked for two process names
//! in `ps` output, with a filter that always matched.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use calipso_proto::{Object, ObjectType};
use futures::FutureExt;
use futures::future::BoxFuture;
use serde_json::{Value, json};

use super::{Check, Verdict, read_trimmed};
use crate::ovsdb::datum::{atom_text, optional_atom};
use crate::ovsdb::{Client, Endpoint};

/// A database answer is small: the two counters and every interface's name and error.
const MAX_ANSWER_BYTES: usize = 64 * 1024 * 1024;
/// How long vswitchd may take to apply a configuration before it counts as stuck.
const APPLY_GRACE: Duration = Duration::from_secs(1);

#[derive(Debug)]
pub struct VswitchCheck {
    database: Endpoint,
    /// Where ovs-vswitchd's control socket is: given, or found in the database socket's
    /// directory (`ovs-vswitchd.ctl`, or `ovs-vswitchd.<pid>.ctl` from its pid file).
    vswitchd_ctl: Option<PathBuf>,
    timeout: Duration,
}

/// What the database says.
#[derive(Debug, Clone, PartialEq, Eq)]
struct DatabaseState {
    cur_cfg: i64,
    next_cfg: i64,
    interfaces: usize,
    /// (interface, error) for every interface whose `error` column is set.
    errors: Vec<(String, String)>,
}

impl VswitchCheck {
    pub fn new(database: Endpoint, vswitchd_ctl: Option<PathBuf>, timeout: Duration) -> Self {
        VswitchCheck {
            database,
            vswitchd_ctl,
            timeout,
        }
    }

    async fn read_database(&self) -> Result<DatabaseState, String> {
        let (client, _events) = Client::connect(&self.database, MAX_ANSWER_BYTES, self.timeout)
            .await
            .map_err(|err| err.to_string())?;
        let answer = client
            .call(
                "transact",
                json!([
                    "Open_vSwitch",
                    {"op": "select", "table": "Open_vSwitch", "where": [],
                     "columns": ["cur_cfg", "next_cfg"]},
                    {"op": "select", "table": "Interface", "where": [],
                     "columns": ["name", "error"]}
                ]),
            )
            .await
            .map_err(|err| err.to_string())?;
        parse_state(&answer).ok_or_else(|| format!("unexpected answer to a select: {answer}"))
    }

    /// The control socket, if vswitchd left one where it is expected.
    fn control_socket(&self) -> Option<PathBuf> {
        if let Some(ctl) = &self.vswitchd_ctl {
            return Some(ctl.clone());
        }
        let Endpoint::Unix(socket) = &self.database else {
            return None;
        };
        let dir = socket.parent()?;
        let fixed = dir.join("ovs-vswitchd.ctl");
        if fixed.exists() {
            return Some(fixed);
        }
        let pid = read_trimmed(&dir.join("ovs-vswitchd.pid"))?;
        Some(dir.join(format!("ovs-vswitchd.{pid}.ctl")))
    }

    async fn vswitchd_version(&self, ctl: &Path) -> Result<String, String> {
        let endpoint = Endpoint::Unix(ctl.to_owned());
        let (client, _events) = Client::connect(&endpoint, MAX_ANSWER_BYTES, self.timeout)
            .await
            .map_err(|err| err.to_string())?;
        let version = client
            .call("version", json!([]))
            .await
            .map_err(|err| err.to_string())?;
        Ok(version
            .as_str()
            .unwrap_or_default()
            .lines()
            .next()
            .unwrap_or_default()
            .to_owned())
    }

    async fn check(&self) -> Verdict {
        let mut state = match self.read_database().await {
            Ok(state) => state,
            Err(err) => {
                return Verdict::error(format!(
                    "ovsdb-server does not answer on {}: {err}",
                    self.database
                ));
            }
        };
        let version = match self.control_socket() {
            Some(ctl) => match self.vswitchd_version(&ctl).await {
                Ok(version) => version,
                Err(err) => {
                    return Verdict::error(format!(
                        "ovs-vswitchd does not answer on {}: {err}",
                        ctl.display()
                    ));
                }
            },
            None if matches!(self.database, Endpoint::Unix(_)) => {
                return Verdict::error(
                    "ovs-vswitchd is not running: no control socket or pid file beside the database socket",
                );
            }
            // A remote database: vswitchd's socket is on another machine.
            None => String::new(),
        };
        if state.cur_cfg < state.next_cfg {
            tokio::time::sleep(APPLY_GRACE).await;
            if let Ok(again) = self.read_database().await {
                state = again;
            }
        }
        let answered = if version.is_empty() {
            "ovsdb-server answers".to_owned()
        } else {
            format!("ovsdb-server and {version} answer")
        };
        if state.cur_cfg < state.next_cfg {
            return Verdict::error(format!(
                "{answered}, but ovs-vswitchd has not applied configuration {} (it is at {})",
                state.next_cfg, state.cur_cfg
            ));
        }
        if !state.errors.is_empty() {
            let listed: Vec<String> = state
                .errors
                .iter()
                .take(5)
                .map(|(name, error)| format!("{name}: {error}"))
                .collect();
            return Verdict::warning(format!(
                "{} of {} interfaces in error: {}",
                state.errors.len(),
                state.interfaces,
                listed.join("; ")
            ));
        }
        Verdict::ok(format!(
            "{answered}; configuration {} applied; {} interfaces, none in error",
            state.cur_cfg, state.interfaces
        ))
    }
}

/// Reads the two selects' rows out of a `transact` result.
fn parse_state(answer: &Value) -> Option<DatabaseState> {
    let rows = |index: usize| answer.get(index)?.get("rows")?.as_array();
    let root = rows(0)?.first()?;
    let counter = |column: &str| root.get(column).and_then(Value::as_i64);
    let interfaces = rows(1)?;
    let mut errors: Vec<(String, String)> = interfaces
        .iter()
        .filter_map(|row| {
            let name = atom_text(row.get("name")?)?;
            let error = optional_atom(row.get("error")?).and_then(atom_text)?;
            Some((name, error))
        })
        .collect();
    errors.sort();
    Some(DatabaseState {
        cur_cfg: counter("cur_cfg")?,
        next_cfg: counter("next_cfg")?,
        interfaces: interfaces.len(),
        errors,
    })
}

impl Check for VswitchCheck {
    fn name(&self) -> &'static str {
        "vswitch"
    }

    fn covers(&self) -> &'static [ObjectType] {
        &[ObjectType::Vedge]
    }

    fn run(self: Arc<Self>, _object: Object) -> BoxFuture<'static, Verdict> {
        async move { self.check().await }.boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_select_answer_names_the_interfaces_in_error() {
        let answer = json!([
            {"rows": [{"cur_cfg": 7, "next_cfg": 8}]},
            {"rows": [
                {"name": "br-int", "error": ["set", []]},
                {"name": "vxlan-0a000002", "error": "could not open network device vxlan-0a000002 (No such device)"},
                {"name": "tap1", "error": ["set", ["no such device"]]}
            ]}
        ]);
        assert_eq!(
            parse_state(&answer),
            Some(DatabaseState {
                cur_cfg: 7,
                next_cfg: 8,
                interfaces: 3,
                errors: vec![
                    ("tap1".into(), "no such device".into()),
                    (
                        "vxlan-0a000002".into(),
                        "could not open network device vxlan-0a000002 (No such device)".into()
                    ),
                ],
            })
        );
        assert_eq!(parse_state(&json!({"error": "unknown database"})), None);
    }
}
