//! Reading a snapshot piecewise: each section streams through one small buffer that is
//! reused, instead of the whole file being read into memory first.
//!
//! Why: a 10M-transfer snapshot is 1.5 GB. Read whole, its buffer was fresh memory, and on this
//! project's machine kind the first touch of fresh memory costs ~0.55 s per GB in the kernel
//! (`cargo run --release -p subledger-bench --example first_touch`), a fifth of the snapshot's
//! recovery before any decoding began. A reused buffer stays resident and in cache, so the only
//! fresh memory left is what the decoded views themselves need.

use bincode::de::read::Reader;
use bincode::error::DecodeError;
use subledger_log::ReadAt;

/// The buffer of one section's reader. Large enough that refills are rare next to decoding
/// (one read call per MiB), small enough to stay in the second-level cache's neighbourhood.
pub(crate) const SECTION_BUFFER_BYTES: usize = 1 << 20;

/// bincode's reader over `len` bytes of `source` from `offset`, through a buffer of
/// `buffer_bytes`. It lends the buffered bytes to the decoders' fast paths (`peek_read`)
/// whenever the buffer can hold what they ask for, as a slice reader would.
pub(crate) struct SectionReader<'a> {
    source: &'a dyn ReadAt,
    /// The source offset of the first byte not yet in `buffer`.
    next: u64,
    end: u64,
    buffer: Vec<u8>,
    /// `buffer[start..filled]` is read from the source and not yet consumed.
    start: usize,
    filled: usize,
    /// The first read error: decoding then ends as if the section had, and the caller reports
    /// this instead of what the decoder made of the missing bytes.
    error: Option<std::io::Error>,
    /// The hash of every byte read from the source so far, when asked for
    /// ([`SectionReader::hashed`]).
    hasher: Option<Hasher>,
}

impl<'a> SectionReader<'a> {
    pub(crate) fn new(
        source: &'a dyn ReadAt,
        offset: u64,
        len: u64,
        buffer_bytes: usize,
    ) -> SectionReader<'a> {
        let end = offset.saturating_add(len).min(source.size());
        // Never larger than the section: small snapshots need no megabyte of buffer.
        let buffer_len = usize::try_from(end.saturating_sub(offset))
            .unwrap_or(usize::MAX)
            .clamp(1, buffer_bytes.max(1));
        SectionReader {
            source,
            next: offset,
            end,
            buffer: vec![0; buffer_len],
            start: 0,
            filled: 0,
            error: None,
            hasher: None,
        }
    }

    /// The same reader, also hashing the section with `hash` as it reads it (snapshot formats
    /// 7 and 8 check each section's hash: no separate pass over the file).
    pub(crate) fn hashed(mut self, hash: SectionHash) -> SectionReader<'a> {
        self.hasher = Some(hash.hasher());
        self
    }

    /// Reads whatever of the section is left unread and returns the hash of all of it: `None`
    /// if this reader does not hash, `Some(None)` if a read failed, now or before (the error
    /// stays for [`SectionReader::take_error`]; a failed read is not tried again).
    pub(crate) fn finish_hash(&mut self) -> Option<Option<Digest>> {
        self.hasher.as_ref()?;
        self.start = self.filled;
        while self.refill() {
            self.start = self.filled;
        }
        if self.error.is_some() {
            return Some(None);
        }
        self.hasher.as_ref().map(|hasher| Some(hasher.finalize()))
    }

    fn buffered(&self) -> usize {
        self.filled - self.start
    }

    /// Moves what is left to the front and reads as much as fits. `false` when nothing more
    /// could be read (the section's end, or an error, kept in `error`).
    fn refill(&mut self) -> bool {
        if self.error.is_some() || self.next >= self.end {
            return false;
        }
        self.buffer.copy_within(self.start..self.filled, 0);
        self.filled -= self.start;
        self.start = 0;
        let room = self.buffer.len() - self.filled;
        let left = usize::try_from(self.end - self.next).unwrap_or(usize::MAX);
        let wanted = room.min(left);
        if wanted == 0 {
            return false;
        }
        let target = &mut self.buffer[self.filled..self.filled + wanted];
        match self.source.read_exact_at(target, self.next) {
            Ok(()) => {
                if let Some(hasher) = &mut self.hasher {
                    hasher.update(target);
                }
                self.filled += wanted;
                self.next += wanted as u64;
                true
            }
            Err(error) => {
                self.error = Some(error);
                false
            }
        }
    }

    /// Whether every byte of the section was read and consumed.
    pub(crate) fn finished(&self) -> bool {
        self.buffered() == 0 && self.next >= self.end && self.error.is_none()
    }

    /// The read error that cut the section short, if one did.
    pub(crate) fn take_error(&mut self) -> Option<std::io::Error> {
        self.error.take()
    }
}

