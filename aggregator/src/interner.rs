//! [`Interner`]: dense 32-bit numbers for keys (object ids, lookups) that an index refers to
//! many times.
//!
//! The link set refers to every object id several times over — as a link end, as what a
//! producer watches, as a producer — and a million-entry map keyed by 16-byte shared strings
//! costs a string compare per hit and a cache miss per key. Numbered, the same references are
//! four bytes, compared as integers, and indexes become vectors. A number is held by whatever
//! refers to it and is freed (and later reused) when the last holder lets go, so a long-lived
//! environment with churn does not accumulate numbers for objects long gone.

use std::hash::{BuildHasher, Hash};

use hashbrown::HashTable;
use rustc_hash::FxBuildHasher;

/// A key's number in one [`Interner`].
pub type Ix = u32;

/// Numbers for keys, each counting its holders.
///
/// Each key is stored once, in `keys`; the hash index holds only numbers and finds a key's
/// number by comparing against `keys`. A map from key to number would store every key twice
/// (for the link set's lookups, 56-byte keys: ~30 MiB at the benchmark's scale).
#[derive(Debug)]
pub struct Interner<K> {
    index: HashTable<Ix>,
    keys: Vec<Option<K>>,
    holders: Vec<u32>,
    free: Vec<Ix>,
}

impl<K> Default for Interner<K> {
    fn default() -> Self {
        Interner {
            index: HashTable::new(),
            keys: Vec::new(),
            holders: Vec::new(),
            free: Vec::new(),
        }
    }
}

fn hash_of<K: Hash + ?Sized>(key: &K) -> u64 {
    FxBuildHasher.hash_one(key)
}

impl<K: Hash + Eq + Clone> Interner<K> {
    /// Room for `keys` keys without growing.
    pub fn reserve(&mut self, keys: usize) {
        let stored = &self.keys;
        self.index
            .reserve(keys, |&ix| hash_of(Self::stored(stored, ix)));
        self.keys.reserve(keys);
        self.holders.reserve(keys);
    }

    /// The number of `key`, if something holds it.
    pub fn get(&self, key: &K) -> Option<Ix> {
        self.index
            .find(hash_of(key), |&ix| {
                self.keys[ix as usize].as_ref() == Some(key)
            })
            .copied()
    }

    /// The key numbered `ix`. Numbers come only from this interner and stay valid while held,
    /// so an unknown number is a bug in the holder's bookkeeping.
    pub fn key(&self, ix: Ix) -> &K {
        Self::stored(&self.keys, ix)
    }

    fn stored(keys: &[Option<K>], ix: Ix) -> &K {
        keys[ix as usize]
            .as_ref()
            .expect("an interned number is used only while it is held")
    }

    /// Numbers `key` (if it is new) and adds a holder.
    pub fn hold(&mut self, key: &K) -> Ix {
        let ix = match self.get(key) {
            Some(ix) => ix,
            None => self.insert(key.clone()),
        };
        self.holders[ix as usize] += 1;
        ix
    }

    /// Numbers `key` (if it is new) without holding it: for numbering everything a build may
    /// refer to before its parallel part, which can then only look numbers up. What nothing
    /// came to hold is freed by [`Interner::forget_unheld`].
    pub fn seed(&mut self, key: &K) {
        if self.get(key).is_none() {
            self.insert(key.clone());
        }
    }

    /// Frees every number nothing holds (the seeds nothing came to hold).
    pub fn forget_unheld(&mut self) {
        let holders = &self.holders;
        self.index.retain(|&mut ix| holders[ix as usize] > 0);
        for (ix, holders) in self.holders.iter().enumerate() {
            if *holders == 0 && self.keys[ix].take().is_some() {
                self.free.push(ix as Ix);
            }
        }
    }

    /// Adds a holder to a number that is held, or seeded and not yet forgotten.
    pub fn hold_number(&mut self, ix: Ix) -> Ix {
        self.holders[ix as usize] += 1;
        ix
    }

    /// Removes a holder; the last one frees the number.
    pub fn release(&mut self, ix: Ix) {
        let holders = &mut self.holders[ix as usize];
        *holders -= 1;
        if *holders == 0
            && let Some(key) = self.keys[ix as usize].take()
        {
            if let Ok(entry) = self.index.find_entry(hash_of(&key), |&other| other == ix) {
                entry.remove();
            }
            self.free.push(ix);
        }
    }

    /// One past the highest number given out: the length per-number side tables need.
    pub fn span(&self) -> usize {
        self.keys.len()
    }

    /// How many keys are held.
    #[cfg(test)]
    pub fn held(&self) -> usize {
        self.index.len()
    }

    fn insert(&mut self, key: K) -> Ix {
        let hash = hash_of(&key);
        let ix = match self.free.pop() {
            Some(ix) => {
                self.keys[ix as usize] = Some(key);
                ix
            }
            None => {
                let ix = Ix::try_from(self.keys.len())
                    .expect("fewer than 2^32 keys are held in one environment");
                self.keys.push(Some(key));
                self.holders.push(0);
                ix
            }
        };
        let keys = &self.keys;
        self.index
            .insert_unique(hash, ix, |&other| hash_of(Self::stored(keys, other)));
        ix
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    #[test]
    fn seeds_nothing_came_to_hold_are_forgotten() {
        let mut interner: Interner<&str> = Interner::default();
        interner.seed(&"vnic:h:a");
        interner.seed(&"vnic:h:b");
        interner.seed(&"vnic:h:a");
        let a = interner.get(&"vnic:h:a").expect("seeded");
        interner.hold_number(a);
        interner.forget_unheld();
        assert_eq!(interner.get(&"vnic:h:a"), Some(a));
        assert_eq!(interner.get(&"vnic:h:b"), None);
        // The forgotten number is given out again rather than a new one.
        let c = interner.hold(&"vnic:h:c");
        assert_eq!((interner.span(), interner.key(c)), (2, &"vnic:h:c"));
        interner.release(a);
        assert_eq!(interner.get(&"vnic:h:a"), None);
    }

    proptest! {
        /// Holding and releasing in any order: a held key keeps its number, a key nobody
        /// holds is forgotten, and numbers are reused rather than grown without bound.
        #[test]
        fn numbers_live_as_long_as_their_holders(ops in proptest::collection::vec((any::<bool>(), 0u8..12), 0..300)) {
            let mut interner: Interner<String> = Interner::default();
            let mut model: BTreeMap<String, (Ix, u32)> = BTreeMap::new();
            for (hold, n) in ops {
                let key = format!("vnic:h:{n}");
                if hold {
                    let ix = interner.hold(&key);
                    let entry = model.entry(key.clone()).or_insert((ix, 0));
                    prop_assert_eq!(entry.0, ix);
                    entry.1 += 1;
                } else if let Some(entry) = model.get_mut(&key) {
                    interner.release(entry.0);
                    entry.1 -= 1;
                    if entry.1 == 0 {
                        model.remove(&key);
                    }
                }
                for n in 0u8..12 {
                    let key = format!("vnic:h:{n}");
                    match model.get(&key) {
                        Some((ix, _)) => {
                            prop_assert_eq!(interner.get(&key), Some(*ix));
                            prop_assert_eq!(interner.key(*ix), &key);
                        }
                        None => prop_assert_eq!(interner.get(&key), None),
                    }
                }
                prop_assert!(interner.span() <= 12);
            }
        }
    }
}
