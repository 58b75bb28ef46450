use std::path::Path;
use std::str::FromStr;

use sqlx::QueryBuilder;
use sqlx::sqlite::{
    Sqlite, SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteSynchronous,
};

use super::records::record_methods;
use super::rows::{self, shared_methods};
use super::{Batch, Store, StoreError, encode};

/// Rows per statement: sqlx runs each SQLite statement on a worker thread, so a statement per
/// row would cost more in hand-offs than in SQLite; 200 rows of 9 columns stay far below
/// SQLite's limit of bound parameters.
const CHUNK: usize = 200;

const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_millis(200);

/// The embedded store: one SQLite file, written ahead (WAL) and synced on every commit, so an
/// acknowledged delta survives a crash of the process or the machine.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
}

impl SqliteStore {
    /// Opens (creating if needed) the database file and applies the migrations.
    pub async fn open(path: &Path) -> Result<Self, StoreError> {
        let options = SqliteConnectOptions::new().filename(path);
        Self::with_options(options).await
    }

    /// Opens a `sqlite:` URL (`sqlite://path/to/file.db`, `sqlite::memory:`).
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        Self::with_options(SqliteConnectOptions::from_str(url)?).await
    }

    async fn with_options(options: SqliteConnectOptions) -> Result<Self, StoreError> {
        let options = options
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(std::time::Duration::from_secs(10))
            // A commit must not pay for the checkpoint: after a burst of snapshots the log
            // holds gigabytes, and copying it back inside the next small commit stalled acks
            // for a second. A background task checkpoints instead.
            .pragma("wal_autocheckpoint", "0");
        let database = options.get_filename().to_owned();
        // Writes are serialized by the committer; a few connections serve history reads.
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await?;
        sqlx::migrate!("./migrations/sqlite").run(&pool).await?;
        owner_only(&database)?;
        tokio::spawn(checkpoint(pool.clone()));
        Ok(SqliteStore { pool })
    }
}

/// Makes the database file and its log readable by the aggregator's user alone: they hold
/// password hashes and environment secrets. SQLite gives the log files it creates later the
/// database file's mode.
fn owner_only(database: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::PermissionsExt;
    let name = database.as_os_str().to_string_lossy();
    if name.is_empty() || name == ":memory:" {
        return Ok(());
    }
    for suffix in ["", "-wal", "-shm"] {
        let path = std::path::PathBuf::from(format!("{name}{suffix}"));
        match std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)) {
            Ok(()) => {}
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => return Err(StoreError::Permissions { path, source }),
        }
    }
    Ok(())
}

/// Copies the write-ahead log back into the database five times a second (so a burst never
/// leaves gigabytes to copy at once), without blocking writers
/// (`PASSIVE`), until the pool closes.
async fn checkpoint(pool: SqlitePool) {
    let mut tick = tokio::time::interval(CHECKPOINT_EVERY);
    loop {
        tick.tick().await;
        if pool.is_closed() {
            return;
        }
        if let Err(err) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
            .execute(&pool)
            .await
        {
            if pool.is_closed() {
                return;
            }
            tracing::warn!(%err, "SQLite checkpoint failed; retrying");
        }
    }
}

impl Store for SqliteStore {
    shared_methods!();
    record_methods!();

    async fn commit_all(&self, batches: &[&Batch]) -> Result<(), StoreError> {
        if batches.iter().all(|batch| batch.is_empty()) {
            return Ok(());
        }
        let mut tx = self.pool.begin().await?;
        for batch in batches.iter().filter(|batch| !batch.is_empty()) {
            write_batch(&mut tx, batch).await?;
        }
        tx.commit().await?;
        Ok(())
    }
}

