//! Segment files: records framed as `body length (u32 LE) | CRC-32 of the body (u32 LE) |
//! body`, the body being `offset (u64) | appended_at (i64) | key length (u32) | key | value`.
//! A segment is named by the offset of its first record (`00000000000000000000.log`).

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use crate::{Error, Result, Stored};

/// Bytes of a frame before its body.
pub(crate) const FRAME_HEADER: usize = 8;
/// Bytes of a body before the key.
const BODY_HEADER: usize = 20;
/// The largest body accepted (a sanity bound when reading a damaged file).
pub(crate) const MAX_BODY: usize = 16 << 20;

/// Appends one framed record to `buf`.
pub(crate) fn encode(buf: &mut Vec<u8>, offset: u64, appended_at: i64, key: &[u8], value: &[u8]) {
    let body = BODY_HEADER + key.len() + value.len();
    let start = buf.len();
    buf.extend_from_slice(&(body as u32).to_le_bytes());
    buf.extend_from_slice(&[0; 4]);
    buf.extend_from_slice(&offset.to_le_bytes());
    buf.extend_from_slice(&appended_at.to_le_bytes());
    buf.extend_from_slice(&(key.len() as u32).to_le_bytes());
    buf.extend_from_slice(key);
    buf.extend_from_slice(value);
    let crc = crc32fast::hash(&buf[start + FRAME_HEADER..]);
    buf[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// The framed length of the record at the front of `bytes`, from its header alone.
pub(crate) fn frame_len(bytes: &[u8]) -> Option<usize> {
    let len: [u8; 4] = bytes.get(..4)?.try_into().ok()?;
    let body = u32::from_le_bytes(len) as usize;
    (BODY_HEADER..=MAX_BODY)
        .contains(&body)
        .then_some(FRAME_HEADER + body)
}

/// One record decoded from the front of `bytes`, and its framed length; `None` when `bytes`
/// does not start with a whole, intact record (a torn or damaged tail).
pub(crate) fn decode(bytes: &[u8]) -> Option<(Stored, usize)> {
    let header: [u8; 8] = bytes.get(..FRAME_HEADER)?.try_into().ok()?;
    let body_len = u32::from_le_bytes(header[..4].try_into().ok()?) as usize;
    let crc = u32::from_le_bytes(header[4..].try_into().ok()?);
    if !(BODY_HEADER..=MAX_BODY).contains(&body_len) {
        return None;
    }
    let body = bytes.get(FRAME_HEADER..FRAME_HEADER + body_len)?;
    if crc32fast::hash(body) != crc {
        return None;
    }
    let offset = u64::from_le_bytes(body[..8].try_into().ok()?);
    let appended_at = i64::from_le_bytes(body[8..16].try_into().ok()?);
    let key_len = u32::from_le_bytes(body[16..20].try_into().ok()?) as usize;
    let key = body.get(BODY_HEADER..BODY_HEADER + key_len)?.to_vec();
    let value = body[BODY_HEADER + key_len..].to_vec();
    Some((
        Stored {
            offset,
            appended_at,
            key,
            value,
        },
        FRAME_HEADER + body_len,
    ))
}

/// The file name of a segment starting at `base`.
pub(crate) fn file_name(base: u64) -> String {
    format!("{base:020}.log")
}

/// The base offset of a segment file name, `None` for other files.
pub(crate) fn base_of(name: &str) -> Option<u64> {
    name.strip_suffix(".log")
        .filter(|s| s.len() == 20)
        .and_then(|s| s.parse().ok())
}

/// What a scan of a segment found.
pub(crate) struct Scan {
    /// Sparse index: (offset, byte position) of a record every `every` bytes, first included.
    pub(crate) index: Vec<(u64, u64)>,
    /// Bytes of whole, intact records from the start.
    pub(crate) valid_len: u64,
    /// The offset after the last intact record (`base` when none).
    pub(crate) next_offset: u64,
    /// The newest `appended_at` seen (`i64::MIN` when none).
    pub(crate) newest: i64,
    /// The file's length (more than `valid_len` when the tail is torn).
    pub(crate) file_len: u64,
}

/// Reads a segment from the start, stopping at the first torn or damaged record or at an
/// offset out of sequence.
pub(crate) fn scan(path: &Path, base: u64, every: u64) -> Result<Scan> {
    let mut bytes = Vec::new();
    File::open(path)
        .and_then(|mut f| f.read_to_end(&mut bytes))
        .map_err(io(format!("reading {}", path.display())))?;
    let mut pos = 0usize;
    let mut next_offset = base;
    let mut newest = i64::MIN;
    let mut index = Vec::new();
    let mut last_indexed: Option<u64> = None;
    while let Some((rec, len)) = decode(&bytes[pos..]) {
        if rec.offset != next_offset {
            break;
        }
        if last_indexed.is_none_or(|p| pos as u64 >= p + every) {
            index.push((rec.offset, pos as u64));
            last_indexed = Some(pos as u64);
        }
        newest = newest.max(rec.appended_at);
        next_offset += 1;
        pos += len;
    }
    Ok(Scan {
        index,
        valid_len: pos as u64,
        next_offset,
        newest,
        file_len: bytes.len() as u64,
    })
}

/// The path of a segment in a partition directory.
pub(crate) fn path(dir: &Path, base: u64) -> PathBuf {
    dir.join(file_name(base))
}

/// Maps an I/O error with what was being done.
pub(crate) fn io(what: String) -> impl FnOnce(std::io::Error) -> Error {
    move |source| Error::Io { what, source }
}
