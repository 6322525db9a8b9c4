//! The portable log archive: one file holding a whole log, readable without sled.
//!
//! ```text
//! header   "SLAR" | u16 archive version (1) | u16 zero
//! records  repeated: u32 length n (n > 0) | n bytes of one log record (see `record`)
//! trailer  u32 zero | "SLAE" | u64 head sequence | 32-byte head hash | u64 record count
//! ```
//!
//! Every record keeps its own checksum and hash chain, so the archive verifies itself; the
//! trailer anchors the end, so a truncated archive (or one with records cut off the end) is
//! detected rather than read as a shorter log. Integers are little-endian.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use subledger_core::Sequence;

use crate::record::{decode_record, RECORD_BYTES_MAX};
use crate::{verify_records, ChainHash, LogError, LogReader, RecordIter, SnapshotStore};

pub const ARCHIVE_MAGIC: [u8; 4] = *b"SLAR";
pub const ARCHIVE_END_MAGIC: [u8; 4] = *b"SLAE";
pub const ARCHIVE_FORMAT_VERSION: u16 = 1;
const HEADER_BYTES: u64 = 8;
const RECORD_PREFIX_BYTES: u64 = 4;
/// Bytes of a record's header read while indexing (magic, version, first sequence).
const RECORD_PEEK_BYTES: usize = 14;

fn io(path: &Path, error: &std::io::Error) -> LogError {
    LogError::Storage(format!("{}: {error}", path.display()))
}

/// What an archive holds, as written in its trailer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArchiveSummary {
    pub head: Sequence,
    pub head_hash: ChainHash,
    pub records: u64,
}

/// Writes every record of `reader` (verified on the way) into an archive. Records are
/// re-encoded from their decoded form; the re-encoding must reproduce each record's hash, so an
/// archive is byte-for-byte the log it came from.
pub fn write_archive(reader: &dyn LogReader, out: impl Write) -> Result<ArchiveSummary, LogError> {
    let mut out = BufWriter::new(out);
    let failed = |error: std::io::Error| LogError::Storage(error.to_string());
    out.write_all(&ARCHIVE_MAGIC).map_err(failed)?;
    out.write_all(&ARCHIVE_FORMAT_VERSION.to_le_bytes())
        .map_err(failed)?;
    out.write_all(&0_u16.to_le_bytes()).map_err(failed)?;
    let mut summary = ArchiveSummary {
        head: Sequence::ZERO,
        head_hash: ChainHash::GENESIS,
        records: 0,
    };
    for record in reader.records_from(Sequence(1))? {
        let record = record?;
        let bytes = record.to_bytes()?;
        let length =
            u32::try_from(bytes.len()).map_err(|_| LogError::Encode("record too large".into()))?;
        out.write_all(&length.to_le_bytes()).map_err(failed)?;
        out.write_all(&bytes).map_err(failed)?;
        summary.head = record.last();
        summary.head_hash = record.hash;
        summary.records += 1;
    }
    out.write_all(&0_u32.to_le_bytes()).map_err(failed)?;
    out.write_all(&ARCHIVE_END_MAGIC).map_err(failed)?;
    out.write_all(&summary.head.0.to_le_bytes())
        .map_err(failed)?;
    out.write_all(&summary.head_hash.0).map_err(failed)?;
    out.write_all(&summary.records.to_le_bytes())
        .map_err(failed)?;
    out.flush().map_err(failed)?;
    Ok(summary)
}

/// One record's place in the archive.
#[derive(Debug, Clone, Copy)]
struct Entry {
    first: Sequence,
    offset: u64,
    length: u32,
}

/// Reads an archive as a [`LogReader`]. Opening indexes the records (reading only their first
/// bytes) and checks the trailer; reading verifies every record as any backend does.
#[derive(Debug)]
pub struct ArchiveReader {
    path: PathBuf,
    entries: Vec<Entry>,
    summary: ArchiveSummary,
}

