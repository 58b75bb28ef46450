use std::cell::Cell;
use std::fmt;

use serde::de::{self, MapAccess, SeqAccess, Visitor};
use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use compact_str::CompactString;

use super::AttrMap;

/// A free-form attribute value: the JSON data model, made decodable from a binary format.
///
/// In JSON it is plain JSON (`{"speed": 10000}`); on the wire it is tagged, because the binary
/// codec cannot guess a type from the bytes. Nesting is limited to [`AttrValue::MAX_DEPTH`]
/// levels so that a hostile frame of nested lists cannot exhaust the decoder's stack.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum AttrValue {
    #[default]
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    /// Inline up to 24 bytes: most attribute text (kinds, MACs, short names) is.
    Str(CompactString),
    List(Vec<AttrValue>),
    Map(AttrMap),
}

impl AttrValue {
    pub const MAX_DEPTH: u32 = 32;

    pub fn as_str(&self) -> Option<&str> {
        match self {
            AttrValue::Str(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_i64(&self) -> Option<i64> {
        match self {
            AttrValue::Int(i) => Some(*i),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match self {
            AttrValue::Bool(b) => Some(*b),
            _ => None,
        }
    }
}

impl From<&str> for AttrValue {
    fn from(s: &str) -> Self {
        AttrValue::Str(CompactString::from(s))
    }
}

impl From<String> for AttrValue {
    fn from(s: String) -> Self {
        AttrValue::Str(CompactString::from(s))
    }
}

impl From<CompactString> for AttrValue {
    fn from(s: CompactString) -> Self {
        AttrValue::Str(s)
    }
}

impl From<bool> for AttrValue {
    fn from(b: bool) -> Self {
        AttrValue::Bool(b)
    }
}

impl From<i64> for AttrValue {
    fn from(i: i64) -> Self {
        AttrValue::Int(i)
    }
}

impl From<u32> for AttrValue {
    fn from(i: u32) -> Self {
        AttrValue::Int(i64::from(i))
    }
}

impl<T: Into<AttrValue>> From<Vec<T>> for AttrValue {
    fn from(items: Vec<T>) -> Self {
        AttrValue::List(items.into_iter().map(Into::into).collect())
    }
}

/// The wire shape of a borrowed value.
#[derive(Serialize)]
enum TaggedRef<'a> {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(&'a str),
    List(&'a [AttrValue]),
    Map(&'a AttrMap),
}

/// The wire shape of a decoded value; variant order must match [`TaggedRef`].
#[derive(Deserialize)]
enum TaggedOwned {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(CompactString),
    List(Vec<AttrValue>),
    Map(AttrMap),
}

impl Serialize for AttrValue {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if !serializer.is_human_readable() {
            let tagged = match self {
                AttrValue::Null => TaggedRef::Null,
                AttrValue::Bool(b) => TaggedRef::Bool(*b),
                AttrValue::Int(i) => TaggedRef::Int(*i),
                AttrValue::Float(f) => TaggedRef::Float(*f),
                AttrValue::Str(s) => TaggedRef::Str(s),
                AttrValue::List(l) => TaggedRef::List(l),
                AttrValue::Map(m) => TaggedRef::Map(m),
            };
            return tagged.serialize(serializer);
        }
        match self {
            AttrValue::Null => serializer.serialize_unit(),
            AttrValue::Bool(b) => serializer.serialize_bool(*b),
            AttrValue::Int(i) => serializer.serialize_i64(*i),
            AttrValue::Float(f) => serializer.serialize_f64(*f),
            AttrValue::Str(s) => serializer.serialize_str(s),
            AttrValue::List(items) => {
                let mut seq = serializer.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(item)?;
                }
                seq.end()
            }
            AttrValue::Map(entries) => {
                let mut map = serializer.serialize_map(Some(entries.len()))?;
                for (k, v) in entries {
                    map.serialize_entry(k, v)?;
                }
                map.end()
            }
        }
    }
}

thread_local! {
    static DECODE_DEPTH: Cell<u32> = const { Cell::new(0) };
}

/// Counts nesting while a value decodes; the count drops back when the level is done.
struct DepthGuard;

impl DepthGuard {
    fn enter<E: de::Error>() -> Result<Self, E> {
        let depth = DECODE_DEPTH.with(|d| {
            let depth = d.get() + 1;
            d.set(depth);
            depth
        });
        let guard = DepthGuard;
        if depth > AttrValue::MAX_DEPTH {
            return Err(E::custom(format!(
                "attribute value nested deeper than {} levels",
                AttrValue::MAX_DEPTH
            )));
        }
        Ok(guard)
    }
}

impl Drop for DepthGuard {
    fn drop(&mut self) {
        DECODE_DEPTH.with(|d| d.set(d.get().saturating_sub(1)));
    }
}

impl<'de> Deserialize<'de> for AttrValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let _depth = DepthGuard::enter::<D::Error>()?;
        if !deserializer.is_human_readable() {
            return Ok(match TaggedOwned::deserialize(deserializer)? {
                TaggedOwned::Null => AttrValue::Null,
                TaggedOwned::Bool(b) => AttrValue::Bool(b),
                TaggedOwned::Int(i) => AttrValue::Int(i),
                TaggedOwned::Float(f) => AttrValue::Float(f),
                TaggedOwned::Str(s) => AttrValue::Str(s),
                TaggedOwned::List(l) => AttrValue::List(l),
                TaggedOwned::Map(m) => AttrValue::Map(m),
            });
        }
        deserializer.deserialize_any(JsonVisitor)
    }
}

