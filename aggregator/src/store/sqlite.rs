use std::path::Path;
use std::str::FromStr;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use super::rows::{self, shared_methods};
use super::{Batch, Store, StoreError};

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
            .busy_timeout(std::time::Duration::from_secs(10));
        // Writes are serialized by the committer; a few connections serve history reads.
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await?;
        sqlx::migrate!("./migrations/sqlite").run(&pool).await?;
        Ok(SqliteStore { pool })
    }
}

impl Store for SqliteStore {
    shared_methods!();

    async fn commit(&self, batch: &Batch) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        let p = rows::prepare(batch)?;
        let mut tx = self.pool.begin().await?;
        let [envs, ids] = &p.objects.keys;
        for (env, id) in envs.iter().zip(ids) {
            sqlx::query(
                "UPDATE objects SET valid_to = $1 WHERE environment = $2 AND id = $3 AND valid_to IS NULL",
            )
            .bind(p.at)
            .bind(env)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        }
        let o = &p.object_rows;
        for (row, &key) in p.objects.inserted.iter().enumerate() {
            sqlx::query(
                "INSERT INTO objects (environment, id, valid_from, object_type, host, stale, \
                 first_seen, last_seen, body) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            )
            .bind(&envs[key])
            .bind(&ids[key])
            .bind(p.at)
            .bind(&o.object_type[row])
            .bind(&o.host[row])
            .bind(o.stale[row])
            .bind(o.first_seen[row])
            .bind(o.last_seen[row])
            .bind(&o.body[row])
            .execute(&mut *tx)
            .await?;
        }
        let [envs, types, sources, targets] = &p.links.keys;
        for key in 0..p.links.len() {
            sqlx::query(
                "UPDATE links SET valid_to = $1 WHERE environment = $2 AND link_type = $3 \
                 AND source_id = $4 AND target_id = $5 AND valid_to IS NULL",
            )
            .bind(p.at)
            .bind(&envs[key])
            .bind(&types[key])
            .bind(&sources[key])
            .bind(&targets[key])
            .execute(&mut *tx)
            .await?;
        }
        for (row, &key) in p.links.inserted.iter().enumerate() {
            sqlx::query(
                "INSERT INTO links (environment, link_type, source_id, target_id, valid_from, \
                 state, body) VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(&envs[key])
            .bind(&types[key])
            .bind(&sources[key])
            .bind(&targets[key])
            .bind(p.at)
            .bind(&p.link_rows.state[row])
            .bind(&p.link_rows.body[row])
            .execute(&mut *tx)
            .await?;
        }
        let [envs, focals] = &p.cliques.keys;
        for (env, focal) in envs.iter().zip(focals) {
            sqlx::query(
                "UPDATE cliques SET valid_to = $1 WHERE environment = $2 AND focal_point = $3 \
                 AND valid_to IS NULL",
            )
            .bind(p.at)
            .bind(env)
            .bind(focal)
            .execute(&mut *tx)
            .await?;
        }
        for (row, &key) in p.cliques.inserted.iter().enumerate() {
            sqlx::query(
                "INSERT INTO cliques (environment, focal_point, valid_from, body) VALUES ($1, $2, $3, $4)",
            )
            .bind(&envs[key])
            .bind(&focals[key])
            .bind(p.at)
            .bind(&p.clique_bodies[row])
            .execute(&mut *tx)
            .await?;
        }
        rows::write_small_tables!(tx, p);
        tx.commit().await?;
        Ok(())
    }
}
