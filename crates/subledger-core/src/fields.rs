//! A fast path for decoding the records a snapshot holds by the million (history entries,
//! transfer entries, idempotency records) in bincode 2's standard encoding: variable-length
//! integers, little-endian.
//!
//! bincode decodes field by field through its reader, each integer returning a `Result` with
//! a large error type; for a 56-byte history entry that was ~80 ns, most of a snapshot's
//! decoding time. Here a record's fields are read from one borrowed slice. The fast path
//! accepts only what bincode would decode to the same value, and gives up (`None`) on
//! anything else — a short buffer, an unknown tag, an out-of-range value — so that the
//! caller's ordinary bincode decoding runs instead and reports exactly the error it always
//! did. The tests check both paths agree on every input.

use bincode::de::read::Reader;
use bincode::de::Decoder;

/// bincode's varint markers: below this a byte is the value itself.
const SINGLE_BYTE_MAX: u8 = 250;
const U16_MARKER: u8 = 251;
const U32_MARKER: u8 = 252;
const U64_MARKER: u8 = 253;
const U128_MARKER: u8 = 254;

/// Fields read in order from a borrowed slice.
#[derive(Debug)]
pub struct Fields<'a> {
    bytes: &'a [u8],
    used: usize,
    /// Refuse (`None`) an integer written wider than it needs, which bincode accepts.
    canonical: bool,
}

impl<'a> Fields<'a> {
    #[inline]
    pub fn new(bytes: &'a [u8]) -> Fields<'a> {
        Fields {
            bytes,
            used: 0,
            canonical: false,
        }
    }

    /// Reads only what bincode itself writes: an integer written wider than needed (bincode
    /// decodes it, to the same value as the shortest form) gives `None`. For the log, whose
    /// records must re-encode to the very bytes they were read from.
    #[inline]
    pub fn canonical(bytes: &'a [u8]) -> Fields<'a> {
        Fields {
            bytes,
            used: 0,
            canonical: true,
        }
    }

    /// `value`, unless it would have fitted below `narrower` and only the shortest form is
    /// accepted.
    #[inline]
    fn widened<T: PartialOrd>(&self, value: T, narrower: T) -> Option<T> {
        (!self.canonical || value > narrower).then_some(value)
    }

    /// Bytes read so far.
    #[inline]
    pub fn used(&self) -> usize {
        self.used
    }

    #[inline]
    fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        let end = self.used.checked_add(N)?;
        let taken: [u8; N] = self.bytes.get(self.used..end)?.try_into().ok()?;
        self.used = end;
        Some(taken)
    }

    #[inline]
    pub fn u8(&mut self) -> Option<u8> {
        self.take::<1>().map(|[byte]| byte)
    }

    /// A bool: 0 or 1.
    #[inline]
    pub fn bool(&mut self) -> Option<bool> {
        match self.u8()? {
            0 => Some(false),
            1 => Some(true),
            _ => None,
        }
    }

    /// An `Option`'s tag: whether a value follows.
    #[inline]
    pub fn is_some(&mut self) -> Option<bool> {
        self.bool()
    }

    /// The marker byte, or the value when it fits in one byte (`Err`).
    #[inline]
    fn marker(&mut self) -> Option<Result<u8, u8>> {
        let byte = self.u8()?;
        Some(if byte <= SINGLE_BYTE_MAX {
            Err(byte)
        } else {
            Ok(byte)
        })
    }

    #[inline]
    fn wide16(&mut self) -> Option<u16> {
        let value = self.take().map(u16::from_le_bytes)?;
        self.widened(value, u16::from(SINGLE_BYTE_MAX))
    }

    #[inline]
    fn wide32(&mut self) -> Option<u32> {
        let value = self.take().map(u32::from_le_bytes)?;
        self.widened(value, u32::from(u16::MAX))
    }

    #[inline]
    fn wide64(&mut self) -> Option<u64> {
        let value = self.take().map(u64::from_le_bytes)?;
        self.widened(value, u64::from(u32::MAX))
    }

    #[inline]
    fn wide128(&mut self) -> Option<u128> {
        let value = self.take().map(u128::from_le_bytes)?;
        self.widened(value, u128::from(u64::MAX))
    }

    #[inline]
    pub fn u32(&mut self) -> Option<u32> {
        match self.marker()? {
            Err(value) => Some(u32::from(value)),
            Ok(U16_MARKER) => self.wide16().map(u32::from),
            Ok(U32_MARKER) => self.wide32(),
            Ok(_) => None,
        }
    }

    #[inline]
    pub fn u64(&mut self) -> Option<u64> {
        match self.marker()? {
            Err(value) => Some(u64::from(value)),
            Ok(U16_MARKER) => self.wide16().map(u64::from),
            Ok(U32_MARKER) => self.wide32().map(u64::from),
            Ok(U64_MARKER) => self.wide64(),
            Ok(_) => None,
        }
    }

    #[inline]
    pub fn u128(&mut self) -> Option<u128> {
        match self.marker()? {
            Err(value) => Some(u128::from(value)),
            Ok(U16_MARKER) => self.wide16().map(u128::from),
            Ok(U32_MARKER) => self.wide32().map(u128::from),
            Ok(U64_MARKER) => self.wide64().map(u128::from),
            Ok(U128_MARKER) => self.wide128(),
            Ok(_) => None,
        }
    }

    /// Zigzag: 0, -1, 1, -2, … as 0, 1, 2, 3, …
    #[inline]
    pub fn i64(&mut self) -> Option<i64> {
        let n = self.u64()?;
        let magnitude = i64::try_from(n >> 1).ok()?;
        Some(if n & 1 == 0 { magnitude } else { !magnitude })
    }

    #[inline]
    pub fn i128(&mut self) -> Option<i128> {
        let n = self.u128()?;
        let magnitude = i128::try_from(n >> 1).ok()?;
        Some(if n & 1 == 0 { magnitude } else { !magnitude })
    }

    #[inline]
    pub fn bytes16(&mut self) -> Option<[u8; 16]> {
        self.take()
    }

    /// A `String`: its length, then UTF-8 bytes (`None` if they are not UTF-8).
    #[inline]
    pub fn string(&mut self) -> Option<String> {
        let len = usize::try_from(self.u64()?).ok()?;
        if len == 0 {
            return Some(String::new());
        }
        let end = self.used.checked_add(len)?;
        let text = std::str::from_utf8(self.bytes.get(self.used..end)?).ok()?;
        self.used = end;
        Some(text.to_owned())
    }
}

/// Fields written in order into a buffer on the stack, in bincode 2's standard encoding: the
/// writing side of [`Fields`]. bincode encodes field by field through its writer, each call
/// returning a `Result`; a snapshot writes records by the ten million, and that per-field cost
/// was a large part of the time a background snapshot took. Here a record is assembled on
/// the stack and handed to the writer in one call. The tests check the bytes equal bincode's own.
#[derive(Debug)]
pub struct Out<const N: usize> {
    bytes: [u8; N],
    len: usize,
}

impl<const N: usize> Default for Out<N> {
    fn default() -> Out<N> {
        Out {
            bytes: [0; N],
            len: 0,
        }
    }
}

impl<const N: usize> Out<N> {
    /// The bytes written so far.
    #[inline]
    pub fn as_slice(&self) -> &[u8] {
        &self.bytes[..self.len]
    }

