//! Checks from plugins: any Nagios-compatible program (exit status 0 ok, 1 warning, 2 critical,
//! 3 unknown; the first line of output is the text, performance data after `|`), attached to
//! objects by type and attributes, its arguments filled from the object's attributes
//! (`{name}`, `{ip_address}`, `{mac_address}`, `{local_name}` …). Sensu 1.x client check
//! definitions (`{"checks": {NAME: {"command": …, "interval": …}}}`) load as plugins of the
//! host object, so an existing Sensu setup carries over.
//!
//! A plugin that is missing, not executable, hangs (the monitor's time limit kills it), crashes,
//! or prints more than [`MAX_OUTPUT`] bytes is `unknown`, with the reason.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use calipso_proto::{AttrValue, Object, ObjectType};
use futures::FutureExt;
use futures::future::BoxFuture;
use serde::Deserialize;
use tokio::io::AsyncReadExt;

use super::{Check, Verdict};

/// What a plugin may print: a status line and some performance data, not a log.
pub const MAX_OUTPUT: u64 = 64 * 1024;

/// A plugin as `agent.toml` declares it (`[[health.plugins]]`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginConfig {
    pub name: String,
    /// The program (a path, or a name looked up in `PATH`).
    pub command: String,
    /// Arguments; `{attribute}` is replaced by the object's attribute.
    #[serde(default)]
    pub args: Vec<String>,
    /// The object types it checks (`host`, `host_pnic`, `otep` …).
    #[serde(default = "host_only")]
    pub types: Vec<String>,
    /// Only objects whose attributes have these values.
    #[serde(default)]
    pub select: BTreeMap<String, String>,
    /// How often it runs (default: the object type's interval).
    #[serde(default, with = "humantime_serde")]
    pub interval: Option<Duration>,
}

fn host_only() -> Vec<String> {
    vec!["host".into()]
}

/// Why plugin definitions could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    #[error("{path}: {message}")]
    Sensu { path: PathBuf, message: String },
    #[error("plugin `{plugin}`: `{object_type}` is not an object type")]
    ObjectType { plugin: String, object_type: String },
}

/// A Sensu 1.x check definition (the fields that matter here).
#[derive(Debug, Deserialize)]
struct SensuCheck {
    command: String,
    #[serde(default)]
    interval: Option<u64>,
}

#[derive(Debug, Deserialize)]
struct SensuFile {
    #[serde(default)]
    checks: BTreeMap<String, SensuCheck>,
}

/// The plugins of a Sensu client configuration file: each check's command runs through
/// `/bin/sh -c`, as Sensu runs it, on the host object.
pub fn load_sensu(path: &Path) -> Result<Vec<PluginConfig>, PluginError> {
    let fail = |message: String| PluginError::Sensu {
        path: path.to_owned(),
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|err| fail(err.to_string()))?;
    let file: SensuFile = serde_json::from_str(&text)
        .map_err(|err| fail(format!("not a Sensu checks file: {err}")))?;
    Ok(file
        .checks
        .into_iter()
        .map(|(name, check)| PluginConfig {
            name,
            command: "/bin/sh".into(),
            args: vec!["-c".into(), check.command],
            types: host_only(),
            select: BTreeMap::new(),
            interval: check.interval.filter(|s| *s > 0).map(Duration::from_secs),
        })
        .collect())
}

#[derive(Debug)]
pub struct PluginCheck {
    config: PluginConfig,
    types: Vec<ObjectType>,
}

impl PluginCheck {
    pub fn new(config: PluginConfig) -> Result<Self, PluginError> {
        let types = config
            .types
            .iter()
            .map(|name| {
                name.parse::<ObjectType>()
                    .map_err(|_| PluginError::ObjectType {
                        plugin: config.name.clone(),
                        object_type: name.clone(),
                    })
            })
            .collect::<Result<_, _>>()?;
        Ok(PluginCheck { config, types })
    }

