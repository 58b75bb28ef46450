//! The API under load: an aggregator holding 1 000 synthetic OVS hosts (~500 000 objects, their
//! links and cliques) in SQLite, its API on loopback, and `wrk` (Debian's package) driving 200
//! concurrent connections at:
//!
//! 1. the clique of a random VM (`GET /api/v1/cliques/{focal_point}`);
//! 2. the first inventory page (`GET /api/v1/inventory?limit=100`);
//! 3. a random host's inventory page (`…&host=compute-NNNN`);
//! 4. a random page of vNICs by cursor (`…&type=vnic&cursor=…`).
//!
//! Reports wrk's latency distribution (p50 / p99) and requests per second for each.
//! `cargo bench -p calipso-tests --bench api` (needs `wrk`: `apt-get install wrk`).

use std::process::Command;
use std::time::Duration;

use calipso_aggregator::client::ApiClient;
use calipso_tests::api::SyntheticApi;

const ENV: &str = "bench";
const HOSTS: usize = 1000;
const OBJECTS_PER_HOST: usize = 500;
const CONNECTIONS: usize = 200;
const SECONDS: u64 = 15;

/// Lua for wrk: each request picks its target at random.
fn script(kind: &str, vms_per_host: usize) -> String {
    let pick = match kind {
        "clique" => format!(
            "local h = math.random(0, {hosts}) local v = math.random(0, {vms})\n\
             local path = string.format('/api/v1/cliques/instance:%08x-0000-4000-8000-%012x?env_name={ENV}', h, v)",
            hosts = HOSTS - 1,
            vms = vms_per_host - 1
        ),
        "first_page" => format!("local path = '/api/v1/inventory?env_name={ENV}&limit=100'"),
        "host_page" => format!(
            "local path = string.format('/api/v1/inventory?env_name={ENV}&limit=100&host=compute-%04d', math.random(0, {}))",
            HOSTS - 1
        ),
        // A cursor is the hex of "<type>\n<id>"; vNIC ids are vnic:<host>:<tap name>.
        _ => format!(
            "local h = math.random(0, {}) local key = string.format('vnic\\nvnic:compute-%04d:', h)\n\
             local hex = key:gsub('.', function(c) return string.format('%02x', string.byte(c)) end)\n\
             local path = '/api/v1/inventory?env_name={ENV}&type=vnic&limit=100&cursor=' .. hex",
            HOSTS - 1
        ),
    };
    format!(
        "math.randomseed(os.time())\nrequest = function()\n{pick}\nreturn wrk.format('GET', path)\nend\n"
    )
}

struct Run {
    p50_ms: f64,
    p99_ms: f64,
    requests_per_second: f64,
    errors: String,
}

fn millis(text: &str) -> f64 {
    let text = text.trim();
    let (number, scale) = if let Some(v) = text.strip_suffix("ms") {
        (v, 1.0)
    } else if let Some(v) = text.strip_suffix("us") {
        (v, 0.001)
    } else if let Some(v) = text.strip_suffix('s') {
        (v, 1000.0)
    } else {
        (text, 1.0)
    };
    number.parse::<f64>().unwrap_or(f64::NAN) * scale
}

fn wrk(url: &str, token: &str, script_path: &std::path::Path) -> anyhow::Result<Run> {
    let output = Command::new("wrk")
        .args([
            "-t",
            "2",
            "-c",
            &CONNECTIONS.to_string(),
            "-d",
            &format!("{SECONDS}s"),
            "--latency",
            "--timeout",
            "10s",
            "-H",
            &format!("Authorization: Bearer {token}"),
            "-s",
        ])
        .arg(script_path)
        .arg(url)
        .output()?;
    anyhow::ensure!(
        output.status.success(),
        "wrk: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8_lossy(&output.stdout);
    let field = |prefix: &str| {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(prefix).map(|v| v.trim().to_owned()))
            .unwrap_or_default()
    };
    let errors = text
        .lines()
        .filter(|l| l.contains("Non-2xx") || l.contains("Socket errors"))
        .map(str::trim)
        .collect::<Vec<_>>()
        .join("; ");
    Ok(Run {
        p50_ms: millis(&field("50%")),
        p99_ms: millis(&field("99%")),
        requests_per_second: field("Requests/sec:").parse().unwrap_or(0.0),
        errors,
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    anyhow::ensure!(
        Command::new("wrk").arg("--version").output().is_ok(),
        "wrk is not installed: apt-get install wrk"
    );
    let dir = tempfile::tempdir()?;
    let synthetic = SyntheticApi::start(ENV, HOSTS, OBJECTS_PER_HOST, "bench-password").await?;
    let url = synthetic.url.clone();
    let token = ApiClient::new(&url)?
        .login("admin", "bench-password")
        .await?;
    // One request of each shape first: they must answer 200.
    let client = ApiClient::new(&url)?.with_token(&token);
    client
        .get(
            &format!(
                "/api/v1/cliques/instance:{}",
                calipso_aggregator::synthetic::vm_uuid(7, 3)
            ),
            &[("env_name", ENV)],
        )
        .await?;
    println!(
        "{CONNECTIONS} connections, 2 wrk threads, {SECONDS} s per run, on the same 2 cores as the aggregator"
    );
    println!(
        "{:<12} {:>9} {:>9} {:>10}  errors",
        "request", "p50 ms", "p99 ms", "req/s"
    );
    for kind in ["clique", "first_page", "host_page", "cursor_page"] {
        let path = dir.path().join(format!("{kind}.lua"));
        std::fs::write(&path, script(kind, synthetic.layout.vms_per_host))?;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let run = tokio::task::spawn_blocking({
            let (url, token) = (url.clone(), token.clone());
            move || wrk(&url, &token, &path)
        })
        .await??;
        println!(
            "{kind:<12} {:>9.2} {:>9.2} {:>10.0}  {}",
            run.p50_ms,
            run.p99_ms,
            run.requests_per_second,
            if run.errors.is_empty() {
                "none"
            } else {
                &run.errors
            }
        );
    }
    synthetic.stop().await;
    Ok(())
}