impl Reader for SectionReader<'_> {
    fn read(&mut self, bytes: &mut [u8]) -> Result<(), DecodeError> {
        let mut done = 0;
        while done < bytes.len() {
            if self.buffered() == 0 && !self.refill() {
                return Err(DecodeError::UnexpectedEnd {
                    additional: bytes.len() - done,
                });
            }
            let count = self.buffered().min(bytes.len() - done);
            bytes[done..done + count].copy_from_slice(&self.buffer[self.start..self.start + count]);
            self.start += count;
            done += count;
        }
        Ok(())
    }

    fn peek_read(&mut self, n: usize) -> Option<&[u8]> {
        // Refill only when the buffer could then hold `n`; near the section's end (or for a
        // request larger than the buffer) the caller falls back to `read`, as it would on a
        // slice with fewer than `n` bytes left.
        if self.buffered() < n && n <= self.buffer.len() {
            self.refill();
        }
        if self.buffered() < n {
            return None;
        }
        self.buffer.get(self.start..self.start + n)
    }

    fn consume(&mut self, n: usize) {
        self.start += n.min(self.buffered());
    }
}

/// How a snapshot's sections are hashed. Format 7 used BLAKE3; format 8 uses XXH3-128, which
/// runs at ~21 GB/s on this project's machine kind against BLAKE3's ~4.6 GB/s (AVX-512): at
/// 10M transfers hashing the 2 GB of sections took ~0.4 s of CPU in every snapshot written
/// and every one opened. The section hashes only detect damage (a torn or rotted file), which
/// a 128-bit non-cryptographic hash does; they never stood against a forger, who can rewrite
/// any unkeyed checksum — snapshots are trusted because they must match the log's BLAKE3 hash
/// chain, and `subledger verify` replays the log against every snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SectionHash {
    Blake3,
    Xxh3,
}

impl SectionHash {
    pub(crate) fn hasher(self) -> Hasher {
        match self {
            SectionHash::Blake3 => Hasher::Blake3(Box::default()),
            SectionHash::Xxh3 => Hasher::Xxh3(Box::default()),
        }
    }

    /// The digest of `bytes`.
    pub(crate) fn of(self, bytes: &[u8]) -> Digest {
        let mut hasher = self.hasher();
        hasher.update(bytes);
        hasher.finalize()
    }
}

/// A section hash in progress (boxed: BLAKE3's state is ~1.9 KB, XXH3's ~0.6 KB).
pub(crate) enum Hasher {
    Blake3(Box<blake3::Hasher>),
    Xxh3(Box<xxhash_rust::xxh3::Xxh3>),
}

impl Hasher {
    pub(crate) fn update(&mut self, bytes: &[u8]) {
        match self {
            Hasher::Blake3(hasher) => {
                hasher.update(bytes);
            }
            Hasher::Xxh3(hasher) => hasher.update(bytes),
        }
    }

    pub(crate) fn finalize(&self) -> Digest {
        match self {
            Hasher::Blake3(hasher) => Digest::Blake3(*hasher.finalize().as_bytes()),
            Hasher::Xxh3(hasher) => Digest::Xxh3(hasher.digest128().to_le_bytes()),
        }
    }
}

/// A section's hash: BLAKE3's 32 bytes, or XXH3-128 as 16 little-endian bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Digest {
    Blake3([u8; 32]),
    Xxh3([u8; 16]),
}

