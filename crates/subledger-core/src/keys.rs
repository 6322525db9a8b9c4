//! Account ids by API key, without the keys.
//!
//! Whoever holds the index holds the accounts, and with them their keys, so a slot holds only
//! the account's id (4 bytes) and a lookup compares the key of the account it names. A map
//! from key to id stored each key again beside its id: 12 bytes a slot, 27 MB at a million
//! accounts (hashbrown keeps at most 7/8 of its slots full, so a million ids take 2²¹ slots),
//! in the writer's state and again on the read side. Without the keys it is 10.5 MB. The
//! price is that a lookup reads the account it finds; every caller reads that account next
//! anyway.
//!
//! The holder passes `key_of`, the key of the account an id names (`None` for an id beyond
//! its accounts, which no slot holds: an id enters once its account is held).

use std::hash::BuildHasher;

use hashbrown::HashTable;
use rustc_hash::FxBuildHasher;

use crate::ids::{AccountId, ApiKey};

#[derive(Clone, Default)]
pub struct KeyIndex(HashTable<AccountId>);

fn hash(key: &ApiKey) -> u64 {
    FxBuildHasher.hash_one(key)
}

impl KeyIndex {
    pub fn with_capacity(capacity: usize) -> KeyIndex {
        KeyIndex(HashTable::with_capacity(capacity))
    }

    /// The id of the account whose key is `key`.
    pub fn get(
        &self,
        key: &ApiKey,
        key_of: impl Fn(AccountId) -> Option<ApiKey>,
    ) -> Option<AccountId> {
        self.0
            .find(hash(key), |id| key_of(*id) == Some(*key))
            .copied()
    }

    /// Enters `id`, whose account is already held. `false` (and nothing changes) when another
    /// account has its key, or `id` names no account.
    #[must_use]
    pub fn insert(&mut self, id: AccountId, key_of: impl Fn(AccountId) -> Option<ApiKey>) -> bool {
        let Some(key) = key_of(id) else {
            return false;
        };
        match self.0.entry(
            hash(&key),
            |other| key_of(*other) == Some(key),
            |other| key_of(*other).map_or(0, |key| hash(&key)),
        ) {
            hashbrown::hash_table::Entry::Occupied(_) => false,
            hashbrown::hash_table::Entry::Vacant(vacant) => {
                vacant.insert(id);
                true
            }
        }
    }

    /// Ids held.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::fmt::Debug for KeyIndex {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("KeyIndex")
            .field("len", &self.0.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn key(n: u32) -> ApiKey {
        format!("{n:08}").parse().unwrap()
    }

    /// Every key finds its own account after the table grew many times (growing rehashes each
    /// id through the key of its account); a taken key is refused and changes nothing; an
    /// unknown key finds nothing.
    #[test]
    fn keys_find_their_accounts_through_growth_and_duplicates_are_refused() {
        let mut keys = Vec::new();
        let mut index = KeyIndex::default();
        for n in 0..10_000 {
            keys.push(key(n));
            let key_of = |id: AccountId| keys.get(id.index()).copied();
            assert!(index.insert(AccountId(n), key_of));
        }
        keys.push(key(17));
        let key_of = |id: AccountId| keys.get(id.index()).copied();
        assert!(!index.insert(AccountId(10_000), key_of));
        assert_eq!(index.len(), 10_000);
        for n in 0..10_000 {
            assert_eq!(index.get(&key(n), key_of), Some(AccountId(n)));
        }
        assert_eq!(index.get(&key(10_001), key_of), None);
        assert!(!index.insert(AccountId(20_000), key_of), "no such account");
    }
}
