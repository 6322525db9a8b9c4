//! The families' money lists: balance and credit transfers, charges and top-ups, as positions
//! into one store of entries. The store's first entries are the idempotency index's records
//! that an open loaded, shared with the writer's index rather than copied
//! ([`SharedRecords`]); the entries applied since are the views' own. Every money command was
//! held twice before (64 bytes in the index, 64 in a list); a list position is 4 bytes. See
//! `docs/adr/0007-one-copy-of-the-transfers.md`.

use rustc_hash::FxHashMap;
use subledger_core::{
    AccountId, Amount, CommandId, Event, MoneyKind, MoneyRecord, Sequence, SharedRecords, Timestamp,
};

use super::{Reference, TransferEntry};

/// A money list's entry as queries read it, borrowed from the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct EntryRef<'a> {
    pub id: CommandId,
    pub seq: Sequence,
    pub at: Timestamp,
    /// Whose balance or credit it came from (a charge's payer).
    pub from: AccountId,
    /// Whose it went to (the charged account; for a top-up, the primary).
    pub to: AccountId,
    pub amount: Amount,
    pub reference: &'a str,
}

impl EntryRef<'_> {
    pub(crate) fn to_entry(self) -> TransferEntry {
        TransferEntry {
            id: self.id,
            seq: self.seq,
            at: self.at,
            from: self.from,
            to: self.to,
            amount: self.amount,
            reference: Reference::new(self.reference),
        }
    }

    /// The entry a record stands for in `family`'s lists (`primary_paid`: the charge was paid
    /// by the family's primary, which the record does not say).
    pub(crate) fn of_record(
        record: MoneyRecord<'_>,
        family: AccountId,
        primary_paid: bool,
    ) -> EntryRef<'_> {
        let (from, to) = match record.kind {
            MoneyKind::BalanceTransfer | MoneyKind::CreditTransfer => {
                (record.source, record.target)
            }
            MoneyKind::Charge if primary_paid => (family, record.source),
            MoneyKind::Charge | MoneyKind::TopUp => (record.source, record.source),
        };
        EntryRef {
            id: record.id,
            seq: record.seq,
            at: record.at,
            from,
            to,
            amount: record.amount,
            reference: record.reference,
        }
    }
}

impl TransferEntry {
    pub(crate) fn as_ref(&self) -> EntryRef<'_> {
        EntryRef {
            id: self.id,
            seq: self.seq,
            at: self.at,
            from: self.from,
            to: self.to,
            amount: self.amount,
            reference: self.reference.as_str(),
        }
    }
}

/// A set of positions, one bit each.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Bits(Vec<u64>);

impl Bits {
    pub(crate) fn set(&mut self, position: usize) {
        let word = position / 64;
        if self.0.len() <= word {
            self.0.resize(word + 1, 0);
        }
        self.0[word] |= 1 << (position % 64);
    }

    pub(crate) fn get(&self, position: usize) -> bool {
        self.0
            .get(position / 64)
            .is_some_and(|word| word >> (position % 64) & 1 == 1)
    }

    /// Every position set in `other`, moved up by `offset`.
    fn set_all(&mut self, other: &Bits, offset: usize) {
        for (index, word) in other.0.iter().enumerate() {
            for bit in 0..64 {
                if word >> bit & 1 == 1 {
                    self.set(offset + index * 64 + bit);
                }
            }
        }
    }
}

/// Where the lists' positions point: records shared with the index, then the views' own
/// entries.
#[derive(Debug, Clone, Default)]
pub(crate) struct MoneyStore {
    /// Positions `0..shared.len()`.
    pub shared: SharedRecords,
    /// By shared position: a charge its family's primary paid.
    pub primary_paid: Bits,
    /// Positions from `shared.len()` on.
    pub entries: Vec<TransferEntry>,
}

impl MoneyStore {
    pub(crate) fn len(&self) -> usize {
        self.shared.len() + self.entries.len()
    }

    /// The entry at `position` of a list of `family`.
    pub(crate) fn get(&self, family: AccountId, position: u32) -> Option<EntryRef<'_>> {
        let position = usize::try_from(position).ok()?;
        match position.checked_sub(self.shared.len()) {
            Some(own) => self.entries.get(own).map(TransferEntry::as_ref),
            None => {
                let record = self.shared.get(position)?;
                Some(EntryRef::of_record(
                    record,
                    family,
                    self.primary_paid.get(position),
                ))
            }
        }
    }

    /// Adds an entry; its position, or `None` (and nothing added) past `u32::MAX` entries.
    pub(crate) fn push(&mut self, entry: TransferEntry) -> Option<u32> {
        let position = u32::try_from(self.len()).ok()?;
        self.entries.push(entry);
        Some(position)
    }
}