    /// `None` when the buffer is full (the caller then encodes the ordinary way).
    #[inline]
    fn put(&mut self, bytes: &[u8]) -> Option<()> {
        let end = self.len.checked_add(bytes.len())?;
        self.bytes.get_mut(self.len..end)?.copy_from_slice(bytes);
        self.len = end;
        Some(())
    }

    #[inline]
    pub fn u8(&mut self, value: u8) -> Option<()> {
        self.put(&[value])
    }

    #[inline]
    pub fn bool(&mut self, value: bool) -> Option<()> {
        self.u8(u8::from(value))
    }

    /// An `Option`'s tag.
    #[inline]
    pub fn some(&mut self, present: bool) -> Option<()> {
        self.bool(present)
    }

    /// The shortest varint, as bincode writes every unsigned integer width.
    #[inline]
    pub fn u64(&mut self, value: u64) -> Option<()> {
        if value <= u64::from(SINGLE_BYTE_MAX) {
            self.put(&[value.to_le_bytes()[0]])
        } else if let Ok(value) = u16::try_from(value) {
            self.u8(U16_MARKER)?;
            self.put(&value.to_le_bytes())
        } else if let Ok(value) = u32::try_from(value) {
            self.u8(U32_MARKER)?;
            self.put(&value.to_le_bytes())
        } else {
            self.u8(U64_MARKER)?;
            self.put(&value.to_le_bytes())
        }
    }

    #[inline]
    pub fn u32(&mut self, value: u32) -> Option<()> {
        self.u64(u64::from(value))
    }

