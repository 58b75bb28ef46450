//! [`SortedSet`]: a set that is built once and then only read, as a sorted slice.
//!
//! A clique's nodes and links are computed by its walk and replaced whole when it changes; a
//! `BTreeSet` would keep a node with room for eleven entries per set (a clique's dozen link
//! keys took ~460 bytes), where a slice of its exact size takes what the entries take.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Distinct values in ascending order, searched by bisection.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SortedSet<T>(Box<[T]>);

impl<T> Default for SortedSet<T> {
    fn default() -> Self {
        SortedSet(Box::default())
    }
}

impl<T: Ord> SortedSet<T> {
    pub fn contains(&self, value: &T) -> bool {
        self.0.binary_search(value).is_ok()
    }
}

impl<T> SortedSet<T> {
    pub fn iter(&self) -> std::slice::Iter<'_, T> {
        self.0.iter()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<T: Ord> FromIterator<T> for SortedSet<T> {
    fn from_iter<I: IntoIterator<Item = T>>(values: I) -> Self {
        let mut values: Vec<T> = values.into_iter().collect();
        values.sort_unstable();
        values.dedup();
        SortedSet(values.into_boxed_slice())
    }
}

impl<'a, T> IntoIterator for &'a SortedSet<T> {
    type Item = &'a T;
    type IntoIter = std::slice::Iter<'a, T>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl<T: Serialize> Serialize for SortedSet<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

/// From any sequence: values out of order or repeated (a hand-edited document) are sorted and
/// merged rather than refused.
impl<'de, T: Deserialize<'de> + Ord> Deserialize<'de> for SortedSet<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Vec::<T>::deserialize(deserializer).map(SortedSet::from_iter)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    proptest! {
        /// The same members, order and lookups as a `BTreeSet` of the same values, and a
        /// round trip through JSON.
        #[test]
        fn behaves_as_an_ordered_set(values in proptest::collection::vec(0u16..64, 0..40), probe in 0u16..64) {
            let set: SortedSet<u16> = values.iter().copied().collect();
            let model: BTreeSet<u16> = values.iter().copied().collect();
            prop_assert_eq!(set.iter().copied().collect::<Vec<_>>(), model.iter().copied().collect::<Vec<_>>());
            prop_assert_eq!(set.len(), model.len());
            prop_assert_eq!(set.contains(&probe), model.contains(&probe));
            let json = serde_json::to_string(&set).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let back: SortedSet<u16> = serde_json::from_str(&json).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(back, set);
        }
    }

    #[test]
    fn reads_unsorted_repeated_documents() {
        let set: SortedSet<u16> = serde_json::from_str("[3, 1, 3, 2]").expect("a list of numbers");
        assert_eq!(set.iter().copied().collect::<Vec<_>>(), vec![1, 2, 3]);
    }
}