impl MoneyStore {
    /// Replaces the own entries that `shared` now holds (the writer's index froze them after
    /// the views applied them) with the shared records: the first step of each list's life
    /// is a copy in the views, the rest of it one record in memory. `false` (and nothing
    /// changes) unless these entries are exactly those records, at the same positions: views
    /// decoded from a snapshot format before 9 number their entries on their own and keep
    /// them.
    /// `family` maps an account to its primary: a charge's payer must be the charged account
    /// or that primary, the only payers a shared record can stand for.
    pub(crate) fn adopt(
        &mut self,
        shared: &SharedRecords,
        family: impl Fn(AccountId) -> AccountId,
    ) -> bool {
        let old = self.shared.len();
        let new = shared.len();
        if new <= old || !self.shared.is_prefix_of(shared) || self.len() < new {
            return false;
        }
        let adopted = new - old;
        let mut primary_paid = Vec::new();
        let pairs = self.entries[..adopted].iter().zip(shared.records_from(old));
        let mut checked = 0;
        for (offset, (entry, record)) in pairs.enumerate() {
            checked += 1;
            // The same command, field by field (a charge's payer is not in the record). Both
            // walks are sequential: this runs at memory speed, under the views' write lock.
            let accounts = match record.kind {
                MoneyKind::BalanceTransfer | MoneyKind::CreditTransfer => {
                    (record.source, record.target) == (entry.from, entry.to)
                }
                MoneyKind::Charge => {
                    record.source == entry.to
                        && (entry.from == entry.to || entry.from == family(entry.to))
                }
                MoneyKind::TopUp => (record.source, record.source) == (entry.from, entry.to),
            };
            let same = record.seq == entry.seq
                // As integers: a 16-byte array compare is a call to `memcmp`.
                && u128::from_le_bytes(record.id.to_bytes())
                    == u128::from_le_bytes(entry.id.to_bytes())
                && record.at == entry.at
                && record.amount == entry.amount
                && record.reference.len() == entry.reference.as_str().len()
                && (record.reference.is_empty() || record.reference == entry.reference.as_str());
            if !accounts || !same {
                return false;
            }
            if record.kind == MoneyKind::Charge && entry.from != entry.to {
                primary_paid.push(old + offset);
            }
        }
        if checked != adopted {
            return false;
        }
        for position in primary_paid {
            self.primary_paid.set(position);
        }
        self.entries.drain(..adopted);
        self.shared = shared.clone();
        true
    }
}

/// A family's balance and credit transfers, as store positions in sequence order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct History {
    pub balance: Vec<u32>,
    pub credit: Vec<u32>,
}

/// A family's charges (`from` = payer, `to` = the charged account) and top-ups (`from` = `to`
/// = the primary), as store positions in sequence order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Payments {
    pub charges: Vec<u32>,
    pub top_ups: Vec<u32>,
}

/// Which of a family's four lists a money command goes to: 0 balance transfers, 1 credit
/// transfers, 2 charges, 3 top-ups.
pub(crate) fn list_of(kind: MoneyKind) -> usize {
    match kind {
        MoneyKind::BalanceTransfer => 0,
        MoneyKind::CreditTransfer => 1,
        MoneyKind::Charge => 2,
        MoneyKind::TopUp => 3,
    }
}

/// A money event's family (by `family`, from its source or charged account), list, and entry.
fn money_entry(
    seq: Sequence,
    at: Timestamp,
    event: &Event,
    family: impl Fn(AccountId) -> AccountId,
) -> Option<(AccountId, usize, TransferEntry)> {
    // (command, from, to, amount, reference, list, the account whose family lists it)
    let (command, from, to, amount, reference, list, owner) = match event {
        Event::BalanceTransferred {
            command,
            source,
            target,
            amount,
            reference,
        } => (command, source, target, amount, reference, 0, source),
        Event::CreditTransferred {
            command,
            source,
            target,
            amount,
            reference,
        } => (command, source, target, amount, reference, 1, source),
        Event::Charged {
            command,
            account,
            payer,
            amount,
            reference,
        } => (command, payer, account, amount, reference, 2, account),
        Event::ToppedUp {
            command,
            account,
            amount,
            reference,
        } => (command, account, account, amount, reference, 3, account),
        _ => return None,
    };
    let entry = TransferEntry {
        id: *command,
        seq,
        at,
        from: *from,
        to: *to,
        amount: *amount,
        reference: Reference::new(reference),
    };
    Some((family(*owner), list, entry))
}