    async fn execute(&self, object: &Object) -> Verdict {
        let args = match self
            .config
            .args
            .iter()
            .map(|arg| fill(arg, object))
            .collect::<Result<Vec<_>, _>>()
        {
            Ok(args) => args,
            Err(missing) => {
                return Verdict::unknown(format!(
                    "an argument needs `{missing}`, which {} {} does not have",
                    object.object_type, object.name
                ));
            }
        };
        let program = &self.config.command;
        let mut child = match tokio::process::Command::new(program)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            // The monitor's time limit drops this future: the plugin goes with it.
            .kill_on_drop(true)
            .spawn()
        {
            Ok(child) => child,
            Err(err) => return Verdict::unknown(format!("cannot run {program}: {err}")),
        };
        let mut output = Vec::new();
        if let Some(stdout) = child.stdout.take() {
            let read = stdout.take(MAX_OUTPUT + 1).read_to_end(&mut output).await;
            if let Err(err) = read {
                return Verdict::unknown(format!("cannot read what {program} printed: {err}"));
            }
        }
        if output.len() as u64 > MAX_OUTPUT {
            let _ = child.kill().await;
            return Verdict::unknown(format!(
                "{program} printed more than {MAX_OUTPUT} bytes: not a plugin's output"
            ));
        }
        let status = match child.wait().await {
            Ok(status) => status,
            Err(err) => return Verdict::unknown(format!("{program}: {err}")),
        };
        let (text, perfdata) = parse_output(&output);
        let code = match status.code() {
            Some(code) => code,
            None => {
                use std::os::unix::process::ExitStatusExt;
                let signal = status.signal().unwrap_or_default();
                return Verdict::unknown(format!("{program} was killed by signal {signal}"));
            }
        };
        let text = if text.is_empty() {
            format!("{program} exited {code} and printed nothing")
        } else {
            text
        };
        let mut verdict = match code {
            0 => Verdict::ok(text),
            1 => Verdict::warning(text),
            2 => Verdict::error(text),
            3 => Verdict::unknown(text),
            other => Verdict::unknown(format!("{text} (exit status {other}, not a plugin's)")),
        };
        verdict.perfdata = perfdata;
        verdict
    }
}

/// The status line and the performance data of a plugin's output: the first line, split at
/// `|`. Bytes that are not UTF-8 are replaced, control characters dropped.
fn parse_output(output: &[u8]) -> (String, String) {
    let text = String::from_utf8_lossy(output);
    let first = text.lines().next().unwrap_or_default();
    let clean = |part: &str| -> String {
        part.chars()
            .filter(|c| !c.is_control())
            .collect::<String>()
            .trim()
            .to_owned()
    };
    match first.split_once('|') {
        Some((status, perfdata)) => (clean(status), clean(perfdata)),
        None => (clean(first), String::new()),
    }
}

/// `template` with every `{attribute}` replaced by the object's; `Err(attribute)` when the
/// object has no such attribute.
fn fill(template: &str, object: &Object) -> Result<String, String> {
    let mut filled = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        let Some(close) = rest[open..].find('}') else {
            break;
        };
        filled.push_str(&rest[..open]);
        let key = &rest[open + 1..open + close];
        filled.push_str(&attribute(object, key).ok_or_else(|| key.to_owned())?);
        rest = &rest[open + close + 1..];
    }
    filled.push_str(rest);
    Ok(filled)
}

/// An object's attribute as text: its identity, typed attributes, or an `extra` value.
fn attribute(object: &Object, key: &str) -> Option<String> {
    let attributes = &object.attributes;
    match key {
        "id" => Some(object.id.to_string()),
        "name" => Some(object.name.to_string()),
        "type" => Some(object.object_type.to_string()),
        "host" => object.host.as_deref().map(str::to_owned),
        "mac_address" => attributes.mac_address.map(|mac| mac.to_string()),
        "mtu" => attributes.mtu.map(|mtu| mtu.to_string()),
        "address" => attributes
            .addresses
            .first()
            .map(|prefix| prefix.addr.to_string()),
        _ => match attributes.extra.get(key)? {
            AttrValue::Str(text) => Some(text.to_string()),
            AttrValue::Int(number) => Some(number.to_string()),
            AttrValue::Float(number) => Some(number.to_string()),
            AttrValue::Bool(flag) => Some(flag.to_string()),
            _ => None,
        },
    }
}

impl Check for PluginCheck {
    fn name(&self) -> &str {
        &self.config.name
    }

    fn covers(&self) -> &[ObjectType] {
        &self.types
    }

    fn selects(&self, object: &Object) -> bool {
        self.config
            .select
            .iter()
            .all(|(key, wanted)| attribute(object, key).as_deref() == Some(wanted.as_str()))
    }

    fn interval(&self) -> Option<Duration> {
        self.config.interval
    }

    fn run(self: Arc<Self>, object: Object) -> BoxFuture<'static, Verdict> {
        async move { self.execute(&object).await }.boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use calipso_proto::{ObjectId, StatusLevel};

    fn host() -> Object {
        Object::new(
            ObjectId::host("compute-1"),
            ObjectType::Host,
            "compute-1",
            "lab",
        )
        .with_host("compute-1")
        .with_extra("ip_address", "192.0.2.7")
    }

