//! [`AttrMap`]: the free-form attributes of an object or a link.

use std::collections::BTreeMap;

use compact_str::CompactString;
use serde::de::{MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::AttrValue;

/// Named attribute values, sorted by name: a map on the wire and in JSON, a sorted vector in
/// memory. An aggregator holds a million of these with a handful of entries each, where a
/// `BTreeMap` would allocate room for eleven per map; names up to 24 bytes (all of the
/// model's) are stored inline rather than allocated one by one.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct AttrMap(Vec<(CompactString, AttrValue)>);

impl AttrMap {
    pub const fn new() -> Self {
        AttrMap(Vec::new())
    }

    /// An empty map with room for `entries` entries.
    pub fn with_capacity(entries: usize) -> Self {
        AttrMap(Vec::with_capacity(entries))
    }

    fn position(&self, key: &str) -> Result<usize, usize> {
        self.0.binary_search_by(|(k, _)| k.as_str().cmp(key))
    }

    pub fn get(&self, key: &str) -> Option<&AttrValue> {
        self.position(key).ok().map(|i| &self.0[i].1)
    }

    pub fn get_mut(&mut self, key: &str) -> Option<&mut AttrValue> {
        self.position(key).ok().map(|i| &mut self.0[i].1)
    }

    pub fn contains_key(&self, key: &str) -> bool {
        self.position(key).is_ok()
    }

    /// Sets a value; returns the one it replaced.
    pub fn insert(&mut self, key: &str, value: AttrValue) -> Option<AttrValue> {
        match self.position(key) {
            Ok(i) => Some(std::mem::replace(&mut self.0[i].1, value)),
            Err(i) => {
                self.0.insert(i, (CompactString::new(key), value));
                None
            }
        }
    }

    pub fn remove(&mut self, key: &str) -> Option<AttrValue> {
        self.position(key).ok().map(|i| self.0.remove(i).1)
    }

    /// Gives back room kept for entries not added: for maps that are kept long once built.
    /// The entries move to an allocation of their exact size; a plain `shrink_to_fit` may
    /// keep the block (mimalloc, for one, keeps it when the new size is at least half).
    pub fn shrink_to_fit(&mut self) {
        if self.0.capacity() > self.0.len() {
            let mut exact = Vec::with_capacity(self.0.len());
            exact.append(&mut self.0);
            self.0 = exact;
        }
    }

    pub fn retain(&mut self, mut keep: impl FnMut(&str, &mut AttrValue) -> bool) {
        self.0.retain_mut(|(k, v)| keep(k.as_str(), v));
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Entries in name order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &AttrValue)> {
        self.into_iter()
    }

    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|(k, _)| k.as_str())
    }
}

type Entry = (CompactString, AttrValue);

impl<'a> IntoIterator for &'a AttrMap {
    type Item = (&'a str, &'a AttrValue);
    type IntoIter =
        std::iter::Map<std::slice::Iter<'a, Entry>, fn(&'a Entry) -> (&'a str, &'a AttrValue)>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter().map(|(k, v)| (k.as_str(), v))
    }
}

impl IntoIterator for AttrMap {
    type Item = (String, AttrValue);
    type IntoIter = std::iter::Map<std::vec::IntoIter<Entry>, fn(Entry) -> (String, AttrValue)>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter().map(|(k, v)| (k.into_string(), v))
    }
}

impl FromIterator<(String, AttrValue)> for AttrMap {
    /// Later entries replace earlier ones of the same name. Sorted once, not inserted one by
    /// one: a peer's map of many entries must not cost a quadratic number of moves.
    fn from_iter<I: IntoIterator<Item = (String, AttrValue)>>(entries: I) -> Self {
        let mut entries: Vec<Entry> = entries
            .into_iter()
            .map(|(key, value)| (CompactString::from(key), value))
            .collect();
        // Stable, so that of equal names the later entry comes last; merging then keeps its
        // value in the first one's place.
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        entries.dedup_by(|later, kept| {
            let same = later.0 == kept.0;
            if same {
                std::mem::swap(&mut later.1, &mut kept.1);
            }
            same
        });
        let mut map = AttrMap(entries);
        map.shrink_to_fit();
        map
    }
}

impl From<BTreeMap<String, AttrValue>> for AttrMap {
    fn from(map: BTreeMap<String, AttrValue>) -> Self {
        // Already sorted and unique.
        AttrMap(
            map.into_iter()
                .map(|(k, v)| (CompactString::new(k), v))
                .collect(),
        )
    }
}

impl Serialize for AttrMap {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (key, value) in &self.0 {
            map.serialize_entry(key.as_str(), value)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for AttrMap {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct MapVisitor;

        impl<'de> Visitor<'de> for MapVisitor {
            type Value = AttrMap;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a map of attribute names to values")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<AttrMap, A::Error> {
                // The size hint comes from the peer: cap what it may make us reserve.
                let mut entries = Vec::with_capacity(access.size_hint().unwrap_or(0).min(64));
                while let Some(entry) = access.next_entry::<String, AttrValue>()? {
                    entries.push(entry);
                }
                Ok(entries.into_iter().collect())
            }
        }

        deserializer.deserialize_map(MapVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn behaves_as_a_sorted_map() {
        let mut map = AttrMap::new();
        assert_eq!(map.insert("b", 2i64.into()), None);
        assert_eq!(map.insert("a", 1i64.into()), None);
        assert_eq!(map.insert("b", 3i64.into()), Some(2i64.into()));
        assert_eq!(map.keys().collect::<Vec<_>>(), vec!["a", "b"]);
        assert_eq!(map.get("b"), Some(&AttrValue::Int(3)));
        assert_eq!(map.remove("a"), Some(AttrValue::Int(1)));
        assert!(!map.contains_key("a"));
        let json = serde_json::to_string(&map).expect("json");
        assert_eq!(json, r#"{"b":3}"#);
        let back: AttrMap = serde_json::from_str(r#"{"z":1,"b":3,"z":2}"#).expect("parse");
        assert_eq!(
            back.iter().map(|(k, _)| k).collect::<Vec<_>>(),
            vec!["b", "z"]
        );
        assert_eq!(back.get("z"), Some(&AttrValue::Int(2)));
    }
}
