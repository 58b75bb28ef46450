//! The web UI: plain ES modules, a stylesheet and an HTML shell, compiled into the binary and
//! served at `/` beside the API they call (same origin, same tokens and grants). Nothing is
//! built with Node and nothing is fetched at build time.
//!
//! Every page carries a Content-Security-Policy that allows only this origin's scripts, styles,
//! images and connections: data from the API is inserted as text, never as markup, so a name
//! an agent reported cannot run in an operator's browser.

use std::sync::LazyLock;

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::service::Service;

/// One embedded file.
struct Asset {
    path: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

macro_rules! assets {
    ($($path:literal => $content_type:expr),* $(,)?) => {
        &[$(Asset {
            path: $path,
            content_type: $content_type,
            body: include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/ui/", $path)),
        }),*]
    };
}

const JS: &str = "text/javascript; charset=utf-8";

/// Every file under `aggregator/ui/` (a test checks that none is missing).
static ASSETS: &[Asset] = assets! {
    "index.html" => "text/html; charset=utf-8",
    "app.css" => "text/css; charset=utf-8",
    "favicon.svg" => "image/svg+xml",
    "js/main.js" => JS,
    "js/api.js" => JS,
    "js/dom.js" => JS,
    "js/graph.js" => JS,
    "js/layout.js" => JS,
    "js/tree.js" => JS,
    "js/live.js" => JS,
    "js/views/login.js" => JS,
    "js/views/home.js" => JS,
    "js/views/environment.js" => JS,
    "js/views/object.js" => JS,
    "js/views/clique.js" => JS,
    "js/views/host.js" => JS,
    "js/views/messages.js" => JS,
    "js/views/diff.js" => JS,
};

/// The policy every UI answer carries: scripts, styles, images and API calls from this
/// origin only; no frames, no plugins, no inline script.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'self'; \
     frame-ancestors 'none'";

/// Entity tags: the build's version and a digest of the file, so a browser revalidates
/// cheaply and never keeps a previous release's module.
static ETAGS: LazyLock<Vec<String>> = LazyLock::new(|| {
    ASSETS
        .iter()
        .map(|asset| {
            let digest = ring::digest::digest(&ring::digest::SHA256, asset.body);
            format!(
                "\"{}-{}\"",
                env!("CARGO_PKG_VERSION"),
                crate::service::auth::hex(digest.as_ref().get(..12).unwrap_or_default())
            )
        })
        .collect()
});

pub fn routes() -> Router<Service> {
    Router::new()
        .route("/", get(index))
        .route("/ui/{*path}", get(asset))
}

async fn index(headers: HeaderMap) -> Response {
    serve("index.html", &headers)
}

async fn asset(Path(path): Path<String>, headers: HeaderMap) -> Response {
    serve(&path, &headers)
}

fn serve(path: &str, headers: &HeaderMap) -> Response {
    let Some(index) = ASSETS.iter().position(|a| a.path == path) else {
        return crate::api::ApiError::not_found(format!("no UI file `{path}`")).into_response();
    };
    let asset = &ASSETS[index];
    let etag = ETAGS.get(index).map(String::as_str).unwrap_or_default();
    let unchanged = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|tag| tag.trim() == etag));
    let mut response = if unchanged {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static(asset.content_type),
            )],
            asset.body,
        )
            .into_response()
    };
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if let Ok(value) = HeaderValue::from_str(etag) {
        headers.insert(header::ETAG, value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every file in `ui/` is served, and every served file exists (`include_bytes!` checks
    /// the second at compile time).
    #[test]
    fn every_ui_file_is_embedded() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("ui");
        let mut on_disk = Vec::new();
        let mut dirs = vec![root.clone()];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir).expect("ui/ is readable") {
                let path = entry.expect("ui/ entry").path();
                if path.is_dir() {
                    dirs.push(path);
                } else {
                    let relative = path.strip_prefix(&root).expect("under ui/");
                    on_disk.push(relative.to_string_lossy().replace('\\', "/"));
                }
            }
        }
        on_disk.sort();
        let mut served: Vec<String> = ASSETS.iter().map(|a| a.path.to_owned()).collect();
        served.sort();
        assert_eq!(on_disk, served);
    }
}
