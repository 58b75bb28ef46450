//! The HTTP server loop: hyper's HTTP/1.1 connections with a deadline for each request's
//! headers (a client that sends nothing, or a byte now and then, is closed), at most
//! `max_connections` at once (one more is answered 503 and closed, so a flood cannot take the
//! file descriptors the store and the agents' sessions need), every request carrying its
//! client's address, and a graceful stop.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::AsyncWriteExt;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use super::ClientAddr;

/// What the listener allows.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_connections: usize,
    pub header_timeout: Duration,
}

/// How long answers in flight may take to finish once the server stops.
const DRAIN: Duration = Duration::from_secs(5);

/// What a connection past the cap is told before it is closed.
const REFUSAL: &str = "{\"error\":{\"code\":\"unavailable\",\"message\":\"the API serves as many connections as it may; retry shortly\"}}";

/// Serves `app` on `listener` until `shutdown`.
pub fn spawn<L>(
    mut listener: L,
    app: Router,
    limits: Limits,
    shutdown: CancellationToken,
) -> tokio::task::JoinHandle<()>
where
    L: axum::serve::Listener<Addr = SocketAddr>,
{
    tokio::spawn(async move {
        let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
        let graceful = GracefulShutdown::new();
        let mut http = hyper::server::conn::http1::Builder::new();
        http.timer(TokioTimer::new())
            .header_read_timeout(limits.header_timeout);
        loop {
            let (io, remote) = tokio::select! {
                accepted = listener.accept() => accepted,
                () = shutdown.cancelled() => break,
            };
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                tracing::warn!(%remote, limit = limits.max_connections, "connection refused: the API is at its connection limit");
                tokio::spawn(refuse(io));
                continue;
            };
            let app = app.clone();
            let service = hyper::service::service_fn(
                move |mut request: hyper::Request<hyper::body::Incoming>| {
                    request
                        .extensions_mut()
                        .insert(ConnectInfo(ClientAddr(remote)));
                    app.clone().oneshot(request.map(axum::body::Body::new))
                },
            );
            let connection = graceful.watch(http.serve_connection(TokioIo::new(io), service));
            tokio::spawn(async move {
                if let Err(err) = connection.await {
                    tracing::debug!(%remote, %err, "connection ended");
                }
                drop(slot);
            });
        }
        if tokio::time::timeout(DRAIN, graceful.shutdown())
            .await
            .is_err()
        {
            tracing::warn!("answers still in flight after {DRAIN:?}: closing them");
        }
    })
}

/// Answers 503 on a connection past the cap and closes it, giving the client a second to
/// take the answer.
async fn refuse<Io: tokio::io::AsyncWrite + Unpin>(mut io: Io) {
    let answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\nretry-after: 1\r\nconnection: close\r\n\r\n{REFUSAL}",
        REFUSAL.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        let _ = io.write_all(answer.as_bytes()).await;
        let _ = io.shutdown().await;
    })
    .await;
}
