//! A real Prometheus Alertmanager (Debian's `prometheus-alertmanager`) on a loopback port, with
//! its data in a temporary directory and no cluster: what the aggregator's alerts are posted to.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::Context;

#[derive(Debug)]
pub struct Alertmanager {
    pub url: String,
    child: Child,
    _dir: tempfile::TempDir,
}

/// A minimal configuration: every alert goes to a receiver that sends nothing.
const CONFIG: &str = "route:\n  receiver: quiet\nreceivers:\n  - name: quiet\n";

impl Alertmanager {
    pub async fn start() -> anyhow::Result<Self> {
        crate::install_crypto_provider();
        let dir = tempfile::tempdir()?;
        std::fs::write(dir.path().join("alertmanager.yml"), CONFIG)?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let listen = format!("127.0.0.1:{port}");
        let child = Command::new("prometheus-alertmanager")
            .arg(format!(
                "--config.file={}",
                dir.path().join("alertmanager.yml").display()
            ))
            .arg(format!("--storage.path={}", dir.path().display()))
            .arg(format!("--web.listen-address={listen}"))
            .arg("--cluster.listen-address=")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("prometheus-alertmanager (Debian package prometheus-alertmanager)")?;
        let manager = Alertmanager {
            url: format!("http://{listen}"),
            child,
            _dir: dir,
        };
        let ready = format!("{}/-/ready", manager.url);
        for _ in 0..100 {
            if reqwest::get(&ready)
                .await
                .is_ok_and(|r| r.status().is_success())
            {
                return Ok(manager);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        anyhow::bail!("Alertmanager did not become ready on {listen}")
    }

    /// The alerts it holds as firing (`GET /api/v2/alerts`: resolved ones are left out).
    pub async fn alerts(&self) -> anyhow::Result<Vec<serde_json::Value>> {
        let url = format!("{}/api/v2/alerts", self.url);
        Ok(reqwest::get(&url).await?.error_for_status()?.json().await?)
    }
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