/// Each family's money movements: transfers (balance and credit) and payments (charges and
/// top-ups), keyed by the primary, and the store their positions point into.
#[derive(Debug, Clone, Default)]
pub(crate) struct MoneyLists {
    pub history: FxHashMap<AccountId, History>,
    pub payments: FxHashMap<AccountId, Payments>,
    pub store: MoneyStore,
}

impl MoneyLists {
    /// The list `list` (see [`list_of`]) of `family`, created with its family's entry.
    pub(crate) fn list_mut(&mut self, family: AccountId, list: usize) -> &mut Vec<u32> {
        if list < 2 {
            let lists = self.history.entry(family).or_default();
            if list == 0 {
                &mut lists.balance
            } else {
                &mut lists.credit
            }
        } else {
            let lists = self.payments.entry(family).or_default();
            if list == 2 {
                &mut lists.charges
            } else {
                &mut lists.top_ups
            }
        }
    }

    /// Whether the store has room for one more entry.
    pub(crate) fn has_room(&self) -> bool {
        u32::try_from(self.store.len()).is_ok()
    }

    /// Adds the entry a money event calls for; `family` maps an account to its primary.
    /// Nothing past `u32::MAX` entries ([`MoneyLists::has_room`] says so first).
    pub(crate) fn record(
        &mut self,
        seq: Sequence,
        at: Timestamp,
        event: &Event,
        family: impl Fn(AccountId) -> AccountId,
    ) {
        if let Some((family, list, entry)) = money_entry(seq, at, event, family) {
            if let Some(position) = self.store.push(entry) {
                self.list_mut(family, list).push(position);
            }
        }
    }

    /// One list's entries.
    pub(crate) fn entries<'a>(
        &'a self,
        family: AccountId,
        list: &'a [u32],
    ) -> impl Iterator<Item = EntryRef<'a>> + 'a {
        list.iter()
            .filter_map(move |position| self.store.get(family, *position))
    }

    /// Whether two families' lists hold the same entries (whatever their positions).
    pub(crate) fn same_entries(&self, other: &MoneyLists) -> bool {
        let same = |family: AccountId, mine: &[u32], theirs: &[u32]| {
            mine.len() == theirs.len()
                && self.entries(family, mine).eq(other.entries(family, theirs))
        };
        self.history.len() == other.history.len()
            && self.payments.len() == other.payments.len()
            && self.history.iter().all(|(family, mine)| {
                other.history.get(family).is_some_and(|theirs| {
                    same(*family, &mine.balance, &theirs.balance)
                        && same(*family, &mine.credit, &theirs.credit)
                })
            })
            && self.payments.iter().all(|(family, mine)| {
                other.payments.get(family).is_some_and(|theirs| {
                    same(*family, &mine.charges, &theirs.charges)
                        && same(*family, &mine.top_ups, &theirs.top_ups)
                })
            })
    }

    /// Adds `entries` (decoded from a snapshot that stores them) to the store and to
    /// `family`'s list `list`. `None` past `u32::MAX` entries.
    pub(crate) fn push_entries(
        &mut self,
        family: AccountId,
        list: usize,
        entries: Vec<TransferEntry>,
    ) -> Option<()> {
        let mut positions = Vec::with_capacity(entries.len());
        for entry in entries {
            positions.push(self.store.push(entry)?);
        }
        self.list_mut(family, list).extend(positions);
        Some(())
    }
}

/// Builds the families' money lists from events alone, off the thread that applies them to
/// the views (recovery's reader: see [`Views::apply_except_money_lists`](super::Views)), as
/// positions of the idempotency index's records, which the same thread appends from the same
/// events: the n-th money event is record n. It follows the accounts' families from the
/// creation events; events the views would refuse are recorded anyway, harmlessly: the replay
/// then fails and the lists are dropped.
#[derive(Debug)]
pub struct MoneyListsBuilder {
    pub(crate) history: FxHashMap<AccountId, History>,
    pub(crate) payments: FxHashMap<AccountId, Payments>,
    /// The index position of the first event's record.
    pub(crate) first: usize,
    /// The position of the next one.
    pub(crate) next: usize,
    /// Relative to `first`: charges paid by the family's primary.
    pub(crate) primary_paid: Bits,
    /// Each account's primary (its own id for a primary), by account index.
    families: Vec<AccountId>,
}

