//! The families' money lists as snapshot format 9 stores them: not the entries, which repeat
//! the idempotency index's records one for one, but each family's four list lengths and, per
//! charge, whether the primary paid it (the record keeps the charged account only). The lists
//! are rebuilt from the records at open ([`Views::rebuild_money_lists`]): every list is in
//! sequence order, as the records are, and a record's family is its source's primary, which
//! never changes. See `docs/adr/0007-one-copy-of-the-transfers.md`.

use bincode::{Decode, Encode};
use subledger_core::{AccountId, MoneyKind, MoneyRecord, Records, SharedRecords};

use super::money::{list_of, Bits, History, MoneyLists, MoneyStore, Payments};
use super::{family_of_in, Views};

/// Lists per family: balance transfers, credit transfers, charges, top-ups.
const LISTS: usize = 4;

/// One family's lists: their lengths and the charges' payers, one bit per charge in order
/// (set: the primary paid).
#[derive(Debug, Clone, PartialEq, Eq)]
struct FamilyShape {
    family: AccountId,
    /// Which of the family's two entries exist (`HAS_TRANSFERS`, `HAS_PAYMENTS`), so that
    /// the rebuilt maps have exactly the keys the written ones had, even for empty lists.
    kept: u8,
    lengths: [u64; LISTS],
    paid_by_primary: Vec<u64>,
}

/// The shape of every family's money lists (see the module comment).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MoneyListShapes {
    families: Vec<FamilyShape>,
}

/// Money lists rebuilt from records, to attach with [`Views::attach_money_lists`].
#[derive(Debug)]
pub struct RebuiltMoneyLists(MoneyLists);

const HAS_TRANSFERS: u8 = 1;
const HAS_PAYMENTS: u8 = 1 << 1;

fn words_for(bits: u64) -> u64 {
    bits.div_ceil(64)
}

impl Encode for MoneyListShapes {
    fn encode<E: bincode::enc::Encoder>(
        &self,
        encoder: &mut E,
    ) -> Result<(), bincode::error::EncodeError> {
        (self.families.len() as u64).encode(encoder)?;
        for shape in &self.families {
            shape.family.encode(encoder)?;
            shape.kept.encode(encoder)?;
            for length in shape.lengths {
                length.encode(encoder)?;
            }
            // The count is the charges' length: not written again.
            for word in &shape.paid_by_primary {
                word.encode(encoder)?;
            }
        }
        Ok(())
    }
}

impl<Context> Decode<Context> for MoneyListShapes {
    fn decode<D: bincode::de::Decoder<Context = Context>>(
        decoder: &mut D,
    ) -> Result<Self, bincode::error::DecodeError> {
        let refused = bincode::error::DecodeError::Other;
        let length = |decoder: &mut D| {
            usize::try_from(u64::decode(decoder)?)
                .map_err(|_| refused("views: a length beyond memory"))
        };
        let count = length(decoder)?;
        decoder.claim_container_read::<FamilyShape>(count)?;
        let mut families = Vec::with_capacity(count);
        for _ in 0..count {
            let family = AccountId::decode(decoder)?;
            let kept = u8::decode(decoder)?;
            let mut lengths = [0u64; LISTS];
            for length in &mut lengths {
                *length = u64::decode(decoder)?;
            }
            // The positions a rebuild will allocate, claimed now against the decoding limit.
            let entries = lengths.iter().try_fold(0usize, |sum, length| {
                usize::try_from(*length)
                    .ok()
                    .and_then(|length| sum.checked_add(length))
            });
            let entries = entries.ok_or(refused("views: a length beyond memory"))?;
            decoder.claim_container_read::<u32>(entries)?;
            let words = usize::try_from(words_for(lengths[2]))
                .map_err(|_| refused("views: a length beyond memory"))?;
            decoder.claim_container_read::<u64>(words)?;
            let mut paid_by_primary = Vec::with_capacity(words);
            for _ in 0..words {
                paid_by_primary.push(u64::decode(decoder)?);
            }
            families.push(FamilyShape {
                family,
                kept,
                lengths,
                paid_by_primary,
            });
        }
        Ok(MoneyListShapes { families })
    }
}
bincode::impl_borrow_decode!(MoneyListShapes);

/// Where each record's entry sits: by family, the next entry of each list.
struct Cursors {
    /// By account index: the family's place in the shapes (`u32::MAX`: none).
    slot: Vec<u32>,
}

impl Cursors {
    fn new(accounts: usize, families: impl Iterator<Item = AccountId>) -> Result<Cursors, String> {
        let mut slot = vec![u32::MAX; accounts];
        for (place, family) in families.enumerate() {
            let place = u32::try_from(place).map_err(|_| "views: too many families")?;
            match slot.get_mut(family.index()) {
                Some(entry) if *entry == u32::MAX => *entry = place,
                Some(_) => return Err("views: a family's money lists twice".into()),
                None => return Err("views: money lists of an unknown account".into()),
            }
        }
        Ok(Cursors { slot })
    }