struct JsonVisitor;

impl<'de> Visitor<'de> for JsonVisitor {
    type Value = AttrValue;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_unit<E>(self) -> Result<AttrValue, E> {
        Ok(AttrValue::Null)
    }

    fn visit_none<E>(self) -> Result<AttrValue, E> {
        Ok(AttrValue::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<AttrValue, D::Error> {
        AttrValue::deserialize(d)
    }

    fn visit_bool<E>(self, b: bool) -> Result<AttrValue, E> {
        Ok(AttrValue::Bool(b))
    }

    fn visit_i64<E>(self, i: i64) -> Result<AttrValue, E> {
        Ok(AttrValue::Int(i))
    }

    fn visit_u64<E>(self, u: u64) -> Result<AttrValue, E> {
        // Beyond i64 the value keeps its magnitude as a float rather than being refused.
        Ok(i64::try_from(u).map_or(AttrValue::Float(u as f64), AttrValue::Int))
    }

    fn visit_f64<E>(self, f: f64) -> Result<AttrValue, E> {
        Ok(AttrValue::Float(f))
    }

    fn visit_str<E>(self, s: &str) -> Result<AttrValue, E> {
        Ok(AttrValue::Str(CompactString::from(s)))
    }

    fn visit_string<E>(self, s: String) -> Result<AttrValue, E> {
        Ok(AttrValue::Str(CompactString::from(s)))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<AttrValue, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(AttrValue::List(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<AttrValue, A::Error> {
        AttrMap::deserialize(de::value::MapAccessDeserializer::new(map)).map(AttrValue::Map)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_is_plain_json() {
        let json = r#"{"a":[1,"x",true,null,2.5],"b":{"c":18446744073709551615}}"#;
        let value: AttrValue = serde_json::from_str(json).expect("valid json");
        let AttrValue::Map(m) = &value else {
            panic!("expected a map")
        };
        assert_eq!(
            m.get("a"),
            Some(&AttrValue::List(vec![
                1i64.into(),
                "x".into(),
                true.into(),
                AttrValue::Null,
                AttrValue::Float(2.5)
            ]))
        );
        assert_eq!(
            serde_json::to_string(&value).ok().as_deref(),
            Some(r#"{"a":[1,"x",true,null,2.5],"b":{"c":1.8446744073709552e+19}}"#)
        );
    }

    #[test]
    fn deep_nesting_is_refused_not_overflowed() {
        let deep = "[".repeat(100) + &"]".repeat(100);
        let err = serde_json::from_str::<AttrValue>(&deep)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("nested deeper than 32"), "{err}");
        // The depth counter is released after a failure, so the next decode starts from zero.
        assert!(serde_json::from_str::<AttrValue>("[[[1]]]").is_ok());
    }
}
