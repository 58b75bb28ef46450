//! What every Calipso daemon does the same way at its edges: logging to stderr (journald picks
//! it up) filtered by `RUST_LOG`, a clean stop on SIGINT or SIGTERM, and errors reported as one
//! line with a non-zero exit status.

use tokio_util::sync::CancellationToken;

/// Structured logs to stderr, `info` unless `RUST_LOG` says otherwise.
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

/// A token cancelled on the first SIGINT or SIGTERM.
pub fn shutdown_on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let cancel = token.clone();
    tokio::spawn(async move {
        let terminate = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut signal) => {
                    signal.recv().await;
                }
                Err(_) => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            () = terminate => {}
        }
        tracing::info!("stopping");
        cancel.cancel();
    });
    token
}

/// The exit status of a daemon's `main`: on failure, the error and its causes on one line
/// (`error: cannot set up the uplink: /etc/calipso/ca.pem: No such file or directory`), never
/// a backtrace, whatever `RUST_BACKTRACE` says.
pub fn exit_status(result: anyhow::Result<()>) -> std::process::ExitCode {
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
