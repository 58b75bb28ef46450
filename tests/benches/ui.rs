//! The web UI at scale, measured in the browser: an aggregator holding 1 000 synthetic OVS hosts
//! (~500 000 objects, their links and cliques), headless Chromium on the same 2 cores, and the
//! page's own clock (`performance.now()`, from the navigation's start or from the click):
//!
//! 1. the environment page's first paint: the page loaded, the dashboard's tables and the
//!    tree's first level drawn;
//! 2. expanding a host in the tree: its level fetched and drawn, folders by type;
//! 3. a VM's clique graph: fetched, laid out and drawn with its diagnosis.
//!
//! Targets (issue 19): ≤ 1 s, ≤ 300 ms, ≤ 500 ms. `cargo bench -p calipso-tests --bench ui`
//! (needs `chromium` and `chromium-driver`).

use std::time::Duration;

use calipso_aggregator::synthetic::{host_name, vm_uuid};
use calipso_tests::api::SyntheticApi;
use calipso_tests::browser::{self, Browser};
use serde_json::{Value, json};

const ENV: &str = "bench";
const HOSTS: usize = 1000;
const OBJECTS_PER_HOST: usize = 500;
const RUNS: usize = 10;
const WAIT: Duration = Duration::from_secs(60);

/// Resolves with `performance.now()` once `arguments[0]` (a function body returning a truth)
/// holds, checking on every change of the page.
const WHEN_READY: &str = "const ready = new Function(arguments[0]); const done = arguments[arguments.length - 1];\
    if (ready()) { done(performance.now()); return; }\
    const observer = new MutationObserver(() => { if (ready()) { observer.disconnect(); done(performance.now()); } });\
    observer.observe(document, {subtree: true, childList: true, attributes: true});";

/// Clicks, then resolves with the milliseconds until `arguments[1]` holds.
const CLICK_UNTIL: &str = "const target = document.querySelector(arguments[0]); const ready = new Function(arguments[1]);\
    const done = arguments[arguments.length - 1]; const start = performance.now();\
    const observer = new MutationObserver(() => { if (ready()) { observer.disconnect(); done(performance.now() - start); } });\
    observer.observe(document, {subtree: true, childList: true, attributes: true});\
    target.click();";

/// Sets the fragment, then resolves with the milliseconds until `arguments[1]` holds.
const NAVIGATE_UNTIL: &str = "const ready = new Function(arguments[1]); const done = arguments[arguments.length - 1];\
    const start = performance.now();\
    const observer = new MutationObserver(() => { if (ready()) { observer.disconnect(); done(performance.now() - start); } });\
    observer.observe(document, {subtree: true, childList: true, attributes: true});\
    window.location.hash = arguments[0];";

fn summary(name: &str, target_ms: f64, mut samples: Vec<f64>) {
    samples.sort_by(f64::total_cmp);
    let median = samples[samples.len() / 2];
    let worst = samples[samples.len() - 1];
    println!(
        "{name:<28} median {median:>7.1} ms  worst {worst:>7.1} ms  target ≤ {target_ms:.0} ms  {}",
        if worst <= target_ms { "met" } else { "NOT met" }
    );
}