    fn place(&self, family: AccountId) -> Option<usize> {
        let place = *self.slot.get(family.index())?;
        (place != u32::MAX).then_some(place as usize)
    }
}

impl Views {
    /// The shape of the families' money lists, checked entry by entry against `records` (the
    /// idempotency index's, in log order): a snapshot stores only the shape and its open
    /// rebuilds the lists from the records, so lists that the records would not rebuild
    /// exactly must not be written.
    pub fn money_list_shapes(&self, records: Records<'_>) -> Result<MoneyListShapes, String> {
        let mismatch = |what: &str| format!("views: the money lists and the index differ ({what})");
        let mut families: Vec<AccountId> = self.money.history.keys().copied().collect();
        families.extend(
            self.money
                .payments
                .keys()
                .filter(|family| !self.money.history.contains_key(family)),
        );
        families.sort_unstable();
        let cursors = Cursors::new(self.account_count(), families.iter().copied())?;
        let empty_history = History::default();
        let empty_payments = Payments::default();
        let store = &self.money.store;
        let lists: Vec<[&[u32]; LISTS]> = families
            .iter()
            .map(|family| {
                let history = self.money.history.get(family).unwrap_or(&empty_history);
                let payments = self.money.payments.get(family).unwrap_or(&empty_payments);
                [
                    &history.balance[..],
                    &history.credit[..],
                    &payments.charges[..],
                    &payments.top_ups[..],
                ]
            })
            .collect();
        let mut next = vec![[0usize; LISTS]; families.len()];
        let mut shapes: Vec<FamilyShape> = families
            .iter()
            .zip(&lists)
            .map(|(family, lists)| FamilyShape {
                family: *family,
                kept: (u8::from(self.money.history.contains_key(family)) * HAS_TRANSFERS)
                    | (u8::from(self.money.payments.contains_key(family)) * HAS_PAYMENTS),
                lengths: lists.map(|list| list.len() as u64),
                paid_by_primary: vec![0; lists[2].len().div_ceil(64)],
            })
            .collect();
        for record in records.iter() {
            let family = self
                .form
                .family_of_known(record.source)
                .ok_or_else(|| mismatch("an unknown account"))?;
            let place = cursors
                .place(family)
                .ok_or_else(|| mismatch("a family without lists"))?;
            let list = list_of(record.kind);
            let at = next[place][list];
            let entry = lists[place][list]
                .get(at)
                .and_then(|position| store.get(family, *position))
                .ok_or_else(|| mismatch("a list shorter than its records"))?;
            let (from, to) = (entry.from, entry.to);
            let payer_is_primary = record.kind == MoneyKind::Charge && from != record.source;
            let expected_from = if payer_is_primary {
                family
            } else {
                record.source
            };
            let expected_to = match record.kind {
                MoneyKind::BalanceTransfer | MoneyKind::CreditTransfer => record.target,
                MoneyKind::Charge | MoneyKind::TopUp => record.source,
            };
            if entry.id != record.id
                || entry.seq != record.seq
                || entry.at != record.at
                || entry.amount != record.amount
                || entry.reference != record.reference
                || from != expected_from
                || to != expected_to
            {
                return Err(mismatch("an entry"));
            }
            if payer_is_primary {
                shapes[place].paid_by_primary[at / 64] |= 1 << (at % 64);
            }
            next[place][list] = at + 1;
        }
        let consumed = next
            .iter()
            .zip(&lists)
            .all(|(next, lists)| (0..LISTS).all(|list| next[list] == lists[list].len()));
        if !consumed {
            return Err(mismatch("entries without a record"));
        }
        Ok(MoneyListShapes { families: shapes })
    }

