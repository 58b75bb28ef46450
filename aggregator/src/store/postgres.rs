use sqlx::postgres::{PgPool, PgPoolOptions};

use super::rows::{self, shared_methods};
use super::{Batch, Store, StoreError};

/// The production store. Batches are written with one array-bound statement per table
/// (`UNNEST`), so a group commit costs a handful of round trips whatever its size.
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

    async fn commit(&self, batch: &Batch) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        let p = rows::prepare(batch)?;
        let mut tx = self.pool.begin().await?;
        if !p.objects.is_empty() {
            let [envs, ids] = &p.objects.keys;
            sqlx::query(
                "UPDATE objects AS o SET valid_to = $1 \
                 FROM UNNEST($2::text[], $3::text[]) AS k(environment, id) \
                 WHERE o.environment = k.environment AND o.id = k.id AND o.valid_to IS NULL",
            )
            .bind(p.at)
            .bind(envs)
            .bind(ids)
            .execute(&mut *tx)
            .await?;
            let o = &p.object_rows;
            sqlx::query(
                "INSERT INTO objects (environment, id, valid_from, object_type, host, stale, \
                 first_seen, last_seen, body) \
                 SELECT e, i, $1, t, h, s, f, l, b FROM UNNEST($2::text[], $3::text[], \
                 $4::text[], $5::text[], $6::bool[], $7::int8[], $8::int8[], $9::text[]) \
                 AS r(e, i, t, h, s, f, l, b)",
            )
            .bind(p.at)
            .bind(p.objects.inserted_column(0))
            .bind(p.objects.inserted_column(1))
            .bind(&o.object_type)
            .bind(&o.host)
            .bind(&o.stale)
            .bind(&o.first_seen)
            .bind(&o.last_seen)
            .bind(&o.body)
            .execute(&mut *tx)
            .await?;
        }
        if !p.links.is_empty() {
            let [envs, types, sources, targets] = &p.links.keys;
            sqlx::query(
                "UPDATE links AS o SET valid_to = $1 \
                 FROM UNNEST($2::text[], $3::text[], $4::text[], $5::text[]) AS k(e, t, s, d) \
                 WHERE o.environment = k.e AND o.link_type = k.t AND o.source_id = k.s \
                 AND o.target_id = k.d AND o.valid_to IS NULL",
            )
            .bind(p.at)
            .bind(envs)
            .bind(types)
            .bind(sources)
            .bind(targets)
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "INSERT INTO links (environment, link_type, source_id, target_id, valid_from, \
                 state, body) SELECT e, t, s, d, $1, st, b FROM UNNEST($2::text[], $3::text[], \
                 $4::text[], $5::text[], $6::text[], $7::text[]) AS r(e, t, s, d, st, b)",
            )
            .bind(p.at)
            .bind(p.links.inserted_column(0))
            .bind(p.links.inserted_column(1))
            .bind(p.links.inserted_column(2))
            .bind(p.links.inserted_column(3))
            .bind(&p.link_rows.state)
            .bind(&p.link_rows.body)
            .execute(&mut *tx)
            .await?;
        }
        if !p.cliques.is_empty() {
            let [envs, focals] = &p.cliques.keys;
            sqlx::query(
                "UPDATE cliques AS o SET valid_to = $1 \
                 FROM UNNEST($2::text[], $3::text[]) AS k(e, f) \
                 WHERE o.environment = k.e AND o.focal_point = k.f AND o.valid_to IS NULL",
            )
            .bind(p.at)
            .bind(envs)
            .bind(focals)
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "INSERT INTO cliques (environment, focal_point, valid_from, body) \
                 SELECT e, f, $1, b FROM UNNEST($2::text[], $3::text[], $4::text[]) AS r(e, f, b)",
            )
            .bind(p.at)
            .bind(p.cliques.inserted_column(0))
            .bind(p.cliques.inserted_column(1))
            .bind(&p.clique_bodies)
            .execute(&mut *tx)
            .await?;
        }
        rows::write_small_tables!(tx, p);
        tx.commit().await?;
        Ok(())
    }
}