fn millis(value: &Value) -> anyhow::Result<f64> {
    value
        .as_f64()
        .ok_or_else(|| anyhow::anyhow!("the page measured {value}"))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    anyhow::ensure!(
        browser::available(),
        "needs Debian's chromium and chromium-driver"
    );
    let synthetic = SyntheticApi::start(ENV, HOSTS, OBJECTS_PER_HOST, "bench-password").await?;
    let base = synthetic.url.clone();
    // What the environment page asks for, one at a time: where its time goes.
    let client = calipso_aggregator::client::ApiClient::new(&base)?;
    let token = client.clone().login("admin", "bench-password").await?;
    let client = client.with_token(&token);
    let host = host_name(HOSTS / 2);
    let host_id = format!("host:{host}");
    for (what, path, query) in [
        ("environments", "/api/v1/environment_configs", vec![]),
        ("aggregates", "/api/v1/aggregates", vec![("env_name", ENV)]),
        ("agents", "/api/v1/agents", vec![("env_name", ENV)]),
        (
            "latest messages",
            "/api/v1/messages",
            vec![("env_name", ENV), ("order", "newest"), ("limit", "8")],
        ),
        ("snapshots", "/api/v1/snapshots", vec![("env_name", ENV)]),
        ("tree: first level", "/api/v1/tree", vec![("env_name", ENV)]),
        (
            "tree: a host's level",
            "/api/v1/tree",
            vec![("env_name", ENV), ("parent_id", host_id.as_str())],
        ),
        (
            "graph of a host",
            "/api/v1/graph",
            vec![("env_name", ENV), ("host", host.as_str())],
        ),
    ] {
        let mut samples = Vec::new();
        for _ in 0..3 {
            let started = std::time::Instant::now();
            client.get(path, &query).await?;
            samples.push(started.elapsed().as_secs_f64() * 1000.0);
        }
        samples.sort_by(f64::total_cmp);
        println!("API {what:<24} median {:>7.1} ms", samples[1]);
    }
    let browser = Browser::start("bench").await?;
    browser.goto(&format!("{base}/#/login")).await?;
    browser
        .type_into(&browser.find("#username", WAIT).await?, "admin")
        .await?;
    browser
        .type_into(&browser.find("#password", WAIT).await?, "bench-password")
        .await?;
    browser
        .click(&browser.find("#login-button", WAIT).await?)
        .await?;
    browser.find("[data-environment] .summary", WAIT).await?;
    let vms_per_host = synthetic.layout.vms_per_host;

    // 1. The environment page, loaded afresh each time (modules from the aggregator, then the
    //    dashboard's and the tree's requests).
    let env_ready = "return !!document.querySelector('.dashboard table') && document.querySelectorAll('.tree [role=treeitem]').length > 0;";
    let mut first_paint = Vec::new();
    for _ in 0..RUNS {
        // A new document each time: the page's clock starts at its navigation.
        browser.goto("about:blank").await?;
        browser.goto(&format!("{base}/#/env/{ENV}")).await?;
        let measured = browser
            .script_async(WHEN_READY, vec![json!(env_ready)])
            .await;
        if measured.is_err() {
            browser.screenshot("failure").await?;
        }
        first_paint.push(millis(&measured?)?);
    }
    browser.screenshot("environment-1000-hosts").await?;
    browser.watch_errors().await?;

    // 2. Expanding hosts of the tree's first level (the hosts folder opened first).
    browser
        .script(
            "const f = document.querySelector('.tree [data-folder=\"host\"]'); if (f && f.getAttribute('aria-expanded') !== 'true') f.querySelector('.row').click();",
            vec![],
        )
        .await?;
    let mut expand = Vec::new();
    for run in 0..RUNS {
        let host = format!("host:{}", host_name(run * 97 % HOSTS));
        let item = format!(".tree [data-id=\"{host}\"]");
        browser.find(&item, WAIT).await?;
        let ready = format!(
            "const i = document.querySelector('{item}'); return i.getAttribute('aria-expanded') === 'true' && !i.hasAttribute('aria-busy') && i.querySelectorAll('[role=treeitem]').length > 0;"
        );
        expand.push(millis(
            &browser
                .script_async(
                    CLICK_UNTIL,
                    vec![json!(format!("{item} > .row .twisty")), json!(ready)],
                )
                .await?,
        )?);
    }
    browser.screenshot("host-expanded-1000-hosts").await?;

    // 3. Clique graphs of VMs across the fleet.
    let mut graphs = Vec::new();
    for run in 0..RUNS {
        let vm = format!(
            "instance:{}",
            vm_uuid(run * 131 % HOSTS, run * 7 % vms_per_host)
        );
        let ready = format!(
            "const n = document.querySelector('svg.graph [data-id=\"{vm}\"]'); return !!n && !!document.querySelector('#diagnosis-summary');"
        );
        graphs.push(millis(
            &browser
                .script_async(
                    NAVIGATE_UNTIL,
                    vec![json!(format!("#/env/{ENV}/clique/{vm}")), json!(ready)],
                )
                .await?,
        )?);
    }
    browser.screenshot("clique-1000-hosts").await?;
    let errors = browser.errors().await?;
    browser.close().await;
    synthetic.stop().await;

    println!(
        "{HOSTS} hosts × ~{OBJECTS_PER_HOST} objects, {RUNS} runs each, Chromium on the same 2 cores as the aggregator"
    );
    summary("environment page first paint", 1000.0, first_paint);
    summary("expand a host in the tree", 300.0, expand);
    summary("clique graph drawn", 500.0, graphs);
    anyhow::ensure!(errors.is_empty(), "the page threw: {errors:?}");
    Ok(())
}
