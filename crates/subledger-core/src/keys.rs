//! Account ids by API key, without the keys.
//!
//! The accounts already hold their keys, so a slot holds only the account's id (4 bytes) and a
//! lookup compares the key of the account it names. A map from key to id stored each key again
//! beside its id: 12 bytes a slot, 27 MB at a million accounts (hashbrown keeps at most 7/8 of
//! its slots full, so a million ids take 2²¹ slots), in the writer's state and again in the
//! views' copy. Without the keys it is 10.5 MB. The price is that a lookup reads the account
//! it finds; every caller reads that account next anyway.

use std::hash::BuildHasher;

use hashbrown::HashTable;
use rustc_hash::FxBuildHasher;

use crate::ids::{AccountId, ApiKey};
use crate::state::Account;

#[derive(Clone, Default)]
pub(crate) struct KeyIndex(HashTable<AccountId>);

fn hash(key: &ApiKey) -> u64 {
    FxBuildHasher.hash_one(key)
}

/// The hash of the account `id` names in `accounts` (0 for an id beyond them, which no slot
/// holds: ids enter the table only once their account is in `accounts`).
fn hash_of(accounts: &[Account], id: AccountId) -> u64 {
    accounts
        .get(id.index())
        .map_or(0, |account| hash(&account.key))
}

impl KeyIndex {
    pub(crate) fn with_capacity(capacity: usize) -> KeyIndex {
        KeyIndex(HashTable::with_capacity(capacity))
    }

    /// The id of the account in `accounts` whose key is `key`.
    pub(crate) fn get(&self, key: &ApiKey, accounts: &[Account]) -> Option<AccountId> {
        self.0
            .find(hash(key), |id| {
                accounts
                    .get(id.index())
                    .is_some_and(|account| account.key == *key)
            })
            .copied()
    }

    #[must_use]
    /// Enters `id`, whose account is already in `accounts`. `false` (and nothing changes) when
    /// another account has its key.
    pub(crate) fn insert(&mut self, id: AccountId, accounts: &[Account]) -> bool {
        let Some(account) = accounts.get(id.index()) else {
            return false;
        };
        let key = account.key;
        match self.0.entry(
            hash(&key),
            |other| {
                accounts
                    .get(other.index())
                    .is_some_and(|account| account.key == key)
            },
            |other| hash_of(accounts, *other),
        ) {
            hashbrown::hash_table::Entry::Occupied(_) => false,
            hashbrown::hash_table::Entry::Vacant(vacant) => {
                vacant.insert(id);
                true
            }
        }
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
    use crate::ids::SecretId;
    use crate::state::{AccountIds, Funding, PackedFunding, SecretIds};

    fn account(key: ApiKey) -> Account {
        Account {
            key,
            primary: None,
            currency: crate::ids::Currency::EUR,
            funding: PackedFunding::new(Funding::Shared),
            suspended: false,
            closed: false,
            secrets: SecretIds::one(SecretId::from_bytes([1; 16])),
            subaccounts: AccountIds::default(),
        }
    }

    fn key(n: u32) -> ApiKey {
        format!("{n:08}").parse().unwrap()
    }

    /// Every key finds its own account after the table grew many times (growing rehashes each
    /// id through the key of its account); a taken key is refused and changes nothing; an
    /// unknown key finds nothing.
    #[test]
    fn keys_find_their_accounts_through_growth_and_duplicates_are_refused() {
        let mut accounts = Vec::new();
        let mut index = KeyIndex::default();
        for n in 0..10_000 {
            accounts.push(account(key(n)));
            assert!(index.insert(AccountId(n), &accounts));
        }
        accounts.push(account(key(17)));
        assert!(!index.insert(AccountId(10_000), &accounts));
        assert_eq!(index.0.len(), 10_000);
        for n in 0..10_000 {
            assert_eq!(index.get(&key(n), &accounts), Some(AccountId(n)));
        }
        assert_eq!(index.get(&key(10_001), &accounts), None);
        assert!(
            !index.insert(AccountId(20_000), &accounts),
            "no such account"
        );
    }
}