impl Digest {
    pub(crate) fn as_bytes(&self) -> &[u8] {
        match self {
            Digest::Blake3(bytes) => bytes,
            Digest::Xxh3(bytes) => bytes,
        }
    }
}

/// The `hash` of `len` bytes of `source` from `offset`, read through one buffer.
pub(crate) fn hash_range(
    source: &dyn ReadAt,
    offset: u64,
    len: u64,
    buffer_bytes: usize,
    hash: SectionHash,
) -> std::io::Result<Digest> {
    let mut hasher = hash.hasher();
    if let Some(bytes) = source.as_slice() {
        let range = usize::try_from(offset)
            .ok()
            .zip(usize::try_from(offset.saturating_add(len)).ok())
            .and_then(|(start, end)| bytes.get(start..end))
            .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::UnexpectedEof))?;
        hasher.update(range);
        return Ok(hasher.finalize());
    }
    let mut buffer = vec![
        0;
        usize::try_from(len)
            .unwrap_or(usize::MAX)
            .clamp(1, buffer_bytes)
    ];
    let mut next = offset;
    let end = offset.saturating_add(len);
    while next < end {
        let count = usize::try_from(end - next)
            .unwrap_or(usize::MAX)
            .min(buffer.len());
        let piece = &mut buffer[..count];
        source.read_exact_at(piece, next)?;
        hasher.update(piece);
        next += count as u64;
    }
    Ok(hasher.finalize())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use proptest::prelude::*;

    /// A source that is not a slice, so readers take the piecewise path.
    struct Piecewise(Vec<u8>);

    impl ReadAt for Piecewise {
        fn size(&self) -> u64 {
            self.0.size()
        }

        fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
            self.0.as_slice().read_exact_at(buf, offset)
        }
    }

    /// A source whose reads fail from `fail_from` on.
    struct Failing(Vec<u8>, u64);

    impl ReadAt for Failing {
        fn size(&self) -> u64 {
            self.0.size()
        }

        fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
            if offset + buf.len() as u64 > self.1 {
                return Err(std::io::Error::other("injected"));
            }
            self.0.as_slice().read_exact_at(buf, offset)
        }
    }

    type Value = Vec<(u64, String, Vec<u32>)>;

    fn value() -> impl Strategy<Value = Value> {
        prop::collection::vec(
            (
                any::<u64>(),
                ".{0,20}",
                prop::collection::vec(any::<u32>(), 0..8),
            ),
            0..40,
        )
    }

    proptest! {
        /// Whatever the buffer's size and the section's place in the source, the reader
        /// decodes what a slice decodes and ends exactly at the section's end.
        #[test]
        fn decodes_as_a_slice_does(value in value(), before in 0usize..50, after in 0usize..50, buffer in 1usize..300) {
            let config = bincode::config::standard();
            let encoded = bincode::encode_to_vec(&value, config).unwrap();
            let mut bytes = vec![0xAA; before];
            bytes.extend_from_slice(&encoded);
            bytes.extend(std::iter::repeat_n(0x55, after));
            let source = Piecewise(bytes);
            let mut reader = SectionReader::new(&source, before as u64, encoded.len() as u64, buffer);
            let decoded: Value = bincode::decode_from_reader(&mut reader, config).unwrap();
            prop_assert_eq!(decoded, value);
            prop_assert!(reader.finished());
            prop_assert!(reader.take_error().is_none());
        }

        /// A section cut short reads as its end, never past it into the next one.
        #[test]
        fn a_short_section_ends_without_reading_on(value in value(), cut in 1usize..20, buffer in 1usize..300) {
            let config = bincode::config::standard();
            let mut bytes = bincode::encode_to_vec(&value, config).unwrap();
            let len = bytes.len().saturating_sub(cut);
            prop_assume!(len < bytes.len());
            // What follows the section would complete the value if the reader strayed into it.
            let complete = bytes.clone();
            bytes.extend_from_slice(&complete);
            let source = Piecewise(bytes);
            let mut reader = SectionReader::new(&source, 0, len as u64, buffer);
            let decoded: Result<Value, _> = bincode::decode_from_reader(&mut reader, config);
            prop_assert!(decoded.is_err());
        }

        /// A hashing reader hashes the whole section, however much of it was decoded.
        #[test]
        fn a_hashing_reader_hashes_the_whole_section(value in value(), before in 0usize..50, buffer in 1usize..300, cut in 0usize..40, kind in hash_kind()) {
            let config = bincode::config::standard();
            let encoded = bincode::encode_to_vec(&value, config).unwrap();
            let mut bytes = vec![0xAA; before];
            bytes.extend_from_slice(&encoded);
            bytes.extend_from_slice(b"after");
            let source = Piecewise(bytes);
            let expected = one_shot(kind, &encoded);
            let mut reader = SectionReader::new(&source, before as u64, encoded.len() as u64, buffer).hashed(kind);
            let decoded: Value = bincode::decode_from_reader(&mut reader, config).unwrap();
            prop_assert_eq!(decoded, value);
            prop_assert_eq!(reader.finish_hash().unwrap().unwrap(), expected);
            // Stopped early (a decoding error), the rest is read for the hash.
            let mut reader = SectionReader::new(&source, before as u64, encoded.len() as u64, buffer).hashed(kind);
            let mut some = vec![0u8; cut.min(encoded.len())];
            bincode::de::read::Reader::read(&mut reader, &mut some).unwrap();
            prop_assert_eq!(reader.finish_hash().unwrap().unwrap(), expected);
            // A reader that does not hash says so.
            let mut plain = SectionReader::new(&source, 0, 1, buffer);
            prop_assert!(plain.finish_hash().is_none());
        }

        /// Hashed in pieces of any size, a range hashes as the reference one-shot functions do.
        #[test]
        fn hashes_as_the_one_shot_functions_do(bytes in prop::collection::vec(any::<u8>(), 0..2000), start in 0usize..100, buffer in 1usize..300, kind in hash_kind()) {
            let start = start.min(bytes.len());
            let expected = one_shot(kind, &bytes[start..]);
            let len = (bytes.len() - start) as u64;
            prop_assert_eq!(hash_range(&Piecewise(bytes.clone()), start as u64, len, buffer, kind).unwrap(), expected);
            prop_assert_eq!(hash_range(&bytes.as_slice(), start as u64, len, buffer, kind).unwrap(), expected);
            prop_assert_eq!(kind.of(&bytes[start..]), expected);
        }
    }

    fn hash_kind() -> impl Strategy<Value = SectionHash> {
        prop_oneof![Just(SectionHash::Blake3), Just(SectionHash::Xxh3)]
    }

    /// The digest by each crate's own one-shot function.
    fn one_shot(kind: SectionHash, bytes: &[u8]) -> Digest {
        match kind {
            SectionHash::Blake3 => Digest::Blake3(*blake3::hash(bytes).as_bytes()),
            SectionHash::Xxh3 => Digest::Xxh3(xxhash_rust::xxh3::xxh3_128(bytes).to_le_bytes()),
        }
    }

    #[test]
    fn a_read_error_is_kept_for_the_caller() {
        let config = bincode::config::standard();
        let value: Value = (0..100).map(|n| (n, "x".repeat(10), vec![1, 2])).collect();
        let bytes = bincode::encode_to_vec(&value, config).unwrap();
        let len = bytes.len() as u64;
        let source = Failing(bytes, len / 2);
        let mut reader = SectionReader::new(&source, 0, len, 64);
        let decoded: Result<Value, _> = bincode::decode_from_reader(&mut reader, config);
        assert!(decoded.is_err());
        assert!(!reader.finished());
        assert_eq!(reader.take_error().unwrap().to_string(), "injected");
        assert!(hash_range(&source, 0, len, 64, SectionHash::Xxh3).is_err());
        let mut hashing = SectionReader::new(&source, 0, len, 64).hashed(SectionHash::Xxh3);
        assert_eq!(hashing.finish_hash(), Some(None));
        assert_eq!(hashing.take_error().unwrap().to_string(), "injected");
    }
}
