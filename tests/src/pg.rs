//! PostgreSQL for the tests: the server `DATABASE_URL` names (the test command exports one
//! when a server answers), or else an ephemeral cluster this process starts in a temporary
//! directory (initdb and pg_ctl as the `postgres` user) and stops when the last database it
//! serves is dropped. Every test gets a database of its own.

use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Mutex, Weak};

use anyhow::{Context, bail};
use sqlx::Connection;
use sqlx::postgres::PgConnection;

/// An ephemeral cluster; stopped on drop.
#[derive(Debug)]
struct Cluster {
    dir: tempfile::TempDir,
    admin_url: String,
}

impl Cluster {
    fn start() -> anyhow::Result<Self> {
        let bin = postgres_bin_dir()?;
        let dir = tempfile::Builder::new().prefix("calipso-pg-").tempdir()?;
        let data = dir.path().join("data");
        let chown = Command::new("chown")
            .arg("postgres:postgres")
            .arg(dir.path())
            .status()?;
        if !chown.success() {
            bail!("cannot hand {} to the postgres user", dir.path().display());
        }
        let port = free_port()?;
        as_postgres(
            &bin.join("initdb"),
            &[
                "-D",
                &data.to_string_lossy(),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-locale",
            ],
        )?;
        let options = format!(
            "-c listen_addresses=127.0.0.1 -p {port} -k {} -c fsync=off",
            dir.path().display()
        );
        as_postgres(
            &bin.join("pg_ctl"),
            &[
                "-D",
                &data.to_string_lossy(),
                "-l",
                &dir.path().join("pg.log").to_string_lossy(),
                "-o",
                &options,
                "-w",
                "start",
            ],
        )?;
        Ok(Cluster {
            dir,
            admin_url: format!("postgres://postgres@127.0.0.1:{port}/postgres"),
        })
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let Ok(bin) = postgres_bin_dir() {
            let data = self.dir.path().join("data");
            let _ = as_postgres(
                &bin.join("pg_ctl"),
                &[
                    "-D",
                    &data.to_string_lossy(),
                    "-m",
                    "immediate",
                    "-w",
                    "stop",
                ],
            );
        }
    }
}

fn postgres_bin_dir() -> anyhow::Result<PathBuf> {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .context("PostgreSQL is not installed (/usr/lib/postgresql); `bash tests/run` installs it")?
        .filter_map(Result::ok)
        .map(|e| e.path().join("bin"))
        .filter(|bin| bin.join("initdb").exists())
        .collect();
    versions.sort();
    versions
        .pop()
        .context("no initdb under /usr/lib/postgresql/*/bin")
}

fn as_postgres(program: &std::path::Path, args: &[&str]) -> anyhow::Result<()> {
    let output = Command::new("runuser")
        .args(["-u", "postgres", "--"])
        .arg(program)
        .args(args)
        .output()
        .with_context(|| format!("running {}", program.display()))?;
    if !output.status.success() {
        bail!(
            "{} failed: {}",
            program.display(),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}

fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

static CLUSTER: Mutex<Weak<Cluster>> = Mutex::new(Weak::new());

/// A database of its own for one test; dropped from the server by [`TestDatabase::drop_database`].
#[derive(Debug)]
pub struct TestDatabase {
    pub url: String,
    admin_url: String,
    name: String,
    _cluster: Option<Arc<Cluster>>,
}

/// Replaces the database name (the path) of a postgres URL.
fn with_database(url: &str, database: &str) -> String {
    let (base, query) = url.split_once('?').map_or((url, ""), |(b, q)| (b, q));
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let path_start = base[scheme_end..]
        .find('/')
        .map_or(base.len(), |i| scheme_end + i);
    let mut out = format!("{}/{database}", &base[..path_start]);
    if !query.is_empty() {
        out.push('?');
        out.push_str(query);
    }
    out
}

impl TestDatabase {
    pub async fn create() -> anyhow::Result<Self> {
        let (admin_url, cluster) = match std::env::var("DATABASE_URL") {
            Ok(url) if !url.is_empty() => (url, None),
            _ => {
                let cluster = {
                    let mut shared = CLUSTER.lock().unwrap_or_else(|p| p.into_inner());
                    match shared.upgrade() {
                        Some(cluster) => cluster,
                        None => {
                            let cluster = Arc::new(Cluster::start()?);
                            *shared = Arc::downgrade(&cluster);
                            cluster
                        }
                    }
                };
                (cluster.admin_url.clone(), Some(cluster))
            }
        };
        let name = format!(
            "calipso_test_{}_{:08x}",
            std::process::id(),
            rand::random::<u32>()
        );
        let mut admin = PgConnection::connect(&admin_url)
            .await
            .with_context(|| format!("connecting to {admin_url}"))?;
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut admin)
            .await?;
        admin.close().await?;
        Ok(TestDatabase {
            url: with_database(&admin_url, &name),
            admin_url,
            name,
            _cluster: cluster,
        })
    }

    /// Drops the database (connections to it are terminated first).
    pub async fn drop_database(self) -> anyhow::Result<()> {
        let mut admin = PgConnection::connect(&self.admin_url).await?;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        )))
        .execute(&mut admin)
        .await?;
        admin.close().await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::with_database;

    #[test]
    fn database_names_are_replaced_in_urls() {
        assert_eq!(
            with_database("postgres://u@h:5432/test", "x"),
            "postgres://u@h:5432/x"
        );
        assert_eq!(
            with_database("postgres://u@h:5432/test?sslmode=disable", "x"),
            "postgres://u@h:5432/x?sslmode=disable"
        );
        assert_eq!(with_database("postgres://h", "x"), "postgres://h/x");
    }
}
