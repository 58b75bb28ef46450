//! A real browser for the UI tests and benchmark: Debian's headless Chromium driven by its
//! `chromedriver` over the W3C WebDriver protocol (JSON over HTTP on loopback).
//!
//! The protocol is spoken here over reqwest rather than through fantoccini: fantoccini's TLS
//! features pull in aws-lc-rs or OpenSSL, where this workspace builds on ring alone, and a
//! local chromedriver needs no TLS. The dozen commands the tests use are below.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use base64::Engine;
use serde_json::{Value, json};

/// The key WebDriver names an element reference by.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// Keys as WebDriver sends them (code points of its private-use range).
pub mod keys {
    pub const ENTER: &str = "\u{E007}";
    pub const ARROW_LEFT: &str = "\u{E012}";
    pub const ARROW_UP: &str = "\u{E013}";
    pub const ARROW_RIGHT: &str = "\u{E014}";
    pub const ARROW_DOWN: &str = "\u{E015}";
}

/// A Chromium session, closed (with its driver) on drop.
#[derive(Debug)]
pub struct Browser {
    http: reqwest::Client,
    session: String,
    driver_url: String,
    driver: Child,
    _profile: tempfile::TempDir,
    /// Where screenshots go.
    artifacts: PathBuf,
}

/// An element on the page.
#[derive(Debug, Clone)]
pub struct Element(String);

/// Whether this machine has Chromium and its driver (installed by `tests/run`).
pub fn available() -> bool {
    Path::new("/usr/bin/chromium").exists() && Path::new("/usr/bin/chromedriver").exists()
}

