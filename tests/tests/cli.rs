//! The `calipso` CLI against a real aggregator: login, listings, search, the clique tree, a
//! scan, and `watch` printing a change an agent made.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use calipso_tests::ENV;
use calipso_tests::api::{ADMIN_PASSWORD, ApiHarness};
use tokio::io::{AsyncBufReadExt, BufReader};

struct Cli {
    binary: PathBuf,
    url: String,
    session: PathBuf,
}

impl Cli {
    fn command(&self, args: &[&str]) -> tokio::process::Command {
        let mut command = tokio::process::Command::new(&self.binary);
        command
            .arg("--url")
            .arg(&self.url)
            .arg("--session")
            .arg(&self.session)
            .args(args)
            .env("CALIPSO_PASSWORD", ADMIN_PASSWORD)
            .kill_on_drop(true);
        command
    }

    async fn run(&self, args: &[&str]) -> anyhow::Result<String> {
        let output = self.command(args).output().await?;
        anyhow::ensure!(
            output.status.success(),
            "calipso {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        Ok(String::from_utf8(output.stdout)?)
    }
}

#[tokio::test]
async fn the_cli_lists_shows_scans_and_watches() -> anyhow::Result<()> {
    calipso_tests::init_test_logging();
    let harness = ApiHarness::start(|_| {}).await?;
    let agent = harness.report_host(0, 1, 2).await?;
    let cli = Cli {
        binary: calipso_tests::workspace_binary("calipso-aggregator", "calipso", false)?,
        url: harness.url.clone(),
        session: harness.dir.path().join("session.json"),
    };
    assert!(cli.run(&["login", "admin"]).await?.contains("logged in"));
    // The session file holds a token: readable by its owner only, also when it was not.
    use std::os::unix::fs::PermissionsExt;
    let mode =
        |path: &std::path::Path| std::fs::metadata(path).map(|m| m.permissions().mode() & 0o777);
    assert_eq!(mode(&cli.session)?, 0o600);
    std::fs::set_permissions(&cli.session, std::fs::Permissions::from_mode(0o644))?;
    assert!(cli.run(&["login", "admin"]).await?.contains("logged in"));
    assert_eq!(mode(&cli.session)?, 0o600, "a second login closes it again");

    let table = cli
        .run(&["get", "inventory", "--env", ENV, "--type", "instance"])
        .await?;
    assert_eq!(
        table.lines().count(),
        3,
        "a header and two instances:\n{table}"
    );
    assert!(table.starts_with("ID"));
    let json = cli.run(&["--json", "get", "links", "--env", ENV]).await?;
    let links: serde_json::Value = serde_json::from_str(&json)?;
    assert!(links.as_array().is_some_and(|l| !l.is_empty()));
    let found = cli.run(&["search", "^qbr", "--env", ENV]).await?;
    assert_eq!(found.lines().count(), 3, "{found}");

    let instance = calipso_aggregator::synthetic::vm_uuid(0, 0);
    let tree = cli
        .run(&[
            "clique",
            "show",
            &format!("instance:{instance}"),
            "--env",
            ENV,
        ])
        .await?;
    assert!(tree.starts_with(&format!("instance:{instance}")), "{tree}");
    assert!(
        tree.contains("└─ [") && tree.contains("instance-vnic"),
        "{tree}"
    );

    let scan = cli
        .run(&["scan", "--env", ENV, "--kind", "cliques_only", "--wait"])
        .await?;
    assert!(scan.contains("completed"), "{scan}");

    let mut watch = cli
        .command(&["watch", "--env", ENV, "--types", "vnic"])
        .stdout(Stdio::piped())
        .spawn()?;
    let mut lines = BufReader::new(watch.stdout.take().expect("piped")).lines();
    // Give the stream a moment to subscribe, then change something.
    tokio::time::sleep(Duration::from_millis(500)).await;
    agent.change("watched-by-cli", 1400);
    let line = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
        .await??
        .unwrap_or_default();
    assert!(
        line.contains("upsert") && line.contains("watched-by-cli"),
        "{line}"
    );
    watch.kill().await?;

    assert!(cli.run(&["logout"]).await?.contains("logged out"));
    let output = cli.command(&["get", "agents"]).output().await?;
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("login"));
    harness.stop().await;
    Ok(())
}
