//! [`IdSet`]: a set of object ids that allocates nothing while it holds one or two.
//!
//! The engine keeps millions of small sets — the objects found by an address or a MAC, the
//! producers watching an object, the cliques whose walk expanded a node — and nearly all of
//! them hold one id. A `BTreeSet` or hash set allocates a node or table for each; this keeps
//! up to two ids inline, a sorted vector up to [`FEW`], and a `BTreeSet` beyond.

use std::collections::BTreeSet;

use calipso_proto::ObjectId;
use smallvec::SmallVec;

/// The most ids kept in a sorted vector; a larger set is a `BTreeSet` (inserting into a sorted
/// vector moves its tail, which is cheap only while it is short).
const FEW: usize = 16;

/// A set of ids, iterated in id order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdSet {
    Few(SmallVec<[ObjectId; 2]>),
    Many(BTreeSet<ObjectId>),
}

impl Default for IdSet {
    fn default() -> Self {
        IdSet::Few(SmallVec::new())
    }
}

impl IdSet {
    /// Adds an id; `false` if it was there.
    pub fn insert(&mut self, id: ObjectId) -> bool {
        match self {
            IdSet::Few(ids) => match ids.binary_search(&id) {
                Ok(_) => false,
                Err(at) => {
                    if ids.len() < FEW {
                        ids.insert(at, id);
                    } else {
                        let mut many: BTreeSet<ObjectId> = ids.drain(..).collect();
                        many.insert(id);
                        *self = IdSet::Many(many);
                    }
                    true
                }
            },
            IdSet::Many(ids) => ids.insert(id),
        }
    }

    /// Removes an id; `false` if it was not there.
    pub fn remove(&mut self, id: &ObjectId) -> bool {
        match self {
            IdSet::Few(ids) => match ids.binary_search(id) {
                Ok(at) => {
                    ids.remove(at);
                    true
                }
                Err(_) => false,
            },
            IdSet::Many(ids) => ids.remove(id),
        }
    }

    pub fn contains(&self, id: &ObjectId) -> bool {
        match self {
            IdSet::Few(ids) => ids.binary_search(id).is_ok(),
            IdSet::Many(ids) => ids.contains(id),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn len(&self) -> usize {
        match self {
            IdSet::Few(ids) => ids.len(),
            IdSet::Many(ids) => ids.len(),
        }
    }

    /// The ids in order.
    pub fn iter(&self) -> Iter<'_> {
        match self {
            IdSet::Few(ids) => Iter::Few(ids.iter()),
            IdSet::Many(ids) => Iter::Many(ids.iter()),
        }
    }
}

/// The ids of an [`IdSet`], in order.
#[derive(Debug, Clone)]
pub enum Iter<'a> {
    Few(std::slice::Iter<'a, ObjectId>),
    Many(std::collections::btree_set::Iter<'a, ObjectId>),
}

impl<'a> Iterator for Iter<'a> {
    type Item = &'a ObjectId;

    fn next(&mut self) -> Option<&'a ObjectId> {
        match self {
            Iter::Few(ids) => ids.next(),
            Iter::Many(ids) => ids.next(),
        }
    }
}

impl<'a> IntoIterator for &'a IdSet {
    type Item = &'a ObjectId;
    type IntoIter = Iter<'a>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

impl FromIterator<ObjectId> for IdSet {
    fn from_iter<I: IntoIterator<Item = ObjectId>>(ids: I) -> Self {
        let mut set = IdSet::default();
        for id in ids {
            set.insert(id);
        }
        set
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn behaves_as_an_ordered_set(ops in proptest::collection::vec((any::<bool>(), 0u8..40), 0..200)) {
            let mut set = IdSet::default();
            let mut model = BTreeSet::new();
            for (add, n) in ops {
                let id = ObjectId::from_raw(format!("vnic:h:{n:02}"));
                if add {
                    prop_assert_eq!(set.insert(id.clone()), model.insert(id.clone()));
                } else {
                    prop_assert_eq!(set.remove(&id), model.remove(&id));
                }
                prop_assert_eq!(set.len(), model.len());
                prop_assert!(set.iter().eq(model.iter()));
                prop_assert_eq!(set.contains(&id), model.contains(&id));
            }
        }
    }
}
