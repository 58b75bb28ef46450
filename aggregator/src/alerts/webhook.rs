//! Webhooks: each alert POSTed as JSON, signed so the receiver can tell it came from this
//! aggregator and is not a replay.
//!
//! `X-Calipso-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>` — the
//! time is signed with the body, so a receiver that refuses signatures older than a few minutes
//! refuses replays. `X-Calipso-Delivery` carries the alert's id, the same on every retry.

use ring::hmac;
use tokio::sync::mpsc;

use super::{Alert, Webhook, Worker};

pub const SIGNATURE_HEADER: &str = "x-calipso-signature";
const DELIVERY_HEADER: &str = "x-calipso-delivery";

/// The signature header's value for `body` sent at `unix_seconds`.
pub fn signature(secret: &str, unix_seconds: i64, body: &[u8]) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
    let mut signed = format!("{unix_seconds}.").into_bytes();
    signed.extend_from_slice(body);
    let tag = hmac::sign(&key, &signed);
    format!(
        "t={unix_seconds},v1={}",
        crate::service::auth::hex(tag.as_ref())
    )
}

/// Delivers a rule's alerts to its webhook, in order, until the rule changes or the aggregator
/// stops.
pub(super) async fn run(worker: Worker, webhook: Webhook, mut alerts: mpsc::Receiver<Alert>) {
    while let Some(alert) = alerts.recv().await {
        let body = match serde_json::to_vec(&alert) {
            Ok(body) => body,
            Err(error) => {
                worker
                    .stats
                    .failed(&format!("cannot encode alert: {error}"));
                continue;
            }
        };
        let what = format!("webhook {}", webhook.url);
        worker
            .deliver(&what, || {
                let now = calipso_proto::Timestamp::now().unix_micros() / 1_000_000;
                worker
                    .http
                    .post(&webhook.url)
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .header(SIGNATURE_HEADER, signature(&webhook.secret, now, &body))
                    .header(DELIVERY_HEADER, &alert.id)
                    .body(body.clone())
            })
            .await;
        if worker.stop.is_cancelled() {
            return;
        }
    }
}
