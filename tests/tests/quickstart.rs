//! The README's first command, in-process: CA, aggregator and local agent on one machine.

use std::time::Duration;

use calipso_aggregator::quickstart::{QuickstartOptions, run};
use tokio_util::sync::CancellationToken;

#[tokio::test]
async fn quickstart_exchanges_the_host_model_and_reuses_its_data_directory() -> anyhow::Result<()> {
    calipso_tests::init_test_logging();
    let dir = tempfile::tempdir()?;
    let options = QuickstartOptions {
        data_dir: dir.path().join("data"),
        listen: ([127, 0, 0, 1], 0).into(),
        api_listen: ([127, 0, 0, 1], 0).into(),
        once: true,
    };
    tokio::time::timeout(
        Duration::from_secs(30),
        run(options.clone(), CancellationToken::new()),
    )
    .await??;
    let ca = dir.path().join("data/ca");
    for file in [
        "ca.pem",
        "ca.key",
        "crl.pem",
        "index.json",
        "server-localhost.pem",
        "server-localhost.key",
    ] {
        assert!(ca.join(file).exists(), "{file} created");
    }
    // The first admin's password was generated and kept for the operator, readable by them only.
    let password_file = dir.path().join("data/admin-password");
    let password = std::fs::read_to_string(&password_file)?;
    assert!(password.trim().len() >= 16, "a generated password");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&password_file)?.permissions().mode() & 0o777,
        0o600
    );
    // Issue 24, item 6: the data directory and the store are the user's alone.
    let mode = |p: &std::path::Path| -> anyhow::Result<u32> {
        Ok(std::fs::metadata(p)?.permissions().mode() & 0o777)
    };
    assert_eq!(mode(&dir.path().join("data"))?, 0o700);
    assert_eq!(mode(&dir.path().join("data/calipso.db"))?, 0o600);
    assert_eq!(mode(&dir.path().join("data/secret.key"))?, 0o600);
    let ca_cert = std::fs::read(ca.join("ca.pem"))?;
    let index = std::fs::read(ca.join("index.json"))?;

    // A second run reuses the CA, every certificate and the agent's epoch: it resumes, and
    // with nothing changed it ends without sending anything.
    tokio::time::timeout(
        Duration::from_secs(30),
        run(options, CancellationToken::new()),
    )
    .await??;
    assert_eq!(std::fs::read(ca.join("ca.pem"))?, ca_cert);
    assert_eq!(std::fs::read(ca.join("index.json"))?, index);
    assert_eq!(
        std::fs::read_to_string(&password_file)?,
        password,
        "the admin exists; its password is not replaced"
    );
    Ok(())
}
