//! Writing many rows into one table inside a transaction: `COPY … FROM STDIN` for big
//! batches, one `INSERT … SELECT FROM UNNEST` of array-bound columns for small ones.
//!
//! Small batches avoid `COPY` because of its last message. sqlx 0.9.0 no longer sets
//! `TCP_NODELAY` (launchbadge/sqlx#4335; fixed upstream, not yet released), so the few bytes
//! of `CopyDone`, written right after the rows, wait in the kernel for the server's ACK of
//! the rows, which the server may delay by up to 40 ms. Over TCP a small group's commit (three
//! `COPY`s) took 130 ms where it needs a few. An `INSERT` goes out in one write. Big batches
//! keep `COPY`, whose rows are the cheapest the server takes, and whose stall, when it
//! comes, is spread over thousands of rows.

use serde::Serialize;

use crate::store::StoreError;

/// A versioned table's columns, in the order rows are written, with their SQL types; the
/// first `KEYS` are the key a version belongs to.
pub(super) struct Table<const KEYS: usize> {
    pub name: &'static str,
    pub columns: &'static [(&'static str, &'static str)],
}

impl<const KEYS: usize> Table<KEYS> {
    /// The key columns' names.
    pub fn key_columns(&self) -> impl Iterator<Item = &'static str> {
        self.columns.iter().take(KEYS).map(|(name, _)| *name)
    }

    fn column_list(&self) -> String {
        let names: Vec<&str> = self.columns.iter().map(|(name, _)| *name).collect();
        names.join(", ")
    }
}

/// Batches of at most this many rows are inserted, larger ones copied. Measured on the 2-core
/// test machine (the store alone, object rows, `aggregator_core` bench): `COPY` takes
/// 6–7 µs a row plus 5–8 ms a statement on average for the stall; the insert 10–11 µs a row
/// up to a few thousand rows (slower beyond: 14 µs at 10 000). They cost the same near
/// 1 500 rows; at 500, inserting gives 82–91k rows/s against 43–57k, at 4 000 copying gives
/// 156–158k against 96–98k.
const INSERT_AT_MOST: usize = 1024;

/// Rows per message of a COPY: the rows are encoded a message at a time while the server
/// takes in the messages before, so the two processes work side by side rather than in turn.
const ROWS_PER_MESSAGE: usize = 512;

/// Writes one row per item into `table`, each row's fields written by `write_row` in the
/// table's column order.
pub(super) async fn write_rows<T, const KEYS: usize>(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    table: &Table<KEYS>,
    items: impl ExactSizeIterator<Item = T>,
    write_row: impl Fn(&mut Rows, T) -> Result<(), StoreError>,
) -> Result<(), StoreError> {
    match items.len() {
        0 => Ok(()),
        rows if rows <= INSERT_AT_MOST => insert_rows(tx, table, items, write_row).await,
        _ => copy_rows(tx, table, items, write_row).await,
    }
}

async fn insert_rows<T, const KEYS: usize>(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    table: &Table<KEYS>,
    items: impl Iterator<Item = T>,
    write_row: impl Fn(&mut Rows, T) -> Result<(), StoreError>,
) -> Result<(), StoreError> {
    let mut rows = Rows::columns(table.columns.len());
    for item in items {
        write_row(&mut rows, item)?;
    }
    let columns = rows.into_columns();
    let arrays: Vec<String> = (1..=columns.len())
        .map(|i| format!("${i}::text[]"))
        .collect();
    let casts: Vec<String> = table
        .columns
        .iter()
        .map(|(name, sql_type)| format!("r.{name}::{sql_type}"))
        .collect();
    let sql = format!(
        "INSERT INTO {} ({}) SELECT {} FROM UNNEST({}) AS r({})",
        table.name,
        table.column_list(),
        casts.join(", "),
        arrays.join(", "),
        table.column_list(),
    );
    let mut insert = sqlx::query(sqlx::AssertSqlSafe(sql));
    for column in columns {
        insert = insert.bind(column);
    }
    insert.execute(&mut **tx).await?;
    Ok(())
}

async fn copy_rows<T, const KEYS: usize>(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    table: &Table<KEYS>,
    items: impl Iterator<Item = T>,
    write_row: impl Fn(&mut Rows, T) -> Result<(), StoreError>,
) -> Result<(), StoreError> {
    let statement = format!("COPY {} ({}) FROM STDIN", table.name, table.column_list());
    let mut items = items.peekable();
    let mut copy = tx.copy_in_raw(&statement).await?;
    while items.peek().is_some() {
        let mut rows = Rows::copy_text();
        let encoded = items
            .by_ref()
            .take(ROWS_PER_MESSAGE)
            .try_for_each(|item| write_row(&mut rows, item));
        if let Err(err) = encoded {
            // Leave the connection usable; the transaction rolls back.
            let _ = copy.abort(err.to_string()).await;
            return Err(err);
        }
        if let Err(err) = copy.send(rows.into_copy_text()).await {
            let _ = copy.abort(err.to_string()).await;
            return Err(err.into());
        }
    }
    copy.finish().await?;
    Ok(())
}