    #[inline]
    pub fn u128(&mut self, value: u128) -> Option<()> {
        match u64::try_from(value) {
            Ok(value) => self.u64(value),
            Err(_) => {
                self.u8(U128_MARKER)?;
                self.put(&value.to_le_bytes())
            }
        }
    }

    /// Zigzag, as [`Fields::i64`] reads it.
    #[inline]
    pub fn i64(&mut self, value: i64) -> Option<()> {
        // `!value` of a negative value is its magnitude less one, never negative.
        self.u64(if value < 0 {
            u64::try_from(!value).ok()? << 1 | 1
        } else {
            u64::try_from(value).ok()? << 1
        })
    }

    #[inline]
    pub fn i128(&mut self, value: i128) -> Option<()> {
        self.u128(if value < 0 {
            u128::try_from(!value).ok()? << 1 | 1
        } else {
            u128::try_from(value).ok()? << 1
        })
    }

    #[inline]
    pub fn bytes16(&mut self, value: &[u8; 16]) -> Option<()> {
        self.put(value)
    }
}

/// Encodes one record with `write` into a buffer of `N` bytes and hands it to the encoder's
/// writer in one call, when the encoder uses the standard layout and the record fits; `None`
/// (nothing written) means: encode it the ordinary way.
#[inline]
pub fn encode_fast<E: bincode::enc::Encoder, const N: usize>(
    encoder: &mut E,
    write: impl FnOnce(&mut Out<N>) -> Option<()>,
) -> Option<Result<(), bincode::error::EncodeError>> {
    use bincode::enc::write::Writer;
    if !standard_layout(*encoder.config()) {
        return None;
    }
    let mut out = Out::<N>::default();
    write(&mut out)?;
    Some(encoder.writer().write(out.as_slice()))
}

/// Whether `config` writes integers as bincode's standard config does (varint, little-endian):
/// the only layout [`Fields`] reads. Checked by encoding a probe (folded to a constant for a
/// given config type).
#[inline]
fn standard_layout<C: bincode::config::Config>(config: C) -> bool {
    let mut probe = [0u8; 8];
    matches!(
        bincode::encode_into_slice(300_u32, &mut probe, config),
        Ok(3)
    ) && probe[..3] == [U16_MARKER, 44, 1]
}

/// Decodes one record with `parse` from the next `max` bytes, when the decoder reads a slice
/// with that many left and uses the standard layout; consumes exactly what `parse` read.
/// `None` (nothing consumed) means: decode it the ordinary way.
#[inline]
pub fn decode_fast<D: Decoder, T>(
    decoder: &mut D,
    max: usize,
    parse: impl FnOnce(&mut Fields<'_>) -> Option<T>,
) -> Option<T> {
    if !standard_layout(*decoder.config()) {
        return None;
    }
    let bytes = decoder.reader().peek_read(max)?;
    let mut fields = Fields::new(bytes);
    let value = parse(&mut fields)?;
    let used = fields.used();
    decoder.reader().consume(used);
    Some(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn encoded<T: bincode::Encode>(value: T) -> Vec<u8> {
        bincode::encode_to_vec(value, bincode::config::standard()).unwrap_or_default()
    }

    fn generic<T: bincode::Decode<()>>(bytes: &[u8]) -> Option<T> {
        bincode::decode_from_slice::<T, _>(bytes, bincode::config::standard())
            .ok()
            .map(|(value, _)| value)
    }

    #[test]
    fn integers_at_the_edges_are_written_as_bincode_writes_them() {
        for value in [
            0,
            250,
            251,
            255,
            256,
            65_535,
            65_536,
            u64::from(u32::MAX),
            u64::from(u32::MAX) + 1,
            u64::MAX,
        ] {
            let mut out = Out::<17>::default();
            out.u64(value).unwrap();
            assert_eq!(out.as_slice(), &encoded(value)[..], "{value}");
        }
        for value in [0, -1, 1, -126, 125, -127, 126, i64::MIN, i64::MAX] {
            let mut out = Out::<17>::default();
            out.i64(value).unwrap();
            assert_eq!(out.as_slice(), &encoded(value)[..], "{value}");
        }
        for value in [i128::MIN, i128::MAX, -(1 << 70), 1 << 70, -1] {
            let mut out = Out::<17>::default();
            out.i128(value).unwrap();
            assert_eq!(out.as_slice(), &encoded(value)[..], "{value}");
        }
        // A full buffer refuses, and keeps what it had.
        let mut out = Out::<3>::default();
        assert_eq!(out.u64(65_535), Some(()));
        assert_eq!(out.u8(1), None);
        assert_eq!(out.as_slice().len(), 3);
    }

    #[test]
    fn the_standard_layout_is_recognised_and_others_are_not() {
        assert!(standard_layout(bincode::config::standard()));
        assert!(!standard_layout(
            bincode::config::standard().with_fixed_int_encoding()
        ));
        assert!(!standard_layout(
            bincode::config::standard().with_big_endian()
        ));
    }

    #[test]
    fn integers_written_wider_than_needed_are_read_only_when_not_canonical() {
        let wider = [
            vec![U16_MARKER, 5, 0],
            vec![U32_MARKER, 0xff, 0xff, 0, 0],
            vec![U64_MARKER, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0],
            [
                vec![U128_MARKER],
                u128::from(u64::MAX).to_le_bytes().to_vec(),
            ]
            .concat(),
        ];
        for bytes in wider {
            let value = generic::<u128>(&bytes);
            assert!(value.is_some(), "bincode reads {bytes:?}");
            assert_eq!(Fields::new(&bytes).u128(), value);
            assert_eq!(Fields::canonical(&bytes).u128(), None, "{bytes:?}");
        }
        // The shortest forms pass.
        for value in [250_u128, 251, 65_536, u128::from(u64::MAX) + 1] {
            let bytes = encoded(value);
            assert_eq!(Fields::canonical(&bytes).u128(), Some(value));
        }
    }

    proptest! {
        /// Every integer reads back as bincode wrote it, using the same bytes.
        #[test]
        fn integers_read_as_bincode_wrote_them(
            small in any::<u32>(),
            wide in any::<u64>(),
            widest in any::<u128>(),
            signed in any::<i64>(),
            signed_wide in any::<i128>(),
        ) {
            let bytes = encoded((small, wide, widest, signed, signed_wide));
            let mut fields = Fields::new(&bytes);
            prop_assert_eq!(fields.u32(), Some(small));
            prop_assert_eq!(fields.u64(), Some(wide));
            prop_assert_eq!(fields.u128(), Some(widest));
            prop_assert_eq!(fields.i64(), Some(signed));
            prop_assert_eq!(fields.i128(), Some(signed_wide));
            prop_assert_eq!(fields.used(), bytes.len());
        }

        /// Written the fast way, every integer takes the bytes bincode writes.
        #[test]
        fn integers_written_as_bincode_writes_them(
            small in any::<u32>(),
            wide in any::<u64>(),
            widest in any::<u128>(),
            signed in any::<i64>(),
            signed_wide in any::<i128>(),
            flag in any::<bool>(),
            id in any::<[u8; 16]>(),
        ) {
            let mut out = Out::<128>::default();
            out.u32(small).unwrap();
            out.u64(wide).unwrap();
            out.u128(widest).unwrap();
            out.i64(signed).unwrap();
            out.i128(signed_wide).unwrap();
            out.bool(flag).unwrap();
            out.bytes16(&id).unwrap();
            prop_assert_eq!(out.as_slice(), &encoded((small, wide, widest, signed, signed_wide, flag, id))[..]);
        }

        /// The canonical reading accepts exactly what bincode writes: it reads back every
        /// integer bincode wrote, and refuses anything else whose value re-encodes differently.
        #[test]
        fn canonical_reading_accepts_only_what_bincode_writes(bytes in proptest::collection::vec(any::<u8>(), 0..40), widest in any::<u128>(), wide in any::<u64>()) {
            let written = encoded((wide, widest));
            let mut fields = Fields::canonical(&written);
            prop_assert_eq!((fields.u64(), fields.u128()), (Some(wide), Some(widest)));
            let mut fields = Fields::canonical(&bytes);
            if let (Some(first), Some(second)) = (fields.u64(), fields.u128()) {
                prop_assert_eq!(&bytes[..fields.used()], &encoded((first, second))[..]);
            }
        }

        /// On arbitrary bytes the fast reading never accepts what bincode refuses, and agrees
        /// with it on what both accept.
        #[test]
        fn arbitrary_bytes_never_read_otherwise_than_bincode(bytes in proptest::collection::vec(any::<u8>(), 0..40)) {
            let mut fields = Fields::new(&bytes);
            let fast = (|| Some((fields.u32()?, fields.u64()?, fields.i64()?, fields.i128()?, fields.bool()?)))();
            if let Some(value) = fast {
                prop_assert_eq!(generic::<(u32, u64, i64, i128, bool)>(&bytes), Some(value));
            }
        }
    }
}
