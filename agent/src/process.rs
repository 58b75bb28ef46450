//! What every Calipso daemon does the same way at its edges: logging to stderr (journald picks
//! it up) filtered by `RUST_LOG`, a clean stop on SIGINT or SIGTERM, telling the service manager
//! (systemd's notify protocol) when it is ready, alive and stopping, and errors reported as one
//! line with a non-zero exit status.

use std::time::Duration;

use sd_notify::NotifyState;
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

/// Tells the service manager the daemon is ready (`READY=1`), then, where it asked for a
/// watchdog (`WatchdogSec=`), pings it from the runtime three times per period, so that a
/// runtime that stops turning gets the daemon restarted; says `STOPPING=1` once `shutdown` is
/// cancelled. Without a service manager (`NOTIFY_SOCKET` unset) it sends nothing.
pub fn notify_ready(shutdown: &CancellationToken) {
    notify(NotifyState::Ready);
    let mut watchdog_usec = 0;
    let watchdog = sd_notify::watchdog_enabled(false, &mut watchdog_usec)
        .then(|| Duration::from_micros(watchdog_usec) / 3)
        .filter(|period| !period.is_zero());
    let shutdown = shutdown.clone();
    tokio::spawn(async move {
        match watchdog {
            Some(period) => {
                let mut ticks = tokio::time::interval(period);
                loop {
                    tokio::select! {
                        _ = ticks.tick() => notify(NotifyState::Watchdog),
                        () = shutdown.cancelled() => break,
                    }
                }
            }
            None => shutdown.cancelled().await,
        }
        notify(NotifyState::Stopping);
    });
}

fn notify(state: NotifyState<'_>) {
    if let Err(err) = sd_notify::notify(false, &[state]) {
        tracing::warn!(%err, "cannot notify the service manager");
    }
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