/// Rows being encoded, field by field, in one of the two forms the server takes.
#[derive(Debug)]
pub(super) enum Rows {
    /// `COPY … FROM STDIN` text: tab-separated fields, `\N` for NULL; backslash, tab, newline
    /// and carriage return escaped.
    CopyText {
        data: Vec<u8>,
        /// Whether the current row has a field yet (fields after the first get a tab).
        in_row: bool,
    },
    /// One text array per column (`None` for NULL); the statement casts each to its type.
    Columns {
        columns: Vec<Vec<Option<String>>>,
        /// The column the next field goes to.
        next: usize,
    },
}

impl Rows {
    fn copy_text() -> Self {
        Rows::CopyText {
            data: Vec::new(),
            in_row: false,
        }
    }

    fn columns(count: usize) -> Self {
        Rows::Columns {
            columns: vec![Vec::new(); count],
            next: 0,
        }
    }

    /// The COPY text written (nothing, for the columns form).
    fn into_copy_text(self) -> Vec<u8> {
        match self {
            Rows::CopyText { data, .. } => data,
            Rows::Columns { .. } => Vec::new(),
        }
    }

    /// The columns written (none, for COPY text).
    fn into_columns(self) -> Vec<Vec<Option<String>>> {
        match self {
            Rows::Columns { columns, .. } => columns,
            Rows::CopyText { .. } => Vec::new(),
        }
    }

    /// Starts a field in COPY text; `None` for the columns form.
    fn copy_field(&mut self) -> Option<&mut Vec<u8>> {
        match self {
            Rows::CopyText { data, in_row } => {
                if *in_row {
                    data.push(b'\t');
                }
                *in_row = true;
                Some(data)
            }
            Rows::Columns { .. } => None,
        }
    }

    /// Appends a field to the columns form.
    fn column_field(&mut self, value: Option<String>) {
        if let Rows::Columns { columns, next } = self {
            if let Some(column) = columns.get_mut(*next) {
                column.push(value);
            }
            *next += 1;
        }
    }

    pub fn text(&mut self, value: &str) -> &mut Self {
        match self.copy_field() {
            Some(data) => escape_into(data, value.as_bytes()),
            None => self.column_field(Some(value.to_owned())),
        }
        self
    }

    pub fn optional(&mut self, value: Option<&str>) -> &mut Self {
        match value {
            Some(value) => self.text(value),
            None => {
                match self.copy_field() {
                    Some(data) => data.extend_from_slice(b"\\N"),
                    None => self.column_field(None),
                }
                self
            }
        }
    }

    pub fn int(&mut self, value: i64) -> &mut Self {
        match self.copy_field() {
            Some(data) => {
                use std::io::Write;
                // Writing to a vector cannot fail.
                let _ = write!(data, "{value}");
            }
            None => self.column_field(Some(value.to_string())),
        }
        self
    }

    pub fn boolean(&mut self, value: bool) -> &mut Self {
        let text = if value { "t" } else { "f" };
        match self.copy_field() {
            Some(data) => data.extend_from_slice(text.as_bytes()),
            None => self.column_field(Some(text.to_owned())),
        }
        self
    }

    /// A value as JSON, encoded straight into the row.
    pub fn json(&mut self, what: &str, value: &impl Serialize) -> Result<&mut Self, StoreError> {
        let failed = |source| StoreError::Encode {
            what: what.to_owned(),
            source,
        };
        match self.copy_field() {
            Some(data) => serde_json::to_writer(Escaping(data), value).map_err(failed)?,
            None => {
                let json = serde_json::to_string(value).map_err(failed)?;
                self.column_field(Some(json));
            }
        }
        Ok(self)
    }

    pub fn end_row(&mut self) {
        match self {
            Rows::CopyText { data, in_row } => {
                data.push(b'\n');
                *in_row = false;
            }
            Rows::Columns { next, .. } => *next = 0,
        }
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

#[cfg(test)]
mod tests {
    use super::Rows;

    fn copy_text(rows: Rows) -> String {
        String::from_utf8(rows.into_copy_text()).expect("utf-8")
    }

    #[test]
    fn copy_text_escapes_what_the_format_reserves() {
        let mut rows = Rows::copy_text();
        rows.text("a\\b\tc\nd\re")
            .optional(None)
            .int(-5)
            .boolean(true)
            .end_row();
        rows.text("x").end_row();
        assert_eq!(copy_text(rows), "a\\\\b\\tc\\nd\\re\t\\N\t-5\tt\nx\n");
    }

    #[test]
    fn json_is_encoded_into_the_row_escaped() {
        let mut rows = Rows::copy_text();
        rows.text("k")
            .json("value", &"tab\there \"quoted\"")
            .expect("encodes")
            .end_row();
        // JSON escapes the tab and the quotes with backslashes; COPY doubles each backslash.
        assert_eq!(copy_text(rows), "k\t\"tab\\\\there \\\\\"quoted\\\\\"\"\n");
    }

    #[test]
    fn columns_take_each_field_as_text_unescaped() {
        let mut rows = Rows::columns(4);
        rows.text("a\tb")
            .optional(None)
            .int(-5)
            .boolean(false)
            .end_row();
        rows.text("c")
            .optional(Some("h"))
            .int(7)
            .json("value", &"q\"")
            .expect("encodes")
            .end_row();
        let text = |value: &str| Some(value.to_owned());
        assert_eq!(
            rows.into_columns(),
            vec![
                vec![text("a\tb"), text("c")],
                vec![None, text("h")],
                vec![text("-5"), text("7")],
                vec![text("f"), text("\"q\\\"\"")],
            ]
        );
    }
}