/// Writes one batch's versions and small tables inside `tx`.
async fn write_batch(
    tx: &mut sqlx::Transaction<'_, Sqlite>,
    batch: &Batch,
) -> Result<(), StoreError> {
    let p = rows::prepare(batch)?;
    close_current(tx, "objects", ["environment", "id"], &p.objects, p.at).await?;
    let [envs, ids] = &p.objects.keys;
    let o = &p.object_rows;
    let inserted: Vec<(usize, usize)> = p.objects.inserted.iter().copied().enumerate().collect();
    for chunk in inserted.chunks(CHUNK) {
        let bodies = chunk
            .iter()
            .map(|&(r, _)| encode("object", &o[r].object))
            .collect::<Result<Vec<_>, _>>()?;
        let mut insert = QueryBuilder::<Sqlite>::new(
            "INSERT INTO objects (environment, id, valid_from, object_type, host, stale, \
                 first_seen, last_seen, body) ",
        );
        insert.push_values(chunk.iter().zip(bodies), |mut row, (&(r, k), body)| {
            let node = o[r];
            row.push_bind(&envs[k])
                .push_bind(&ids[k])
                .push_bind(p.at)
                .push_bind(node.object.object_type.as_str())
                .push_bind(node.object.host.as_deref())
                .push_bind(node.stale)
                .push_bind(node.first_seen.unix_micros())
                .push_bind(node.last_seen.unix_micros())
                .push_bind(body);
        });
        insert.build().execute(&mut **tx).await?;
    }
    close_current(
        tx,
        "links",
        ["environment", "link_type", "source_id", "target_id"],
        &p.links,
        p.at,
    )
    .await?;
    let [envs, types, sources, targets] = &p.links.keys;
    let inserted: Vec<(usize, usize)> = p.links.inserted.iter().copied().enumerate().collect();
    for chunk in inserted.chunks(CHUNK) {
        let mut insert = QueryBuilder::<Sqlite>::new(
            "INSERT INTO links (environment, link_type, source_id, target_id, valid_from, \
                 state, body) ",
        );
        insert.push_values(chunk, |mut row, &(r, k)| {
            row.push_bind(&envs[k])
                .push_bind(&types[k])
                .push_bind(&sources[k])
                .push_bind(&targets[k])
                .push_bind(p.at)
                .push_bind(&p.link_rows.state[r])
                .push_bind(&p.link_rows.body[r]);
        });
        insert.build().execute(&mut **tx).await?;
    }
    close_current(
        tx,
        "cliques",
        ["environment", "focal_point"],
        &p.cliques,
        p.at,
    )
    .await?;
    let [envs, focals] = &p.cliques.keys;
    let inserted: Vec<(usize, usize)> = p.cliques.inserted.iter().copied().enumerate().collect();
    for chunk in inserted.chunks(CHUNK) {
        let mut insert = QueryBuilder::<Sqlite>::new(
            "INSERT INTO cliques (environment, focal_point, valid_from, body) ",
        );
        insert.push_values(chunk, |mut row, &(r, k)| {
            row.push_bind(&envs[k])
                .push_bind(&focals[k])
                .push_bind(p.at)
                .push_bind(&p.clique_bodies[r]);
        });
        insert.build().execute(&mut **tx).await?;
    }
    rows::write_small_tables!(tx, p);
    Ok(())
}

/// Ends, at `at`, the current version of each key `versions` closes. The keys are joined to the
/// table's current-row index (`<table>_current`) from a VALUES list: SQLite answers a row-value
/// `IN` of more than one tuple by scanning that whole index, which for a fleet's store made
/// every small commit cost a scan of every current row.
async fn close_current<const N: usize>(
    tx: &mut sqlx::Transaction<'_, Sqlite>,
    table: &str,
    columns: [&str; N],
    versions: &rows::Versioned<N>,
    at: i64,
) -> Result<(), StoreError> {
    let matches: Vec<String> = columns
        .iter()
        .enumerate()
        .map(|(i, column)| format!("o.{column} = k.column{}", i + 1))
        .collect();
    for chunk in versions.closed.chunks(CHUNK) {
        let mut close = QueryBuilder::<Sqlite>::new(format!("UPDATE {table} SET valid_to = "));
        close.push_bind(at);
        close.push(" WHERE rowid IN (SELECT o.rowid FROM (");
        close.push_values(chunk, |mut row, &k| {
            for part in &versions.keys {
                row.push_bind(&part[k]);
            }
        });
        close.push(format!(
            ") AS k CROSS JOIN {table} AS o ON {} AND o.valid_to IS NULL)",
            matches.join(" AND ")
        ));
        close.build().execute(&mut **tx).await?;
    }
    Ok(())
}
