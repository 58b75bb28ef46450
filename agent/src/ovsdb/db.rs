//! A client-side copy of monitored tables, kept current from `update` (RFC 7047 §4.1.6) and
//! `update2`/`update3` (ovsdb-server(7)) notifications.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use super::datum::{ColumnKind, apply_diff};

/// Column kinds per table, from `get_schema`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Schema {
    pub version: String,
    pub tables: BTreeMap<String, BTreeMap<String, ColumnKind>>,
}

impl Schema {
    pub fn parse(schema: &Value) -> Result<Schema, String> {
        let tables = schema
            .get("tables")
            .and_then(Value::as_object)
            .ok_or("schema without tables")?;
        let mut parsed = Schema {
            version: schema
                .get("version")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
            ..Schema::default()
        };
        for (table, definition) in tables {
            let columns = definition
                .get("columns")
                .and_then(Value::as_object)
                .ok_or_else(|| format!("table {table} without columns"))?;
            let kinds = columns
                .iter()
                .map(|(name, column)| {
                    (
                        name.clone(),
                        ColumnKind::of(column.get("type").unwrap_or(&Value::Null)),
                    )
                })
                .collect();
            parsed.tables.insert(table.clone(), kinds);
        }
        Ok(parsed)
    }

    /// The monitor requests for `wanted` columns, keeping only tables and columns this server's
    /// schema has (an older OVS lacks some). `conditional` gives `monitor_cond` syntax (a list
    /// of requests per table) instead of `monitor`'s (one request).
    pub fn monitor_requests(&self, wanted: &[(&str, &[&str])], conditional: bool) -> Value {
        let mut requests = Map::new();
        for (table, columns) in wanted {
            let Some(known) = self.tables.get(*table) else {
                continue;
            };
            let columns: Vec<&str> = columns
                .iter()
                .copied()
                .filter(|c| known.contains_key(*c))
                .collect();
            let request = json!({"columns": columns});
            requests.insert(
                (*table).to_owned(),
                if conditional {
                    json!([request])
                } else {
                    request
                },
            );
        }
        Value::Object(requests)
    }
}

/// A row: column name → value in OVSDB JSON form.
pub type Row = Map<String, Value>;

/// A row an update inserted, modified or deleted.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Touched {
    pub table: String,
    pub uuid: String,
}

/// Rows by table and UUID.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Tables {
    pub tables: BTreeMap<String, BTreeMap<String, Row>>,
}

fn object<'a>(value: &'a Value, what: &str) -> Result<&'a Map<String, Value>, String> {
    value
        .as_object()
        .ok_or_else(|| format!("{what} is not a JSON object"))
}

impl Tables {
    pub fn rows(&self, table: &str) -> impl Iterator<Item = (&String, &Row)> {
        self.tables.get(table).into_iter().flatten()
    }

    pub fn row(&self, table: &str, uuid: &str) -> Option<&Row> {
        self.tables.get(table)?.get(uuid)
    }

    pub fn clear(&mut self) {
        self.tables.clear();
    }

    /// Applies RFC 7047 `table-updates`: each row update has `new` (the whole row, for initial
    /// rows, inserts and modifications) and/or `old`; no `new` means the row was deleted.
    /// Returns the rows touched.
    pub fn apply_update(&mut self, updates: &Value) -> Result<Vec<Touched>, String> {
        let mut touched = Vec::new();
        for (table, rows) in object(updates, "table-updates")? {
            let target = self.tables.entry(table.clone()).or_default();
            for (uuid, update) in object(rows, "table-update")? {
                match object(update, "row-update")?.get("new") {
                    Some(new) => {
                        target.insert(uuid.clone(), object(new, "row")?.clone());
                    }
                    None => {
                        target.remove(uuid);
                    }
                }
                touched.push(Touched {
                    table: table.clone(),
                    uuid: uuid.clone(),
                });
            }
        }
        Ok(touched)
    }

