//! Schemathesis (from PyPI) against the API's own OpenAPI spec, on an aggregator holding a
//! small cloud: every generated request must get a documented status with a body matching the
//! spec, and none a 5xx. `tests/run` installs schemathesis; without it this test fails and
//! says how to install it.

use std::process::Command;

use calipso_tests::ENV;
use calipso_tests::api::ApiHarness;

/// Operations left out: revoking or replacing the fuzzer's own account would leave the rest
/// of the run unauthenticated (they are covered by `tests/api.rs`), and the live stream never
/// ends a response.
const EXCLUDED_OPERATIONS: &[&str] = &["revoke_token", "put_user", "delete_user", "stream"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_conforms_to_its_openapi_spec() -> anyhow::Result<()> {
    calipso_tests::init_test_logging();
    let found = Command::new("schemathesis").arg("--version").output();
    anyhow::ensure!(
        found.is_ok_and(|o| o.status.success()),
        "schemathesis is not installed: `pip install schemathesis` (tests/run does)"
    );
    let harness = ApiHarness::start(|_| {}).await?;
    let _a = harness.report_host(0, 2, 2).await?;
    let _b = harness.report_host(1, 2, 2).await?;
    let token = harness
        .admin()
        .await?
        .login("admin", calipso_tests::api::ADMIN_PASSWORD)
        .await?;
    let config = harness.dir.path().join("schemathesis.toml");
    std::fs::write(
        &config,
        format!("[parameters]\n\"query.env_name\" = \"{ENV}\"\n"),
    )?;
    let mut command = tokio::process::Command::new("schemathesis");
    command
        .arg("--config-file")
        .arg(&config)
        .arg("run")
        .arg(format!("{}/api/v1/openapi.json", harness.url))
        .arg("--header")
        .arg(format!("Authorization: Bearer {token}"))
        .args([
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance",
            "--max-examples",
            "25",
            "--workers",
            "2",
            "--seed",
            "20261122",
            "--no-color",
        ])
        .current_dir(harness.dir.path());
    for operation in EXCLUDED_OPERATIONS {
        command.arg("--exclude-operation-id").arg(operation);
    }
    let output = command.output().await?;
    let report = String::from_utf8_lossy(&output.stdout);
    let summary: String = report
        .lines()
        .skip_while(|l| !l.contains("SUMMARY"))
        .collect::<Vec<_>>()
        .join("\n");
    println!("{summary}");
    anyhow::ensure!(
        output.status.success(),
        "schemathesis found problems:\n{report}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    harness.stop().await;
    Ok(())
}
