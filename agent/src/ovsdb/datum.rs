//! OVSDB values (RFC 7047 §5.1): atoms, sets (`["set", [...]]`, or a bare atom for a set of
//! one) and maps (`["map", [[k, v], ...]]`), read from and updated in their JSON form.

use std::collections::BTreeMap;

use serde_json::Value;

/// An atom as text: strings as they are, numbers and booleans printed, UUIDs as the UUID.
pub fn atom_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Array(pair) => match pair.as_slice() {
            [Value::String(kind), Value::String(uuid)]
                if kind == "uuid" || kind == "named-uuid" =>
            {
                Some(uuid.clone())
            }
            _ => None,
        },
        _ => None,
    }
}

/// The elements of a set column (a bare atom is a set of one; `["set", []]` is empty).
pub fn set_elements(value: &Value) -> Vec<&Value> {
    match value {
        Value::Array(pair) if pair.first().and_then(Value::as_str) == Some("set") => pair
            .get(1)
            .and_then(Value::as_array)
            .map(|items| items.iter().collect())
            .unwrap_or_default(),
        other => vec![other],
    }
}

/// The pairs of a map column, as text.
pub fn map_entries(value: &Value) -> BTreeMap<String, String> {
    map_pairs(value)
        .iter()
        .filter_map(|(k, v)| Some((atom_text(k)?, atom_text(v)?)))
        .collect()
}

/// An optional scalar column: OVSDB writes "no value" as an empty set.
pub fn optional_atom(value: &Value) -> Option<&Value> {
    let elements = set_elements(value);
    match elements.as_slice() {
        [one] => Some(*one),
        _ => None,
    }
}

/// How a column's values combine with diffs, from its schema type (RFC 7047 §3.2): a type with
/// a value is a map; a type that can hold more than one element is a set; a type of at most one
/// element (scalars and optional columns such as `Port.tag`) is replaced by the diff, which for
/// those is the new value (an empty set when an optional column is cleared).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnKind {
    Scalar,
    Set,
    Map,
}

impl ColumnKind {
    /// Reads a column's `type` from a schema.
    pub fn of(column_type: &Value) -> ColumnKind {
        let Value::Object(ty) = column_type else {
            return ColumnKind::Scalar;
        };
        if ty.contains_key("value") {
            return ColumnKind::Map;
        }
        let max = match ty.get("max") {
            None => Some(1),
            Some(Value::String(s)) if s == "unlimited" => None,
            Some(other) => other.as_u64(),
        };
        if max == Some(1) {
            ColumnKind::Scalar
        } else {
            ColumnKind::Set
        }
    }
}

/// Applies a `modify` diff of `update2`/`update3` (ovsdb-server(7)) to a column value: a map's
/// pairs are removed when present with the same value, replaced when present with another,
/// added when absent; a set's elements are toggled; a column of at most one element is replaced.
pub fn apply_diff(kind: ColumnKind, current: &Value, diff: &Value) -> Value {
    match kind {
        ColumnKind::Scalar => diff.clone(),
        ColumnKind::Map => {
            let mut pairs: Vec<(Value, Value)> = map_pairs(current);
            for (key, value) in map_pairs(diff) {
                match pairs.iter().position(|(k, _)| *k == key) {
                    Some(i) if pairs[i].1 == value => {
                        pairs.remove(i);
                    }
                    Some(i) => pairs[i].1 = value,
                    None => pairs.push((key, value)),
                }
            }
            let entries = pairs
                .into_iter()
                .map(|(k, v)| Value::Array(vec![k, v]))
                .collect();
            Value::Array(vec![Value::String("map".into()), Value::Array(entries)])
        }
        ColumnKind::Set => {
            let mut elements: Vec<Value> = set_elements(current).into_iter().cloned().collect();
            for element in set_elements(diff) {
                match elements.iter().position(|e| e == element) {
                    Some(i) => {
                        elements.remove(i);
                    }
                    None => elements.push(element.clone()),
                }
            }
            match elements.len() {
                1 => elements.remove(0),
                _ => Value::Array(vec![Value::String("set".into()), Value::Array(elements)]),
            }
        }
    }
}

