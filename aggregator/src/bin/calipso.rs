//! `calipso`: the command-line client of the aggregator's API.
//!
//! ```text
//! calipso --url http://127.0.0.1:8080 login admin      # password from $CALIPSO_PASSWORD or stdin
//! calipso get inventory --env lab --type instance
//! calipso get links --env lab --link-type otep-otep --json
//! calipso clique show instance:3f2a… --env lab
//! calipso search 'tap.*' --env lab
//! calipso impact host_pnic:compute-1:eth0 --env lab          # what depends on it
//! calipso why instance:3f2a… --env lab                         # what is wrong, from the wire up
//! calipso path instance:3f2a… instance:9c1d… --env lab         # the chain between two VMs
//! calipso snapshot create pre-maintenance --env lab --note "before the kernel upgrade"
//! calipso diff --env lab --from pre-maintenance --markdown  # what changed since, for review
//! calipso scan --env lab --kind links_only --wait
//! calipso watch --env lab --types instance,vnic
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::io::BufRead;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use calipso_aggregator::client::ApiClient;
use clap::{Parser, Subcommand, ValueEnum};
use futures::StreamExt;
use reqwest::Method;
use serde_json::{Value, json};

#[derive(Debug, Parser)]
#[command(version, about = "Client of the Calipso aggregator's API")]
struct Cli {
    /// The API's address; defaults to the one last logged in to.
    #[arg(long, env = "CALIPSO_URL", global = true)]
    url: Option<String>,
    /// Where the session (URL and token) is kept.
    #[arg(long, env = "CALIPSO_SESSION", global = true)]
    session: Option<PathBuf>,
    /// The CA certificate (PEM) that signed an `https://` API's certificate.
    #[arg(long, env = "CALIPSO_CA_CERT", global = true)]
    ca_cert: Option<PathBuf>,
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Log in and keep the token for the next commands.
    Login { username: String },
    /// Revoke the kept token.
    Logout,
    /// List a resource.
    Get {
        #[arg(value_enum)]
        resource: Resource,
        #[command(flatten)]
        filters: Filters,
    },
    /// Objects whose name matches a regular expression.
    Search {
        pattern: String,
        #[arg(long)]
        env: String,
        #[arg(long = "type")]
        object_type: Option<String>,
    },
    /// Cliques.
    #[command(subcommand)]
    Clique(CliqueCommand),
    /// What depends on objects: instances, vservices, networks, hosts and projects (a host
    /// stands for everything on it).
    Impact {
        #[arg(required = true)]
        objects: Vec<String>,
        #[arg(long)]
        env: String,
    },
    /// What is wrong in the clique of a focal point, ranked from the wire upward.
    Why {
        focal_point: String,
        #[arg(long)]
        env: String,
    },
    /// The chain of objects and links between two endpoints, and where it breaks.
    Path {
        from: String,
        to: String,
        #[arg(long)]
        env: String,
    },
    /// Named snapshots: points in history that retention keeps.
    #[command(subcommand)]
    Snapshot(SnapshotCommand),
    /// What changed between two points (snapshot names, RFC 3339 times, or `now`).
    Diff {
        #[arg(long)]
        env: String,
        #[arg(long)]
        from: String,
        #[arg(long, default_value = "now")]
        to: String,
        #[arg(long)]
        host: Option<String>,
        #[arg(long = "type")]
        object_type: Option<String>,
        /// A Markdown review report instead of text.
        #[arg(long)]
        markdown: bool,
    },
    /// Request a scan (and wait for it).
    Scan {
        #[arg(long)]
        env: String,
        #[arg(long)]
        host: Option<String>,
        #[arg(long, default_value = "full")]
        kind: String,
        #[arg(long)]
        wait: bool,
    },
    /// Follow changes as they are committed.
    Watch {
        #[arg(long)]
        env: Option<String>,
        /// Comma-separated object types.
        #[arg(long)]
        types: Option<String>,
        #[arg(long)]
        host: Option<String>,
        #[arg(long)]
        focal_point: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
enum CliqueCommand {
    /// The clique of a focal point as a tree.
    Show {
        focal_point: String,
        #[arg(long)]
        env: String,
        /// RFC 3339: the clique as it was then.
        #[arg(long)]
        at: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
enum SnapshotCommand {
    /// Mark now (or `--at`) under a name.
    Create {
        name: String,
        #[arg(long)]
        env: String,
        #[arg(long, default_value = "")]
        note: String,
        /// RFC 3339: a past point within history.
        #[arg(long)]
        at: Option<String>,
    },
    List {
        #[arg(long)]
        env: String,
    },
    Delete {
        name: String,
        #[arg(long)]
        env: String,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Resource {
    Inventory,
    Links,
    Cliques,
    Agents,
    Messages,
    Scans,
    CliqueTypes,
    Environments,
    Aggregates,
}

#[derive(Debug, clap::Args)]
struct Filters {
    #[arg(long)]
    env: Option<String>,
    #[arg(long = "type")]
    object_type: Option<String>,
    #[arg(long)]
    host: Option<String>,
    #[arg(long)]
    link_type: Option<String>,
    #[arg(long)]
    state: Option<String>,
    #[arg(long)]
    focal_point_type: Option<String>,
    #[arg(long)]
    level: Option<String>,
    /// RFC 3339: as it was then (inventory, links, cliques).
    #[arg(long)]
    at: Option<String>,
    /// At most this many rows (all by default).
    #[arg(long)]
    limit: Option<usize>,
}

#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Session {
    url: String,
    token: String,
    #[serde(default)]
    ca_cert: Option<PathBuf>,
}

fn session_path(cli: &Cli) -> anyhow::Result<PathBuf> {
    if let Some(path) = &cli.session {
        return Ok(path.clone());
    }
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
        .context("neither XDG_CONFIG_HOME nor HOME is set; pass --session")?;
    Ok(base.join("calipso").join("session.json"))
}

fn load_session(cli: &Cli) -> anyhow::Result<Session> {
    let path = session_path(cli)?;
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "not logged in ({} missing): run `calipso login USER`",
            path.display()
        )
    })?;
    serde_json::from_str(&text).with_context(|| format!("{} is not a session file", path.display()))
}

fn save_session(cli: &Cli, session: &Session) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let path = session_path(cli)?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    // `mode` applies only when the file is created: a session file made readable by others
    // since (or by an older version) is closed again before the token goes in.
    file.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    file.write_all(serde_json::to_string(session)?.as_bytes())?;
    Ok(())
}

fn client(cli: &Cli) -> anyhow::Result<ApiClient> {
    let session = load_session(cli)?;
    let url = cli.url.clone().unwrap_or(session.url);
    let client = ApiClient::new(&url)?.with_token(&session.token);
    match cli.ca_cert.as_ref().or(session.ca_cert.as_ref()) {
        Some(ca) => Ok(client.with_ca(ca)?),
        None => Ok(client),
    }
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match run(Cli::parse()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("calipso: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match &cli.command {
        Command::Login { username } => {
            let url = cli
                .url
                .clone()
                .unwrap_or_else(|| "http://127.0.0.1:8080".into());
            let password = match std::env::var("CALIPSO_PASSWORD") {
                Ok(password) => password,
                Err(_) => {
                    eprint!("password for {username}: ");
                    let mut line = String::new();
                    std::io::stdin().lock().read_line(&mut line)?;
                    line.trim_end_matches(['\r', '\n']).to_owned()
                }
            };
            let mut client = ApiClient::new(&url)?;
            if let Some(ca) = &cli.ca_cert {
                client = client.with_ca(ca)?;
            }
            let token = client.login(username, &password).await?;
            let session = Session {
                url: url.clone(),
                token,
                ca_cert: cli.ca_cert.clone(),
            };
            save_session(&cli, &session)?;
            println!("logged in to {url} as {username}");
        }
        Command::Logout => {
            client(&cli)?
                .json(Method::DELETE, "/api/v1/auth/tokens", &[], None)
                .await?;
            std::fs::remove_file(session_path(&cli)?)?;
            println!("logged out");
        }
        Command::Get { resource, filters } => get(&cli, *resource, filters).await?,
        Command::Search {
            pattern,
            env,
            object_type,
        } => {
            let mut query = vec![("env_name", env.as_str()), ("name", pattern.as_str())];
            if let Some(t) = object_type {
                query.push(("type", t));
            }
            let objects = client(&cli)?
                .get_all("/api/v1/inventory", "objects", &query)
                .await?;
            print_rows(&cli, &objects, &["id", "type", "name", "host", "state"]);
        }
        Command::Clique(CliqueCommand::Show {
            focal_point,
            env,
            at,
        }) => {
            let mut query = vec![("env_name", env.as_str())];
            if let Some(at) = at {
                query.push(("at", at));
            }
            let clique = client(&cli)?
                .get(&format!("/api/v1/cliques/{focal_point}"), &query)
                .await?;
            if cli.json {
                println!("{}", serde_json::to_string_pretty(&clique)?);
            } else {
                print!("{}", clique_tree(&clique));
            }
        }
        Command::Impact { objects, env } => {
            let mut query = vec![("env_name", env.as_str())];
            query.extend(objects.iter().map(|o| ("object", o.as_str())));
            let impact = client(&cli)?.get("/api/v1/impact", &query).await?;
            if cli.json {
                println!("{}", serde_json::to_string_pretty(&impact)?);
            } else {
                print!("{}", impact_report(&impact));
            }
        }
        Command::Why { focal_point, env } => {
            let diagnosis = client(&cli)?
                .get(
                    &format!("/api/v1/cliques/{focal_point}/diagnosis"),
                    &[("env_name", env.as_str())],
                )
                .await?;
            if cli.json {
                println!("{}", serde_json::to_string_pretty(&diagnosis)?);
            } else {
                print!("{}", diagnosis_report(&diagnosis));
            }
        }
        Command::Path { from, to, env } => {
            let query = [
                ("env_name", env.as_str()),
                ("from", from.as_str()),
                ("to", to.as_str()),
            ];
            let path = client(&cli)?.get("/api/v1/path", &query).await?;
            if cli.json {
                println!("{}", serde_json::to_string_pretty(&path)?);
            } else {
                print!("{}", path_report(&path));
            }
        }
        Command::Snapshot(command) => snapshot(&cli, command).await?,
        Command::Diff {
            env,
            from,
            to,
            host,
            object_type,
            markdown,
        } => {
            let mut query = vec![
                ("env_name", env.as_str()),
                ("from", from.as_str()),
                ("to", to.as_str()),
            ];
            if let Some(host) = host {
                query.push(("host", host));
            }
            if let Some(object_type) = object_type {
                query.push(("type", object_type));
            }
            let diff = client(&cli)?.get("/api/v1/diff", &query).await?;
            if cli.json {
                println!("{}", serde_json::to_string_pretty(&diff)?);
            } else {
                print!("{}", diff_report(&diff, *markdown));
            }
        }
        Command::Scan {
            env,
            host,
            kind,
            wait,
        } => {
            let client = client(&cli)?;
            let mut body = json!({"environment": env, "kind": kind});
            if let Some(host) = host {
                body["host"] = json!(host);
            }
            let mut scan = client
                .json(Method::POST, "/api/v1/scans", &[], Some(&body))
                .await?;
            let id = scan["id"].as_str().unwrap_or_default().to_owned();
            while *wait && matches!(scan["status"].as_str(), Some("pending" | "running")) {
                tokio::time::sleep(Duration::from_millis(500)).await;
                scan = client.get(&format!("/api/v1/scans/{id}"), &[]).await?;
            }
            print_rows(&cli, &[scan], &["id", "kind", "status", "detail"]);
        }
        Command::Watch {
            env,
            types,
            host,
            focal_point,
        } => watch(&cli, env, types, host, focal_point).await?,
    }
    Ok(())
}

async fn get<'a>(cli: &Cli, resource: Resource, f: &'a Filters) -> anyhow::Result<()> {
    let client = client(cli)?;
    let mut query: Vec<(&str, &'a str)> = Vec::new();
    let mut add = |name: &'static str, value: &'a Option<String>| {
        if let Some(value) = value {
            query.push((name, value.as_str()));
        }
    };
    add("env_name", &f.env);
    let needs_env = |what: &str| -> anyhow::Result<()> {
        if f.env.is_none() {
            bail!("{what} needs --env");
        }
        Ok(())
    };
    let (path, key, columns): (&str, Option<&str>, &[&str]) = match resource {
        Resource::Inventory => {
            needs_env("inventory")?;
            add("type", &f.object_type);
            add("host", &f.host);
            add("state", &f.state);
            add("at", &f.at);
            (
                "/api/v1/inventory",
                Some("objects"),
                &["id", "type", "name", "host", "state"],
            )
        }
        Resource::Links => {
            needs_env("links")?;
            add("link_type", &f.link_type);
            add("host", &f.host);
            add("state", &f.state);
            add("at", &f.at);
            (
                "/api/v1/links",
                Some("links"),
                &["link_type", "source", "target", "state"],
            )
        }
        Resource::Cliques => {
            needs_env("cliques")?;
            add("focal_point_type", &f.focal_point_type);
            add("at", &f.at);
            (
                "/api/v1/cliques",
                Some("cliques"),
                &["focal_point", "focal_point_type", "clique_type"],
            )
        }
        Resource::Agents => (
            "/api/v1/agents",
            None,
            &["host", "environment", "agent_version", "state", "last_seen"],
        ),
        Resource::Messages => {
            add("level", &f.level);
            (
                "/api/v1/messages",
                Some("messages"),
                &["at", "level", "environment", "text"],
            )
        }
        Resource::Scans => {
            needs_env("scans")?;
            (
                "/api/v1/scans",
                None,
                &["id", "kind", "status", "requested_at", "detail"],
            )
        }
        Resource::CliqueTypes => {
            query.clear();
            (
                "/api/v1/clique_types",
                None,
                &["name", "focal_point_type", "environment", "link_types"],
            )
        }
        Resource::Environments => {
            query.clear();
            (
                "/api/v1/environment_configs",
                None,
                &[
                    "name",
                    "environment_type",
                    "mechanism_drivers",
                    "type_drivers",
                ],
            )
        }
        Resource::Aggregates => {
            needs_env("aggregates")?;
            let value = client.get("/api/v1/aggregates", &query).await?;
            println!("{}", serde_json::to_string_pretty(&value)?);
            return Ok(());
        }
    };
    let mut rows = match key {
        Some(key) => client.get_all(path, key, &query).await?,
        None => match client.get(path, &query).await? {
            Value::Array(items) => items,
            other => vec![other],
        },
    };
    if let Some(limit) = f.limit {
        rows.truncate(limit);
    }
    print_rows(cli, &rows, columns);
    Ok(())
}

fn cell(value: &Value) -> String {
    match value {
        Value::Null => "-".into(),
        Value::String(text) => text.clone(),
        Value::Array(items) => items.iter().map(cell).collect::<Vec<_>>().join(","),
        other => other.to_string(),
    }
}

fn print_rows(cli: &Cli, rows: &[Value], columns: &[&str]) {
    if cli.json {
        println!("{}", serde_json::to_string_pretty(rows).unwrap_or_default());
        return;
    }
    let table: Vec<Vec<String>> = rows
        .iter()
        .map(|row| columns.iter().map(|c| cell(&row[*c])).collect())
        .collect();
    let widths: Vec<usize> = columns
        .iter()
        .enumerate()
        .map(|(i, c)| {
            table
                .iter()
                .map(|r| r[i].chars().count())
                .chain([c.len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: Vec<String>| {
        cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_owned()
    };
    println!(
        "{}",
        line(columns.iter().map(|c| c.to_uppercase()).collect())
    );
    for row in table {
        println!("{}", line(row));
    }
    eprintln!("({} rows)", rows.len());
}

async fn snapshot(cli: &Cli, command: &SnapshotCommand) -> anyhow::Result<()> {
    let client = client(cli)?;
    let columns = ["name", "at", "note", "created_by"];
    match command {
        SnapshotCommand::Create {
            name,
            env,
            note,
            at,
        } => {
            let mut body = json!({"env_name": env, "name": name, "note": note});
            if let Some(at) = at {
                body["at"] = json!(at);
            }
            let created = client
                .json(Method::POST, "/api/v1/snapshots", &[], Some(&body))
                .await?;
            print_rows(cli, &[created], &columns);
        }
        SnapshotCommand::List { env } => {
            let list = client
                .get("/api/v1/snapshots", &[("env_name", env.as_str())])
                .await?;
            print_rows(cli, list.as_array().map_or(&[], Vec::as_slice), &columns);
        }
        SnapshotCommand::Delete { name, env } => {
            client
                .json(
                    Method::DELETE,
                    &format!("/api/v1/snapshots/{name}"),
                    &[("env_name", env.as_str())],
                    None,
                )
                .await?;
            println!("snapshot `{name}` deleted");
        }
    }
    Ok(())
}

/// A diff as a review report: text, or Markdown with one section per kind of change.
fn diff_report(diff: &Value, markdown: bool) -> String {
    let list = |value: &Value| value.as_array().cloned().unwrap_or_default();
    let (heading, item) = if markdown { ("## ", "- ") } else { ("", "  ") };
    let mut out = if markdown {
        format!(
            "# Changes in `{}`\n\nFrom **{}** ({}) to **{}** ({}).\n",
            text(&diff["environment"]),
            text(&diff["from"]["point"]),
            text(&diff["from"]["at"]),
            text(&diff["to"]["point"]),
            text(&diff["to"]["at"])
        )
    } else {
        format!(
            "changes in {} from {} ({}) to {} ({})\n",
            text(&diff["environment"]),
            text(&diff["from"]["point"]),
            text(&diff["from"]["at"]),
            text(&diff["to"]["point"]),
            text(&diff["to"]["at"])
        )
    };
    let mut empty = true;
    let mut section = |title: &str, lines: Vec<String>| {
        if lines.is_empty() {
            return;
        }
        empty = false;
        out.push_str(&format!("\n{heading}{title} ({})\n", lines.len()));
        if markdown {
            out.push('\n');
        }
        for line in lines {
            out.push_str(&format!("{item}{line}\n"));
        }
    };
    let code = |s: &str| {
        if markdown {
            format!("`{s}`")
        } else {
            s.to_owned()
        }
    };
    let object = |o: &Value| format!("{} {}", text(&o["type"]), code(text(&o["id"])));
    let objects = &diff["objects"];
    section(
        "objects added",
        list(&objects["added"]).iter().map(object).collect(),
    );
    section(
        "objects removed",
        list(&objects["removed"]).iter().map(object).collect(),
    );
    section(
        "objects changed",
        list(&objects["changed"])
            .iter()
            .map(|o| {
                let changes: Vec<String> = list(&o["changes"])
                    .iter()
                    .map(|c| format!("{}: {} → {}", text(&c["path"]), c["from"], c["to"]))
                    .collect();
                format!("{} ({})", object(o), changes.join("; "))
            })
            .collect(),
    );
    let link = |l: &Value| {
        format!(
            "{} {} → {}",
            text(&l["link_type"]),
            code(text(&l["source"])),
            code(text(&l["target"]))
        )
    };
    let links = &diff["links"];
    section(
        "links added",
        list(&links["added"]).iter().map(link).collect(),
    );
    section(
        "links removed",
        list(&links["removed"]).iter().map(link).collect(),
    );
    section(
        "links changing state",
        list(&links["state_changed"])
            .iter()
            .map(|l| format!("{}: {} → {}", link(l), text(&l["from"]), text(&l["to"])))
            .collect(),
    );
    let cliques = &diff["cliques"];
    let focal = |v: &Value| code(text(v));
    section(
        "cliques added",
        list(&cliques["added"]).iter().map(focal).collect(),
    );
    section(
        "cliques removed",
        list(&cliques["removed"]).iter().map(focal).collect(),
    );
    section(
        "cliques whose members changed",
        list(&cliques["changed"])
            .iter()
            .map(|c| {
                let ids = |key: &str| {
                    list(&c[key])
                        .iter()
                        .map(|v| code(text(v)))
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                format!(
                    "{}: +[{}] -[{}]",
                    code(text(&c["focal_point"])),
                    ids("added_nodes"),
                    ids("removed_nodes")
                )
            })
            .collect(),
    );
    if empty {
        out.push_str("\nNo changes.\n");
    }
    out
}

fn text(value: &Value) -> &str {
    value.as_str().unwrap_or("?")
}

/// A chain of hops on one line: `a → [link] b → …`.
fn chain(hops: &Value) -> String {
    let mut out = String::new();
    for hop in hops.as_array().into_iter().flatten() {
        if let Some(link) = hop["link_type"].as_str() {
            out.push_str(&format!(" → [{link}] "));
        }
        out.push_str(text(&hop["id"]));
    }
    out
}

fn impact_report(impact: &Value) -> String {
    let mut out = format!(
        "{} objects depend on {}\n",
        impact["total"],
        impact["objects"]
            .as_array()
            .into_iter()
            .flatten()
            .map(text)
            .collect::<Vec<_>>()
            .join(", ")
    );
    for (kind, dependents) in impact["dependents"].as_object().into_iter().flatten() {
        out.push_str(&format!("\n{kind}:\n"));
        for dependent in dependents.as_array().into_iter().flatten() {
            out.push_str(&format!(
                "  {}  {}  ({})\n    via {}\n",
                text(&dependent["id"]),
                text(&dependent["name"]),
                text(&dependent["state"]),
                chain(&dependent["path"])
            ));
        }
    }
    out
}

fn diagnosis_report(diagnosis: &Value) -> String {
    let mut out = format!("{}\n", text(&diagnosis["summary"]));
    for (rank, finding) in diagnosis["findings"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        let problems: Vec<&str> = finding["problems"]
            .as_array()
            .into_iter()
            .flatten()
            .map(text)
            .collect();
        out.push_str(&format!(
            "{}. {} {}: {}{}\n   {}\n",
            rank + 1,
            text(&finding["type"]),
            text(&finding["id"]),
            problems.join(", "),
            finding["since"]
                .as_str()
                .map(|s| format!(" since {s}"))
                .unwrap_or_default(),
            chain(&finding["path"])
        ));
    }
    out
}

fn path_report(path: &Value) -> String {
    let mut out = format!("{}\n", text(&path["summary"]));
    for hop in path["hops"].as_array().into_iter().flatten() {
        let down = hop["state"] == "down" || hop["link_state"] == "down";
        out.push_str(&format!(
            "  {:<10} {:<60} {:<5} {}{}\n",
            text(&hop["type"]),
            text(&hop["id"]),
            text(&hop["state"]),
            hop["link_type"]
                .as_str()
                .map(|l| format!("over {l} ({})", text(&hop["link_state"])))
                .unwrap_or_default(),
            if down { "  <- down" } else { "" }
        ));
    }
    out
}

/// The clique as a tree from its focal point: each object under the one it was reached from,
/// with the link type that reached it; objects reached twice are marked.
fn clique_tree(clique: &Value) -> String {
    let mut adjacent: BTreeMap<&str, Vec<(&str, &str)>> = BTreeMap::new();
    for link in clique["links"].as_array().into_iter().flatten() {
        let (Some(source), Some(target), Some(kind)) = (
            link["source"].as_str(),
            link["target"].as_str(),
            link["link_type"].as_str(),
        ) else {
            continue;
        };
        adjacent.entry(source).or_default().push((target, kind));
        adjacent.entry(target).or_default().push((source, kind));
    }
    let focal = clique["focal_point"].as_str().unwrap_or("?");
    let mut out = format!(
        "{focal}  (clique type {})\n",
        clique["clique_type"].as_str().unwrap_or("?")
    );
    let mut seen: BTreeSet<&str> = BTreeSet::from([focal]);
    render(&adjacent, focal, "", &mut seen, &mut out);
    out
}

fn render<'a>(
    adjacent: &BTreeMap<&'a str, Vec<(&'a str, &'a str)>>,
    node: &'a str,
    prefix: &str,
    seen: &mut BTreeSet<&'a str>,
    out: &mut String,
) {
    let children: Vec<(&str, &str)> = adjacent.get(node).cloned().unwrap_or_default();
    let count = children.len();
    for (index, (child, kind)) in children.into_iter().enumerate() {
        let last = index + 1 == count;
        let branch = if last { "└─" } else { "├─" };
        let again = !seen.insert(child);
        out.push_str(&format!(
            "{prefix}{branch} [{kind}] {child}{}\n",
            if again { " (see above)" } else { "" }
        ));
        if !again {
            let deeper = format!("{prefix}{}", if last { "   " } else { "│  " });
            render(adjacent, child, &deeper, seen, out);
        }
    }
}

async fn watch(
    cli: &Cli,
    env: &Option<String>,
    types: &Option<String>,
    host: &Option<String>,
    focal_point: &Option<String>,
) -> anyhow::Result<()> {
    let client = client(cli)?;
    let mut query: Vec<(&str, &str)> = Vec::new();
    for (name, value) in [
        ("env_name", env),
        ("types", types),
        ("host", host),
        ("focal_point", focal_point),
    ] {
        if let Some(value) = value {
            query.push((name, value.as_str()));
        }
    }
    let mut last_id: Option<String> = None;
    loop {
        let mut events = match client.events(&query, last_id.as_deref()).await {
            Ok(events) => Box::pin(events),
            Err(err @ calipso_aggregator::client::ClientError::Api { .. }) => {
                return Err(err.into());
            }
            Err(err) => {
                eprintln!("calipso: {err}; reconnecting");
                tokio::time::sleep(Duration::from_secs(2)).await;
                continue;
            }
        };
        while let Some(event) = events.next().await {
            if event.event == "reset" {
                eprintln!("calipso: {}", event.data);
                continue;
            }
            last_id = event.id.clone().or(last_id);
            if cli.json {
                println!("{}", event.data);
                continue;
            }
            let data: Value = serde_json::from_str(&event.data).unwrap_or_default();
            println!(
                "{}  {:<6} {:<6} {:<10} {}",
                data["at"].as_str().unwrap_or("?"),
                data["action"].as_str().unwrap_or("?"),
                data["kind"].as_str().unwrap_or("?"),
                data["item_type"].as_str().unwrap_or("?"),
                data["key"].as_str().unwrap_or("?"),
            );
        }
        eprintln!("calipso: the stream ended; resuming");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
