use serde::Serialize;
use sqlx::postgres::{PgPool, PgPoolOptions};

use super::records::record_methods;
use super::rows::{self, Versioned, shared_methods};
use super::{Batch, Store, StoreError};

/// The production store. A batch closes the versions it replaces with one array-bound
/// `UPDATE … FROM UNNEST` per table and writes the new ones with `COPY`, so a group commit
/// costs a handful of round trips whatever its size.
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

    async fn commit(&self, batch: &Batch) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        let p = rows::prepare(batch)?;
        let mut tx = self.pool.begin().await?;
        if !p.objects.is_empty() {
            let [envs, ids] = &p.objects.keys;
            close_current(&mut tx, "objects", ["environment", "id"], &p.objects, p.at).await?;
            let rows = p.objects.inserted.iter().zip(&p.object_rows);
            copy_in(
                &mut tx,
                "COPY objects (environment, id, valid_from, object_type, host, stale, \
                 first_seen, last_seen, body) FROM STDIN",
                rows,
                |row, (&k, node)| {
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
                },
            )
            .await?;
        }
        if !p.links.is_empty() {
            let [envs, types, sources, targets] = &p.links.keys;
            let key_columns = ["environment", "link_type", "source_id", "target_id"];
            close_current(&mut tx, "links", key_columns, &p.links, p.at).await?;
            copy_in(
                &mut tx,
                "COPY links (environment, link_type, source_id, target_id, valid_from, state, \
                 body) FROM STDIN",
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
            let key_columns = ["environment", "focal_point"];
            close_current(&mut tx, "cliques", key_columns, &p.cliques, p.at).await?;
            copy_in(
                &mut tx,
                "COPY cliques (environment, focal_point, valid_from, body) FROM STDIN",
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
        tx.commit().await?;
        Ok(())
    }
}

/// Ends, at `at`, the current version of each key `versions` closes: one statement binding
/// a text array per key column, joined to the table's current-row index.
async fn close_current<const N: usize>(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    table: &str,
    key_columns: [&str; N],
    versions: &Versioned<N>,
    at: i64,
) -> Result<(), StoreError> {
    if versions.closed.is_empty() {
        return Ok(());
    }
    let arrays: Vec<String> = (0..N).map(|i| format!("${}::text[]", i + 2)).collect();
    let matches: Vec<String> = key_columns
        .iter()
        .map(|column| format!("o.{column} = k.{column}"))
        .collect();
    let sql = format!(
        "UPDATE {table} AS o SET valid_to = $1 FROM UNNEST({}) AS k({}) \
         WHERE {} AND o.valid_to IS NULL",
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

/// Rows in `COPY … FROM STDIN` text format: tab-separated fields, `\N` for NULL, backslash,
/// tab, newline and carriage return escaped.
#[derive(Debug, Default)]
struct CopyRows {
    data: Vec<u8>,
    /// Whether the current row has a field yet (fields after the first get a tab).
    in_row: bool,
}

impl CopyRows {
    fn separate(&mut self) {
        if self.in_row {
            self.data.push(b'\t');
        }
        self.in_row = true;
    }

    fn text(&mut self, value: &str) -> &mut Self {
        self.separate();
        escape_into(&mut self.data, value.as_bytes());
        self
    }

    /// A value as JSON, encoded straight into the row.
    fn json(&mut self, what: &str, value: &impl Serialize) -> Result<&mut Self, StoreError> {
        self.separate();
        serde_json::to_writer(Escaping(&mut self.data), value).map_err(|source| {
            StoreError::Encode {
                what: what.to_owned(),
                source,
            }
        })?;
        Ok(self)
    }

    fn optional(&mut self, value: Option<&str>) -> &mut Self {
        match value {
            Some(value) => self.text(value),
            None => {
                self.separate();
                self.data.extend_from_slice(b"\\N");
                self
            }
        }
    }

    fn int(&mut self, value: i64) -> &mut Self {
        use std::io::Write;
        self.separate();
        // Writing to a vector cannot fail.
        let _ = write!(self.data, "{value}");
        self
    }

    fn boolean(&mut self, value: bool) -> &mut Self {
        self.separate();
        self.data.push(if value { b't' } else { b'f' });
        self
    }

    fn end_row(&mut self) {
        self.data.push(b'\n');
        self.in_row = false;
    }
}

/// Appends `bytes` with what the COPY text format reserves (backslash, tab, newline, carriage
/// return) escaped. JSON bodies have no raw tabs or newlines: most fields are copied whole.
fn escape_into(data: &mut Vec<u8>, bytes: &[u8]) {
    let mut copied = 0;
    for (at, &byte) in bytes.iter().enumerate() {
        let escaped: &[u8] = match byte {
            b'\\' => b"\\\\",
            b'\t' => b"\\t",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            _ => continue,
        };
        data.extend_from_slice(&bytes[copied..at]);
        data.extend_from_slice(escaped);
        copied = at + 1;
    }
    data.extend_from_slice(&bytes[copied..]);
}

/// A writer into COPY text: what is written is escaped.
struct Escaping<'a>(&'a mut Vec<u8>);

impl std::io::Write for Escaping<'_> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        escape_into(self.0, bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Rows per message of a COPY: the rows are encoded a message at a time while the server
/// takes in the messages before, so the two processes work side by side rather than in turn.
const ROWS_PER_MESSAGE: usize = 512;

/// Runs `statement` (a `COPY … FROM STDIN`) with one row per item, written by `write_row`.
async fn copy_in<T>(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    statement: &str,
    items: impl IntoIterator<Item = T>,
    write_row: impl Fn(&mut CopyRows, T) -> Result<(), StoreError>,
) -> Result<(), StoreError> {
    let mut items = items.into_iter().peekable();
    if items.peek().is_none() {
        return Ok(());
    }
    let mut copy = tx.copy_in_raw(statement).await?;
    while items.peek().is_some() {
        let mut rows = CopyRows::default();
        let encoded = items
            .by_ref()
            .take(ROWS_PER_MESSAGE)
            .try_for_each(|item| write_row(&mut rows, item));
        if let Err(err) = encoded {
            // Leave the connection usable; the transaction rolls back.
            let _ = copy.abort(err.to_string()).await;
            return Err(err);
        }
        if let Err(err) = copy.send(rows.data).await {
            let _ = copy.abort(err.to_string()).await;
            return Err(err.into());
        }
    }
    copy.finish().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::CopyRows;

    #[test]
    fn copy_text_escapes_what_the_format_reserves() {
        let mut rows = CopyRows::default();
        rows.text("a\\b\tc\nd\re")
            .optional(None)
            .int(-5)
            .boolean(true)
            .end_row();
        rows.text("x").end_row();
        assert_eq!(
            String::from_utf8(rows.data).expect("utf-8"),
            "a\\\\b\\tc\\nd\\re\t\\N\t-5\tt\nx\n"
        );
    }

    #[test]
    fn json_is_encoded_into_the_row_escaped() {
        let mut rows = CopyRows::default();
        rows.text("k")
            .json("value", &"tab\there \"quoted\"")
            .expect("encodes")
            .end_row();
        // JSON escapes the tab and the quotes with backslashes; COPY doubles each backslash.
        assert_eq!(
            String::from_utf8(rows.data).expect("utf-8"),
            "k\t\"tab\\\\there \\\\\"quoted\\\\\"\"\n"
        );
    }
}
