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
    let ca_cert = std::fs::read(ca.join("ca.pem"))?;
    let index = std::fs::read(ca.join("index.json"))?;

    // A second run reuses the CA and every certificate.
    tokio::time::timeout(
        Duration::from_secs(30),
        run(options, CancellationToken::new()),
    )
    .await??;
    assert_eq!(std::fs::read(ca.join("ca.pem"))?, ca_cert);
    assert_eq!(std::fs::read(ca.join("index.json"))?, index);
    Ok(())
}
