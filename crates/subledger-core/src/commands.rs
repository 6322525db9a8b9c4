//! The idempotency index: every applied money command with its exact content, in log order.
//!
//! Records live in a `Vec` in the order they were applied (which is sequence order), and a hash
//! map from command id to position finds them. Why not one map of records: the map grows by
//! doubling and rehashing, and with ~80-byte entries that moving and page-zeroing dominated the
//! writer's profile; with 24-byte entries it moves a third of the bytes, the records grow by
//! appending, and iteration (hashing, snapshots) is in log order without sorting.

use rustc_hash::FxHashMap;

use crate::ids::CommandId;
use crate::state::CommandRecord;

#[derive(Debug, Clone, Default)]
pub(crate) struct CommandIndex {
    positions: FxHashMap<CommandId, u64>,
    records: Vec<(CommandId, CommandRecord)>,
}

impl PartialEq for CommandIndex {
    fn eq(&self, other: &CommandIndex) -> bool {
        self.records == other.records
    }
}

impl CommandIndex {
    pub(crate) fn get(&self, id: &CommandId) -> Option<&CommandRecord> {
        let position = usize::try_from(*self.positions.get(id)?).ok()?;
        self.records.get(position).map(|(_, record)| record)
    }

    /// Adds a record; `false` (and nothing changes) if the id is already known.
    pub(crate) fn insert(&mut self, id: CommandId, record: CommandRecord) -> bool {
        let position = self.records.len() as u64;
        match self.positions.entry(id) {
            std::collections::hash_map::Entry::Occupied(_) => false,
            std::collections::hash_map::Entry::Vacant(slot) => {
                slot.insert(position);
                self.records.push((id, record));
                true
            }
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.records.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Records in the order they were applied.
    pub(crate) fn iter(&self) -> impl ExactSizeIterator<Item = &(CommandId, CommandRecord)> + '_ {
        self.records.iter()
    }

    pub(crate) fn reserve(&mut self, additional: usize) {
        self.positions.reserve(additional);
        self.records.reserve(additional);
    }

    /// Builds the index from records, putting them in sequence order; `Err` on a duplicate id.
    pub(crate) fn from_records(
        mut records: Vec<(CommandId, CommandRecord)>,
    ) -> Result<CommandIndex, CommandId> {
        // Stable and linear when already sorted, which is how they are written.
        records.sort_by_key(|(_, record)| record.seq);
        let mut positions =
            FxHashMap::with_capacity_and_hasher(records.len(), rustc_hash::FxBuildHasher);
        for (position, (id, _)) in records.iter().enumerate() {
            if positions.insert(*id, position as u64).is_some() {
                return Err(*id);
            }
        }
        Ok(CommandIndex { positions, records })
    }
}
