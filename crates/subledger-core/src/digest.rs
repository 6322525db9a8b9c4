//! BLAKE3 over a stream of small pieces.

/// Bytes gathered before they are handed to BLAKE3.
const DIGEST_BUFFER_BYTES: usize = 64 << 10;

/// A BLAKE3 hasher fed through a buffer. State and view digests are built from millions of
/// fields of a few bytes each; fed one at a time, `blake3::Hasher` hashes one 1 KiB chunk
/// after another (a fifth of `subledger verify`'s time went to that), while fed 64 KiB at a
/// time it hashes many chunks at once with SIMD. The digest is the same either way.
#[derive(Debug, Clone, Default)]
pub struct StreamHasher {
    hasher: blake3::Hasher,
    buffer: Vec<u8>,
}

impl StreamHasher {
    pub fn new() -> StreamHasher {
        StreamHasher {
            hasher: blake3::Hasher::new(),
            buffer: Vec::with_capacity(DIGEST_BUFFER_BYTES),
        }
    }

    pub fn update(&mut self, bytes: &[u8]) -> &mut StreamHasher {
        if self.buffer.len() + bytes.len() > DIGEST_BUFFER_BYTES {
            self.hasher.update(&self.buffer);
            self.buffer.clear();
        }
        if bytes.len() >= DIGEST_BUFFER_BYTES {
            self.hasher.update(bytes);
        } else {
            self.buffer.extend_from_slice(bytes);
        }
        self
    }

    pub fn finalize(&mut self) -> blake3::Hash {
        self.hasher.update(&self.buffer);
        self.buffer.clear();
        self.hasher.finalize()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_digest_is_blake3_of_the_whole_stream_whatever_the_pieces() {
        let stream: Vec<u8> = (0..300_000u32)
            .map(|n| u8::try_from(n % 251).unwrap_or(0))
            .collect();
        let expected = blake3::hash(&stream);
        for piece in [
            1,
            7,
            1_000,
            DIGEST_BUFFER_BYTES - 1,
            DIGEST_BUFFER_BYTES,
            200_000,
        ] {
            let mut hasher = StreamHasher::new();
            for chunk in stream.chunks(piece) {
                hasher.update(chunk);
            }
            assert_eq!(hasher.finalize(), expected, "pieces of {piece}");
        }
        assert_eq!(StreamHasher::new().finalize(), blake3::hash(b""));
    }
}