impl ArchiveReader {
    pub fn open(path: &Path) -> Result<ArchiveReader, LogError> {
        let file = File::open(path).map_err(|error| io(path, &error))?;
        let size = file.metadata().map_err(|error| io(path, &error))?.len();
        let mut input = BufReader::new(file);
        let corrupt = |seq: Sequence, detail: &str| LogError::Corrupt {
            seq,
            detail: format!("{}: {detail}", path.display()),
        };
        let mut header = [0u8; 8];
        input
            .read_exact(&mut header)
            .map_err(|_| corrupt(Sequence(1), "too short for an archive header"))?;
        if header[..4] != ARCHIVE_MAGIC {
            return Err(corrupt(Sequence(1), "not a subledger log archive"));
        }
        let version = u16::from_le_bytes([header[4], header[5]]);
        if version != ARCHIVE_FORMAT_VERSION {
            return Err(corrupt(
                Sequence(1),
                &format!("archive version {version} is not one this program reads"),
            ));
        }
        let mut entries: Vec<Entry> = Vec::new();
        let mut offset = HEADER_BYTES;
        let mut next = Sequence(1);
        loop {
            let mut prefix = [0u8; 4];
            input
                .read_exact(&mut prefix)
                .map_err(|_| corrupt(next, "the archive is truncated (no trailer)"))?;
            let length = u32::from_le_bytes(prefix);
            if length == 0 {
                break;
            }
            let bytes = usize::try_from(length).unwrap_or(usize::MAX);
            if bytes > RECORD_BYTES_MAX || offset + RECORD_PREFIX_BYTES + u64::from(length) > size {
                return Err(corrupt(
                    next,
                    "a record length runs past the end of the archive",
                ));
            }
            let mut peek = [0u8; RECORD_PEEK_BYTES];
            let peeked = bytes.min(RECORD_PEEK_BYTES);
            input
                .read_exact(&mut peek[..peeked])
                .map_err(|error| io(path, &error))?;
            let first = Sequence(u64::from_le_bytes(peek[6..14].try_into().unwrap_or([0; 8])));
            input
                .seek_relative(i64::from(length) - i64::try_from(peeked).unwrap_or(0))
                .map_err(|error| io(path, &error))?;
            entries.push(Entry {
                first,
                offset: offset + RECORD_PREFIX_BYTES,
                length,
            });
            offset += RECORD_PREFIX_BYTES + u64::from(length);
            next = first;
        }
        let mut trailer = [0u8; 52];
        input
            .read_exact(&mut trailer)
            .map_err(|_| corrupt(next, "the archive is truncated (incomplete trailer)"))?;
        if trailer[..4] != ARCHIVE_END_MAGIC {
            return Err(corrupt(next, "the archive trailer is damaged"));
        }
        let summary = ArchiveSummary {
            head: Sequence(u64::from_le_bytes(
                trailer[4..12].try_into().unwrap_or([0; 8]),
            )),
            head_hash: ChainHash(trailer[12..44].try_into().unwrap_or([0; 32])),
            records: u64::from_le_bytes(trailer[44..52].try_into().unwrap_or([0; 8])),
        };
        if summary.records != entries.len() as u64 {
            return Err(corrupt(
                next,
                "the trailer counts a different number of records",
            ));
        }
        // The head must lie in the last record (reading checks it ends there exactly): a head
        // before it would hide records from every reader, one with no records would invent some.
        let head_fits = match entries.last() {
            Some(last) => summary.head >= last.first,
            None => summary.head == Sequence::ZERO && summary.head_hash == ChainHash::GENESIS,
        };
        if !head_fits {
            return Err(corrupt(
                next,
                "the trailer's head does not match the records",
            ));
        }
        Ok(ArchiveReader {
            path: path.to_path_buf(),
            entries,
            summary,
        })
    }

    pub fn summary(&self) -> ArchiveSummary {
        self.summary
    }

    fn read_entry(&self, file: &mut File, entry: Entry) -> Result<Vec<u8>, LogError> {
        let mut bytes = vec![0u8; usize::try_from(entry.length).unwrap_or(0)];
        file.seek(SeekFrom::Start(entry.offset))
            .and_then(|_| file.read_exact(&mut bytes))
            .map_err(|error| io(&self.path, &error))?;
        Ok(bytes)
    }
}

impl LogReader for ArchiveReader {
    fn records_from(&self, from: Sequence) -> Result<RecordIter<'_>, LogError> {
        let from = from.max(Sequence(1));
        if from > self.summary.head || self.entries.is_empty() {
            return Ok(Box::new(std::iter::empty()));
        }
        let start = self
            .entries
            .partition_point(|entry| entry.first <= from)
            .saturating_sub(1);
        let mut file = File::open(&self.path).map_err(|error| io(&self.path, &error))?;
        let previous = match start.checked_sub(1) {
            Some(index) => {
                let entry = self.entries[index];
                let record =
                    decode_record(&self.read_entry(&mut file, entry)?).map_err(|error| {
                        LogError::Corrupt {
                            seq: entry.first,
                            detail: error.to_string(),
                        }
                    })?;
                (record.last(), record.hash)
            }
            None => (Sequence::ZERO, ChainHash::GENESIS),
        };
        let entries = self.entries[start..].to_vec();
        let stored = entries
            .into_iter()
            .map(move |entry| Ok((entry.first, self.read_entry(&mut file, entry)?)));
        let summary = self.summary;
        let mut verified = verify_records(stored, previous).peekable();
        // The last record must end where the trailer says the log ends, with its hash.
        Ok(Box::new(std::iter::from_fn(move || {
            let item = verified.next()?;
            if let (Ok(record), None) = (&item, verified.peek()) {
                if record.last() != summary.head || record.hash != summary.head_hash {
                    return Some(Err(LogError::Corrupt {
                        seq: record.last().next(),
                        detail: format!(
                            "the archive should end at {} with the trailer's hash; it ends at {}",
                            summary.head,
                            record.last()
                        ),
                    }));
                }
            }
            Some(item)
        })))
    }

    fn head(&self) -> Sequence {
        self.summary.head
    }

    fn hash_at(&self, seq: Sequence) -> Result<Option<ChainHash>, LogError> {
        let index = self.entries.partition_point(|entry| entry.first <= seq);
        let Some(entry) = index
            .checked_sub(1)
            .and_then(|index| self.entries.get(index))
        else {
            return Ok(None);
        };
        let mut file = File::open(&self.path).map_err(|error| io(&self.path, &error))?;
        let record = decode_record(&self.read_entry(&mut file, *entry)?).map_err(|error| {
            LogError::Corrupt {
                seq: entry.first,
                detail: error.to_string(),
            }
        })?;
        Ok((record.last() == seq).then_some(record.hash))
    }
}

/// An archive holds no snapshots.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoSnapshots;

impl SnapshotStore for NoSnapshots {
    fn save(&self, _seq: Sequence, _bytes: &[u8]) -> Result<(), LogError> {
        Err(LogError::Storage("an archive is read-only".into()))
    }

    fn list(&self) -> Result<Vec<Sequence>, LogError> {
        Ok(Vec::new())
    }

    fn load(&self, _seq: Sequence) -> Result<Option<crate::SnapshotBytes>, LogError> {
        Ok(None)
    }

    fn remove(&self, _seq: Sequence) -> Result<(), LogError> {
        Ok(())
    }
}
