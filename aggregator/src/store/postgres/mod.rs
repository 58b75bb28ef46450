mod bulk;

use sqlx::postgres::{PgPool, PgPoolOptions};

use bulk::{Table, write_rows};

use super::records::record_methods;
use super::rows::{self, Versioned, shared_methods};
use super::{Batch, Store, StoreError};

/// The production store. A batch closes the versions it replaces with one array-bound
/// `UPDATE … FROM UNNEST` per table and writes the new ones in bulk (`COPY`, or one
/// array-bound `INSERT` for a few thousand rows or fewer), so a group commit costs a handful
/// of round trips whatever its size.
#[derive(Debug, Clone)]
pub struct PostgresStore {
    pool: PgPool,
}

impl PostgresStore {
    /// Connects to a `postgres://` URL and applies the migrations.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let pool = PgPoolOptions::new().max_connections(8).connect(url).await?;
        sqlx::migrate!("./migrations/postgres").run(&pool).await?;
        Ok(PostgresStore { pool })
    }

    /// The pool, for tests that need to inspect or reset the database.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}

impl Store for PostgresStore {
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
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    batch: &Batch,
) -> Result<(), StoreError> {
    let p = rows::prepare(batch)?;
    if !p.objects.is_empty() {
        let [envs, ids] = &p.objects.keys;
        close_current(tx, &OBJECTS, &p.objects, p.at).await?;
        let rows = p.objects.inserted.iter().zip(&p.object_rows);
        write_rows(tx, &OBJECTS, rows, |row, (&k, node)| {
            row.text(&envs[k])
                .text(&ids[k])
                .int(p.at)
                .text(node.object.object_type.as_str());
            row.optional(node.object.host.as_deref())
                .boolean(node.stale)
                .int(node.first_seen.unix_micros())
                .int(node.last_seen.unix_micros())
                .json("object", &node.object)?
                .end_row();
            Ok(())
        })
        .await?;
    }
    if !p.links.is_empty() {
        let [envs, types, sources, targets] = &p.links.keys;
        close_current(tx, &LINKS, &p.links, p.at).await?;
        write_rows(
            tx,
            &LINKS,
            p.links.inserted.iter().enumerate(),
            |row, (r, &k)| {
                row.text(&envs[k])
                    .text(&types[k])
                    .text(&sources[k])
                    .text(&targets[k]);
                row.int(p.at)
                    .text(&p.link_rows.state[r])
                    .text(&p.link_rows.body[r])
                    .end_row();
                Ok(())
            },
        )
        .await?;
    }
    if !p.cliques.is_empty() {
        let [envs, focals] = &p.cliques.keys;
        close_current(tx, &CLIQUES, &p.cliques, p.at).await?;
        write_rows(
            tx,
            &CLIQUES,
            p.cliques.inserted.iter().enumerate(),
            |row, (r, &k)| {
                row.text(&envs[k])
                    .text(&focals[k])
                    .int(p.at)
                    .text(&p.clique_bodies[r])
                    .end_row();
                Ok(())
            },
        )
        .await?;
    }
    rows::write_small_tables!(tx, p);
    Ok(())
}

const OBJECTS: Table<2> = Table {
    name: "objects",
    columns: &[
        ("environment", "text"),
        ("id", "text"),
        ("valid_from", "bigint"),
        ("object_type", "text"),
        ("host", "text"),
        ("stale", "boolean"),
        ("first_seen", "bigint"),
        ("last_seen", "bigint"),
        ("body", "text"),
    ],
};

const LINKS: Table<4> = Table {
    name: "links",
    columns: &[
        ("environment", "text"),
        ("link_type", "text"),
        ("source_id", "text"),
        ("target_id", "text"),
        ("valid_from", "bigint"),
        ("state", "text"),
        ("body", "text"),
    ],
};

const CLIQUES: Table<2> = Table {
    name: "cliques",
    columns: &[
        ("environment", "text"),
        ("focal_point", "text"),
        ("valid_from", "bigint"),
        ("body", "text"),
    ],
};

/// Ends, at `at`, the current version of each key `versions` closes: one statement binding
/// a text array per key column, joined to the table's current-row index.
async fn close_current<const N: usize>(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    table: &Table<N>,
    versions: &Versioned<N>,
    at: i64,
) -> Result<(), StoreError> {
    if versions.closed.is_empty() {
        return Ok(());
    }
    let key_columns: Vec<&str> = table.key_columns().collect();
    let arrays: Vec<String> = (0..N).map(|i| format!("${}::text[]", i + 2)).collect();
    let matches: Vec<String> = key_columns
        .iter()
        .map(|column| format!("o.{column} = k.{column}"))
        .collect();
    let sql = format!(
        "UPDATE {} AS o SET valid_to = $1 FROM UNNEST({}) AS k({}) \
         WHERE {} AND o.valid_to IS NULL",
        table.name,
        arrays.join(", "),
        key_columns.join(", "),
        matches.join(" AND "),
    );
    let mut close = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(at);
    for part in 0..N {
        close = close.bind(versions.closed_column(part));
    }
    close.execute(&mut **tx).await?;
    Ok(())
}