    /// Applies `table-updates2`: `initial`/`insert` carry the row, `delete` removes it, and
    /// `modify` carries a diff per changed column. Returns the rows touched.
    pub fn apply_update2(
        &mut self,
        schema: &Schema,
        updates: &Value,
    ) -> Result<Vec<Touched>, String> {
        let mut touched = Vec::new();
        for (table, rows) in object(updates, "table-updates2")? {
            let kinds = schema.tables.get(table);
            let target = self.tables.entry(table.clone()).or_default();
            for (uuid, update) in object(rows, "table-update2")? {
                let update = object(update, "row-update2")?;
                if let Some(row) = update.get("initial").or_else(|| update.get("insert")) {
                    target.insert(uuid.clone(), object(row, "row")?.clone());
                } else if update.contains_key("delete") {
                    target.remove(uuid);
                } else if let Some(diff) = update.get("modify") {
                    let row = target.entry(uuid.clone()).or_default();
                    for (column, change) in object(diff, "modify")? {
                        let kind = kinds
                            .and_then(|k| k.get(column))
                            .copied()
                            .unwrap_or(ColumnKind::Scalar);
                        let current = row
                            .get(column)
                            .cloned()
                            .unwrap_or_else(|| json!(["set", []]));
                        row.insert(column.clone(), apply_diff(kind, &current, change));
                    }
                } else {
                    return Err(format!(
                        "row update for {table} {uuid} has no initial, insert, delete or modify"
                    ));
                }
                touched.push(Touched {
                    table: table.clone(),
                    uuid: uuid.clone(),
                });
            }
        }
        Ok(touched)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema() -> Schema {
        Schema::parse(&json!({"version": "8.3.1", "tables": {
            "Port": {"columns": {
                "name": {"type": "string"},
                "tag": {"type": {"key": {"type": "integer"}, "min": 0, "max": 1}},
                "interfaces": {"type": {"key": {"type": "uuid"}, "min": 1, "max": "unlimited"}},
                "external_ids": {"type": {"key": "string", "value": "string", "min": 0, "max": "unlimited"}}
            }}
        }}))
        .expect("schema")
    }

    #[test]
    fn monitor_requests_keep_known_columns() {
        let requests = schema().monitor_requests(
            &[("Port", &["name", "tag", "statistics"]), ("Nope", &["x"])],
            true,
        );
        assert_eq!(requests, json!({"Port": [{"columns": ["name", "tag"]}]}));
    }

    #[test]
    fn update2_insert_modify_delete() {
        let schema = schema();
        let mut tables = Tables::default();
        let insert = json!({"Port": {"u1": {"insert": {"name": "tap0", "tag": ["set", []], "interfaces": ["uuid", "i1"],
            "external_ids": ["map", [["a", "1"]]]}}}});
        tables.apply_update2(&schema, &insert).expect("insert");
        let modify = json!({"Port": {"u1": {"modify": {"tag": 100, "interfaces": ["uuid", "i2"], "external_ids": ["map", [["a", "1"], ["b", "2"]]]}}}});
        // (tag is optional: its diff is the new value.)
        tables.apply_update2(&schema, &modify).expect("modify");
        let row = tables.row("Port", "u1").expect("row");
        assert_eq!(row["tag"], json!(100));
        assert_eq!(
            row["interfaces"],
            json!(["set", [["uuid", "i1"], ["uuid", "i2"]]])
        );
        assert_eq!(row["external_ids"], json!(["map", [["b", "2"]]]));
        tables
            .apply_update2(&schema, &json!({"Port": {"u1": {"delete": null}}}))
            .expect("delete");
        assert!(tables.row("Port", "u1").is_none());
        let bad = tables
            .apply_update2(&schema, &json!({"Port": {"u1": {"rename": {}}}}))
            .err()
            .unwrap_or_default();
        assert!(
            bad.contains("no initial, insert, delete or modify"),
            "{bad}"
        );
        assert!(
            tables
                .apply_update2(&schema, &json!(["not", "an", "object"]))
                .is_err()
        );
    }

    #[test]
    fn update_with_old_and_new() {
        let mut tables = Tables::default();
        tables
            .apply_update(&json!({"Port": {"u1": {"new": {"name": "a"}}}}))
            .expect("insert");
        tables
            .apply_update(&json!({"Port": {"u1": {"old": {"name": "a"}, "new": {"name": "b"}}}}))
            .expect("modify");
        assert_eq!(
            tables.row("Port", "u1").map(|r| r["name"].clone()),
            Some(json!("b"))
        );
        tables
            .apply_update(&json!({"Port": {"u1": {"old": {"name": "b"}}}}))
            .expect("delete");
        assert!(tables.row("Port", "u1").is_none());
    }
}