fn map_pairs(value: &Value) -> Vec<(Value, Value)> {
    let Value::Array(pair) = value else {
        return Vec::new();
    };
    if pair.first().and_then(Value::as_str) != Some("map") {
        return Vec::new();
    }
    pair.get(1)
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|entry| {
            let entry = entry.as_array()?;
            Some((entry.first()?.clone(), entry.get(1)?.clone()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_atoms_sets_and_maps() {
        assert_eq!(atom_text(&json!(["uuid", "abc"])).as_deref(), Some("abc"));
        assert_eq!(atom_text(&json!(100)).as_deref(), Some("100"));
        assert_eq!(set_elements(&json!(["set", []])).len(), 0);
        assert_eq!(set_elements(&json!(5)).len(), 1);
        assert_eq!(optional_atom(&json!(["set", []])), None);
        assert_eq!(optional_atom(&json!(100)), Some(&json!(100)));
        let map = map_entries(&json!([
            "map",
            [["iface-id", "p1"], ["attached-mac", "52:54:00:12:34:56"]]
        ]));
        assert_eq!(map.get("iface-id").map(String::as_str), Some("p1"));
    }

    #[test]
    fn column_kinds_from_the_schema() {
        assert_eq!(ColumnKind::of(&json!("string")), ColumnKind::Scalar);
        assert_eq!(
            ColumnKind::of(&json!({"key": "integer"})),
            ColumnKind::Scalar
        );
        // Optional columns hold at most one element: their diff is the new value.
        assert_eq!(
            ColumnKind::of(&json!({"key": "integer", "min": 0, "max": 1})),
            ColumnKind::Scalar
        );
        assert_eq!(
            ColumnKind::of(&json!({"key": "integer", "min": 0})),
            ColumnKind::Scalar
        );
        assert_eq!(
            ColumnKind::of(&json!({"key": {"type": "uuid"}, "min": 0, "max": "unlimited"})),
            ColumnKind::Set
        );
        assert_eq!(
            ColumnKind::of(
                &json!({"key": "string", "value": "string", "min": 0, "max": "unlimited"})
            ),
            ColumnKind::Map
        );
    }

    #[test]
    fn applies_update2_diffs() {
        use ColumnKind::*;
        // Maps: remove same pair, replace other value, add new key.
        let current = json!(["map", [["a", "1"], ["b", "2"]]]);
        let diff = json!(["map", [["a", "1"], ["b", "3"], ["c", "4"]]]);
        let expected: BTreeMap<String, String> =
            [("b".into(), "3".into()), ("c".into(), "4".into())].into();
        assert_eq!(map_entries(&apply_diff(Map, &current, &diff)), expected);
        // Sets: toggle; a set of one collapses to the bare atom.
        let ports = json!(["set", [["uuid", "p1"], ["uuid", "p2"]]]);
        let after = apply_diff(Set, &ports, &json!(["uuid", "p1"]));
        assert_eq!(after, json!(["uuid", "p2"]));
        let after = apply_diff(Set, &after, &json!(["set", [["uuid", "p3"]]]));
        assert_eq!(set_elements(&after).len(), 2);
        // An optional column, as ovsdb-server 3.1 sends it: set, changed, cleared.
        let tag = apply_diff(Scalar, &json!(["set", []]), &json!(3));
        let tag = apply_diff(Scalar, &tag, &json!(7));
        assert_eq!(tag, json!(7));
        assert_eq!(
            apply_diff(Scalar, &tag, &json!(["set", []])),
            json!(["set", []])
        );
        // Scalars are replaced.
        assert_eq!(
            apply_diff(Scalar, &json!("down"), &json!("up")),
            json!("up")
        );
    }
}