impl Browser {
    /// Starts chromedriver on a free port and a headless Chromium session with a fresh
    /// profile; screenshots go to `target/ui-screenshots/<artifacts>`.
    pub async fn start(artifacts: &str) -> anyhow::Result<Self> {
        crate::install_crypto_provider();
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let driver = Command::new("/usr/bin/chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting chromedriver (apt-get install chromium-driver)")?;
        let driver_url = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()?;
        let profile = tempfile::tempdir()?;
        let artifacts = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../target/ui-screenshots")
            .join(artifacts);
        std::fs::create_dir_all(&artifacts)?;
        let mut browser = Browser {
            http,
            session: String::new(),
            driver_url,
            driver,
            _profile: profile,
            artifacts,
        };
        let ready = Instant::now();
        loop {
            let status = browser
                .http
                .get(format!("{}/status", browser.driver_url))
                .send()
                .await;
            if let Ok(response) = status
                && response.status().is_success()
            {
                break;
            }
            if ready.elapsed() > Duration::from_secs(20) {
                bail!("chromedriver did not answer on port {port}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // The flags keep Chromium off the network this machine does not have (its background
        // services would fail, many at a time) and out of a sandbox root cannot use.
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
                    "--window-size=1440,900",
                    format!("--user-data-dir={}", browser._profile.path().display()),
                ],
            },
        }}});
        let created = browser.command("POST", "/session", capabilities).await?;
        browser.session = created["sessionId"]
            .as_str()
            .context("chromedriver gave no session id")?
            .to_owned();
        Ok(browser)
    }

    async fn command(&self, method: &str, path: &str, body: Value) -> anyhow::Result<Value> {
        let url = if path == "/session" {
            format!("{}{path}", self.driver_url)
        } else {
            format!("{}/session/{}{path}", self.driver_url, self.session)
        };
        let request = match method {
            "GET" => self.http.get(url),
            "DELETE" => self.http.delete(url),
            _ => self.http.post(url).json(&body),
        };
        let answer: Value = request.send().await?.json().await?;
        let value = answer.get("value").cloned().unwrap_or(Value::Null);
        if let Some(error) = value.get("error").and_then(Value::as_str) {
            bail!(
                "webdriver {method} {path}: {error}: {}",
                value["message"].as_str().unwrap_or_default()
            );
        }
        Ok(value)
    }

    pub async fn goto(&self, url: &str) -> anyhow::Result<()> {
        self.command("POST", "/url", json!({ "url": url })).await?;
        Ok(())
    }

    /// Runs `script` (a function body; `arguments` holds `args`) and returns what it returns.
    pub async fn script(&self, script: &str, args: Vec<Value>) -> anyhow::Result<Value> {
        self.command(
            "POST",
            "/execute/sync",
            json!({ "script": script, "args": args }),
        )
        .await
    }

    /// Runs `script`, whose last argument is a callback it calls with its result (for what
    /// the page measures itself, e.g. with the Performance API, when something appears).
    pub async fn script_async(&self, script: &str, args: Vec<Value>) -> anyhow::Result<Value> {
        self.command(
            "POST",
            "/execute/async",
            json!({ "script": script, "args": args }),
        )
        .await
    }

    /// Polls `script` until it returns something other than null/false/empty, or fails with
    /// `what` after `timeout`.
    pub async fn wait_for(
        &self,
        what: &str,
        script: &str,
        args: Vec<Value>,
        timeout: Duration,
    ) -> anyhow::Result<Value> {
        let started = Instant::now();
        loop {
            let value = self.script(script, args.clone()).await?;
            let done = match &value {
                Value::Null | Value::Bool(false) => false,
                Value::String(s) => !s.is_empty(),
                Value::Array(items) => !items.is_empty(),
                _ => true,
            };
            if done {
                return Ok(value);
            }
            if started.elapsed() > timeout {
                let page = self
                    .script("return document.body.innerText.slice(0, 2000);", vec![])
                    .await
                    .unwrap_or_default();
                bail!("waited {timeout:?} for {what}; the page says:\n{page}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The element `css` matches, waiting up to `timeout` for it.
    pub async fn find(&self, css: &str, timeout: Duration) -> anyhow::Result<Element> {
        let started = Instant::now();
        loop {
            let found = self
                .command(
                    "POST",
                    "/element",
                    json!({ "using": "css selector", "value": css }),
                )
                .await;
            let last = match found {
                Ok(value) => match value[ELEMENT].as_str() {
                    Some(id) => return Ok(Element(id.to_owned())),
                    None => format!("the driver answered {value}"),
                },
                Err(error) => error.to_string(),
            };
            if started.elapsed() > timeout {
                bail!("no element matches `{css}` after {timeout:?}: {last}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn click(&self, element: &Element) -> anyhow::Result<()> {
        self.command("POST", &format!("/element/{}/click", element.0), json!({}))
            .await?;
        Ok(())
    }

    /// Empties an input.
    pub async fn clear(&self, element: &Element) -> anyhow::Result<()> {
        self.command("POST", &format!("/element/{}/clear", element.0), json!({}))
            .await?;
        Ok(())
    }

    /// Types `text` into `element` (keys from [`keys`] included).
    pub async fn type_into(&self, element: &Element, text: &str) -> anyhow::Result<()> {
        self.command(
            "POST",
            &format!("/element/{}/value", element.0),
            json!({ "text": text }),
        )
        .await?;
        Ok(())
    }

    /// Sends keys to whatever has focus.
    pub async fn press(&self, keys: &str) -> anyhow::Result<()> {
        let actions: Vec<Value> = keys
            .chars()
            .flat_map(|c| {
                [
                    json!({"type": "keyDown", "value": c.to_string()}),
                    json!({"type": "keyUp", "value": c.to_string()}),
                ]
            })
            .collect();
        self.command(
            "POST",
            "/actions",
            json!({"actions": [{"type": "key", "id": "keyboard", "actions": actions}]}),
        )
        .await?;
        Ok(())
    }

    pub async fn text(&self, element: &Element) -> anyhow::Result<String> {
        let value = self
            .command("GET", &format!("/element/{}/text", element.0), Value::Null)
            .await?;
        Ok(value.as_str().unwrap_or_default().to_owned())
    }

    /// Saves a PNG of the page as `<name>.png` among the artifacts; returns its path.
    pub async fn screenshot(&self, name: &str) -> anyhow::Result<PathBuf> {
        let value = self.command("GET", "/screenshot", Value::Null).await?;
        let png = base64::engine::general_purpose::STANDARD
            .decode(value.as_str().context("screenshot is no string")?)?;
        let path = self.artifacts.join(format!("{name}.png"));
        std::fs::write(&path, png)?;
        Ok(path)
    }

    /// The page's JavaScript errors so far (collected by [`Browser::watch_errors`]).
    pub async fn errors(&self) -> anyhow::Result<Vec<String>> {
        let value = self.script("return window.__errors || [];", vec![]).await?;
        Ok(value
            .as_array()
            .map(|items| {
                items
                    .iter()
                    .map(|i| i.as_str().unwrap_or_default().to_owned())
                    .collect()
            })
            .unwrap_or_default())
    }

    /// Starts collecting uncaught errors and rejected promises of the current page.
    pub async fn watch_errors(&self) -> anyhow::Result<()> {
        self.script(
            "window.__errors = window.__errors || [];\
             window.addEventListener('error', (e) => window.__errors.push(String(e.message)));\
             window.addEventListener('unhandledrejection', (e) => window.__errors.push(String(e.reason && e.reason.message || e.reason)));",
            vec![],
        )
        .await?;
        Ok(())
    }
}

impl Browser {
    /// Ends the session (Chromium exits) and stops the driver.
    pub async fn close(self) {
        let _ = self.command("DELETE", "", Value::Null).await;
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // The session dies with its driver: Chromium is the driver's child.
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