impl MoneyListsBuilder {
    /// A builder for the events after the views' last, whose records the index will hold from
    /// position `first` on (its length before them).
    pub(crate) fn new(families: Vec<AccountId>, first: usize) -> MoneyListsBuilder {
        MoneyListsBuilder {
            history: FxHashMap::default(),
            payments: FxHashMap::default(),
            first,
            next: first,
            primary_paid: Bits::default(),
            families,
        }
    }

    pub fn record(&mut self, event: &Event) {
        match event {
            // Only the next id (anything else fails the replay, which drops these lists).
            Event::PrimaryOpened { account, .. } if account.index() == self.families.len() => {
                self.families.push(*account);
            }
            Event::SubaccountCreated {
                account, primary, ..
            } if account.index() == self.families.len() => self.families.push(*primary),
            _ => {}
        }
        // Only where the entry goes: the entry itself is the record the index appends.
        let (account, list, primary_paid) = match event {
            Event::BalanceTransferred { source, .. } => (*source, 0, false),
            Event::CreditTransferred { source, .. } => (*source, 1, false),
            Event::Charged { account, payer, .. } => (*account, 2, payer != account),
            Event::ToppedUp { account, .. } => (*account, 3, false),
            _ => return,
        };
        let family = self
            .families
            .get(account.index())
            .copied()
            .unwrap_or(account);
        // Positions past `u32::MAX` cannot be: the index refuses such records, which fails
        // the replay.
        let Ok(position) = u32::try_from(self.next) else {
            return;
        };
        if primary_paid {
            self.primary_paid.set(self.next - self.first);
        }
        self.next += 1;
        let lists = &mut self.history;
        let payments = &mut self.payments;
        let target = match list {
            0 => &mut lists.entry(family).or_default().balance,
            1 => &mut lists.entry(family).or_default().credit,
            2 => &mut payments.entry(family).or_default().charges,
            _ => &mut payments.entry(family).or_default().top_ups,
        };
        target.push(position);
    }
}

impl MoneyLists {
    /// Adds what `built` recorded. With `shared` (the index's records, frozen, from position 0
    /// to the builder's last) and a store that already shares every record before the
    /// builder's first, the new positions point into `shared`; otherwise (lists decoded from an
    /// older snapshot format, numbered on their own) each entry is copied from `records` into
    /// the views' own store.
    pub(crate) fn append(
        &mut self,
        built: MoneyListsBuilder,
        shared: &SharedRecords,
    ) -> Result<(), String> {
        let aligned = self.store.entries.is_empty()
            && self.store.shared.len() == built.first
            && self.store.shared.is_prefix_of(shared)
            && shared.len() == built.next;
        let MoneyListsBuilder {
            history,
            payments,
            first,
            primary_paid,
            ..
        } = built;
        let lists = history
            .into_iter()
            .flat_map(|(family, History { balance, credit })| {
                [(family, 0, balance), (family, 1, credit)]
            })
            .chain(
                payments
                    .into_iter()
                    .flat_map(|(family, Payments { charges, top_ups })| {
                        [(family, 2, charges), (family, 3, top_ups)]
                    }),
            );
        if aligned {
            self.store.shared = shared.clone();
            self.store.primary_paid.set_all(&primary_paid, first);
            for (family, list, positions) in lists {
                self.list_mut(family, list).extend(positions);
            }
            return Ok(());
        }
        for (family, list, positions) in lists {
            let mut entries = Vec::with_capacity(positions.len());
            for position in positions {
                let place = usize::try_from(position).map_err(|_| "a position beyond memory")?;
                let record = shared
                    .get(place)
                    .ok_or("views: a replayed money command the index does not hold")?;
                let paid = place
                    .checked_sub(first)
                    .is_some_and(|relative| primary_paid.get(relative));
                entries.push(EntryRef::of_record(record, family, paid).to_entry());
            }
            self.push_entries(family, list, entries)
                .ok_or("views: more money commands than positions")?;
        }
        Ok(())
    }
}