    fn shell(name: &str, script: &str) -> PluginCheck {
        PluginCheck::new(PluginConfig {
            name: name.into(),
            command: "/bin/sh".into(),
            args: vec!["-c".into(), script.into()],
            types: host_only(),
            select: BTreeMap::new(),
            interval: None,
        })
        .expect("valid plugin")
    }

    async fn verdict(check: PluginCheck) -> Verdict {
        Arc::new(check).run(host()).await
    }

    #[tokio::test]
    async fn exit_status_output_and_performance_data() {
        let ok = verdict(shell(
            "ok",
            "echo 'PING OK - 0% loss | rtt=0.4ms;100;200 pl=0%'",
        ))
        .await;
        assert_eq!(ok.level, StatusLevel::Ok);
        assert_eq!(ok.text, "PING OK - 0% loss");
        assert_eq!(ok.perfdata, "rtt=0.4ms;100;200 pl=0%");
        let warning = verdict(shell("w", "echo 'DISK WARNING'; echo more lines; exit 1")).await;
        assert_eq!(warning, Verdict::warning("DISK WARNING"));
        assert_eq!(
            verdict(shell("c", "echo PROCS CRITICAL; exit 2")).await,
            Verdict::error("PROCS CRITICAL")
        );
        assert_eq!(
            verdict(shell("u", "exit 3")).await,
            Verdict::unknown("/bin/sh exited 3 and printed nothing")
        );
        assert_eq!(
            verdict(shell("odd", "echo weird; exit 7")).await,
            Verdict::unknown("weird (exit status 7, not a plugin's)")
        );
    }

    #[tokio::test]
    async fn broken_plugins_are_unknown_with_the_reason() {
        assert_eq!(
            verdict(shell("crash", "kill -SEGV $$")).await,
            Verdict::unknown("/bin/sh was killed by signal 11")
        );
        let flood = verdict(shell("flood", "head -c 1000000 /dev/zero")).await;
        assert_eq!(
            flood,
            Verdict::unknown("/bin/sh printed more than 65536 bytes: not a plugin's output")
        );
        let garbage = verdict(shell("garbage", "printf 'OK \\377\\033[31m red'")).await;
        assert_eq!(garbage, Verdict::ok("OK \u{fffd}[31m red"));
        let missing = PluginCheck::new(PluginConfig {
            command: "/nonexistent/check_thing".into(),
            ..shell("missing", "").config
        })
        .expect("valid");
        let missing = verdict(missing).await;
        assert_eq!(missing.level, StatusLevel::Unknown);
        assert!(
            missing
                .text
                .starts_with("cannot run /nonexistent/check_thing: No such file or directory"),
            "{}",
            missing.text
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let plain = dir.path().join("check_plain");
        std::fs::write(&plain, "#!/bin/sh\necho OK\n").expect("write");
        let not_executable = PluginCheck::new(PluginConfig {
            command: plain.display().to_string(),
            ..shell("plain", "").config
        })
        .expect("valid");
        let verdict = verdict(not_executable).await;
        assert!(
            verdict.text.contains("Permission denied"),
            "{}",
            verdict.text
        );
    }

    #[test]
    fn arguments_come_from_the_object() {
        let host = host();
        assert_eq!(
            fill("-H {ip_address} -n {name}", &host),
            Ok("-H 192.0.2.7 -n compute-1".into())
        );
        assert_eq!(fill("{no_such}", &host), Err("no_such".into()));
        assert_eq!(fill("plain {", &host), Ok("plain {".into()));
    }

    #[test]
    fn sensu_checks_load_as_host_plugins() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("checks.json");
        std::fs::write(
            &path,
            r#"{"checks": {"check_ntp": {"command": "check_ntp_time -H pool.ntp.org",
                "interval": 60, "standalone": true, "handlers": ["default"]}}}"#,
        )
        .expect("write");
        let plugins = load_sensu(&path).expect("loads");
        assert_eq!(
            plugins,
            vec![PluginConfig {
                name: "check_ntp".into(),
                command: "/bin/sh".into(),
                args: vec!["-c".into(), "check_ntp_time -H pool.ntp.org".into()],
                types: vec!["host".into()],
                select: BTreeMap::new(),
                interval: Some(Duration::from_secs(60)),
            }]
        );
        std::fs::write(&path, "{\"checks\": 5}").expect("write");
        let err = load_sensu(&path).expect_err("not checks");
        assert!(err.to_string().contains("not a Sensu checks file"), "{err}");
    }
}