    /// Rebuilds the families' money lists from `shapes` and `records` (the idempotency index's,
    /// frozen, in log order), checking each entry as format 7's decoding checks its lists:
    /// every list within its family, in sequence order, time never going back, nothing after
    /// the views' last event; and the lists exactly as long as `shapes` says. The lists hold
    /// the records' positions and share the records (no copy). Success also means every
    /// record passes `State::attach_command_index`'s check against these views' state (known
    /// accounts, nothing after the last event), so the index can be attached with
    /// `State::attach_checked_command_index`.
    pub fn rebuild_money_lists(
        &self,
        shapes: &MoneyListShapes,
        records: &SharedRecords,
    ) -> Result<RebuiltMoneyLists, &'static str> {
        let state = self
            .state()
            .ok_or("views: live read views keep no state to rebuild money lists on")?;
        let cursors = Cursors::new(
            state.account_count(),
            shapes.families.iter().map(|shape| shape.family),
        )
        .map_err(|_| "views: money lists of an unknown account or twice")?;
        let mut lists: Vec<[Vec<u32>; LISTS]> = Vec::with_capacity(shapes.families.len());
        for shape in &shapes.families {
            if family_of_in(state, shape.family) != Some(shape.family) {
                return Err("views: money lists of an account that is not a primary");
            }
            let mut four: [Vec<u32>; LISTS] = Default::default();
            for (list, length) in four.iter_mut().zip(shape.lengths) {
                // Claimed against the decoding limit when the shapes were decoded.
                *list = Vec::with_capacity(usize::try_from(length).unwrap_or(0));
            }
            lists.push(four);
        }
        // Each account's family's place in `shapes`, read densely (4 bytes per account,
        // rather than each 104-byte account's primary): the records visit accounts at random.
        let places: Vec<u32> = state
            .accounts()
            .map(|(id, account)| {
                let family = account.primary().unwrap_or(id);
                cursors
                    .place(family)
                    .and_then(|place| u32::try_from(place).ok())
                    .unwrap_or(u32::MAX)
            })
            .collect();
        let place_of = |id: AccountId| {
            places
                .get(id.index())
                .copied()
                .filter(|place| *place != u32::MAX)
                .map(|place| place as usize)
        };
        let (last, last_at) = (state.last_seq(), state.last_at());
        let mut previous: Option<MoneyRecord<'_>> = None;
        let mut primary_paid = Bits::default();
        for (position, record) in records.records().enumerate() {
            let position32 =
                u32::try_from(position).map_err(|_| "views: more money commands than positions")?;
            if previous
                .is_some_and(|previous| previous.seq >= record.seq || previous.at > record.at)
                || record.seq > last
                || record.at > last_at
            {
                return Err("views: a money list is out of order");
            }
            previous = Some(record);
            let place = place_of(record.source)
                .ok_or("views: a money command of an unknown account or a family without lists")?;
            let list = list_of(record.kind);
            let (Some(shape), Some(four)) = (shapes.families.get(place), lists.get_mut(place))
            else {
                return Err("views: a money command of a family without lists");
            };
            let at = four[list].len();
            if at as u64 >= shape.lengths[list] {
                return Err("views: a money list longer than its shape");
            }
            match record.kind {
                MoneyKind::BalanceTransfer | MoneyKind::CreditTransfer => {
                    // One place per family: the same place, the same family.
                    if place_of(record.target) != Some(place) {
                        return Err("views: a transfer history does not fit its family");
                    }
                }
                MoneyKind::Charge | MoneyKind::TopUp if record.target != record.source => {
                    return Err("views: a payment names two accounts");
                }
                MoneyKind::Charge => {
                    let word = shape.paid_by_primary.get(at / 64).copied().unwrap_or(0);
                    if word >> (at % 64) & 1 == 1 {
                        primary_paid.set(position);
                    }
                }
                MoneyKind::TopUp => {}
            }
            four[list].push(position32);
        }
        let mut money = MoneyLists {
            store: MoneyStore {
                shared: records.clone(),
                primary_paid,
                entries: Vec::new(),
            },
            ..MoneyLists::default()
        };
        for (shape, [balance, credit, charges, top_ups]) in shapes.families.iter().zip(lists) {
            let built = [balance.len(), credit.len(), charges.len(), top_ups.len()];
            if built
                .iter()
                .zip(shape.lengths)
                .any(|(built, length)| *built as u64 != length)
            {
                return Err("views: a money list shorter than its shape");
            }
            let transfers = shape.kept & HAS_TRANSFERS != 0;
            let payments = shape.kept & HAS_PAYMENTS != 0;
            if shape.kept & !(HAS_TRANSFERS | HAS_PAYMENTS) != 0
                || shape.kept == 0
                || (!transfers && built[..2].iter().any(|len| *len > 0))
                || (!payments && built[2..].iter().any(|len| *len > 0))
            {
                return Err("views: a money list's shape is inconsistent");
            }
            if transfers {
                money
                    .history
                    .insert(shape.family, History { balance, credit });
            }
            if payments {
                money
                    .payments
                    .insert(shape.family, Payments { charges, top_ups });
            }
        }
        Ok(RebuiltMoneyLists(money))
    }

    /// Replaces the families' money lists with rebuilt ones (after
    /// [`Views::attach_histories`], which sets the payments a format-9 snapshot leaves empty).
    pub fn attach_money_lists(&mut self, RebuiltMoneyLists(lists): RebuiltMoneyLists) {
        self.money = lists;
    }
}
