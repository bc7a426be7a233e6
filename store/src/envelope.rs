//! The on-disk form of one record: its key and its envelope.
//!
//! Key: workflow id (16 bytes) ++ sequence number (u64, big-endian), so one
//! workflow's history is one contiguous range in key order.
//!
//! Envelope, all integers big-endian:
//!
//! | offset | bytes | field |
//! |---|---|---|
//! | 0 | 4 | magic `CFEV` |
//! | 4 | 1 | envelope version (1) |
//! | 5 | 1 | payload codec tag ([`Codec`]) |
//! | 6 | 2 | event kind (the engine's tag) |
//! | 8 | 2 | event kind version (the engine's schema version of that kind) |
//! | 10 | 16 | workflow id (again: lets `verify` name a record found by a raw scan) |
//! | 26 | 8 | sequence number (again) |
//! | 34 | 8 | timestamp, Unix milliseconds |
//! | 42 | 4 | payload length in bytes |
//! | 46 | 4 | CRC32C of bytes 0..46 and the payload |
//! | 50 | n | payload |
//!
//! The envelope repeats the key so that a record is self-identifying: when
//! sled refuses to open a damaged log, `verify` can still find our records
//! in the raw files and say which one is broken.

use crate::error::{CorruptKind, Error, Result};
use crate::store::WorkflowId;

/// The largest payload one record may carry.
pub const RECORD_PAYLOAD_BYTES_MAX: usize = 4 * 1024 * 1024;
/// The most records one append may carry.
pub const APPEND_RECORDS_MAX: usize = 1024;
/// The most records one workflow's history may hold.
pub const WORKFLOW_RECORDS_MAX: u64 = 1_000_000;

const _: () = assert!(APPEND_RECORDS_MAX as u64 <= WORKFLOW_RECORDS_MAX);
const _: () = assert!(RECORD_PAYLOAD_BYTES_MAX <= u32::MAX as usize);

pub(crate) const MAGIC: [u8; 4] = *b"CFEV";
pub(crate) const ENVELOPE_VERSION: u8 = 1;
pub(crate) const HEADER_BYTES: usize = 50;
pub(crate) const KEY_BYTES: usize = 24;

/// The codec of a record's payload: the first byte after the envelope
/// version. Tags are never reused; a retired codec keeps its number.
#[repr(u8)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Codec {
    /// postcard 1.x, as chosen in DESIGN.md ("Encoding").
    Postcard = 1,
}

impl TryFrom<u8> for Codec {
    type Error = u8;
    fn try_from(tag: u8) -> Result<Self, u8> {
        match tag {
            1 => Ok(Self::Postcard),
            other => Err(other),
        }
    }
}

/// A record to be appended: the store adds the key and the checksum.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRecord {
    /// The event kind tag, chosen by the caller.
    pub kind: u16,
    /// The schema version of that kind, chosen by the caller.
    pub kind_version: u16,
    /// When the event happened, in Unix milliseconds.
    pub at_ms: u64,
    /// The encoded event (postcard).
    pub payload: Vec<u8>,
}

/// A record read back from the log, its checksum verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The workflow it belongs to.
    pub workflow_id: WorkflowId,
    /// Its position in that workflow's history, from 0.
    pub seq: u64,
    /// The event kind tag.
    pub kind: u16,
    /// The schema version of that kind.
    pub kind_version: u16,
    /// When the event happened, in Unix milliseconds.
    pub at_ms: u64,
    /// The encoded event.
    pub payload: Vec<u8>,
}

pub(crate) fn key(id: WorkflowId, seq: u64) -> [u8; KEY_BYTES] {
    let mut key = [0u8; KEY_BYTES];
    key[..16].copy_from_slice(id.as_bytes());
    key[16..].copy_from_slice(&seq.to_be_bytes());
    key
}

pub(crate) fn split_key(key: &[u8]) -> Option<(WorkflowId, u64)> {
    if key.len() != KEY_BYTES {
        return None;
    }
    let id = WorkflowId::from_slice(&key[..16])?;
    let seq = u64::from_be_bytes(key[16..].try_into().ok()?);
    Some((id, seq))
}

pub(crate) fn encode(id: WorkflowId, seq: u64, record: &NewRecord) -> Vec<u8> {
    assert!(record.payload.len() <= RECORD_PAYLOAD_BYTES_MAX, "payload bound is checked before encode");
    let mut out = Vec::with_capacity(HEADER_BYTES + record.payload.len());
    out.extend_from_slice(&MAGIC);
    out.push(ENVELOPE_VERSION);
    out.push(Codec::Postcard as u8);
    out.extend_from_slice(&record.kind.to_be_bytes());
    out.extend_from_slice(&record.kind_version.to_be_bytes());
    out.extend_from_slice(id.as_bytes());
    out.extend_from_slice(&seq.to_be_bytes());
    out.extend_from_slice(&record.at_ms.to_be_bytes());
    let payload_len = u32::try_from(record.payload.len()).expect("payload bound fits u32");
    out.extend_from_slice(&payload_len.to_be_bytes());
    let crc = crc32c::crc32c_append(crc32c::crc32c(&out), &record.payload);
    out.extend_from_slice(&crc.to_be_bytes());
    out.extend_from_slice(&record.payload);
    assert_eq!(out.len(), HEADER_BYTES + record.payload.len());
    out
}

/// Decodes an envelope found under key `(id, seq)`, checking every field.
pub(crate) fn decode(id: WorkflowId, seq: u64, bytes: &[u8]) -> Result<Record> {
    let corrupt = |kind| Error::Corrupt { workflow_id: id, seq, kind };
    let header = parse_header(bytes).map_err(corrupt)?;
    if header.workflow_id != id || header.seq != seq {
        return Err(corrupt(CorruptKind::KeyMismatch(format!(
            "the envelope says workflow {} sequence {}",
            header.workflow_id, header.seq
        ))));
    }
    if bytes.len() != HEADER_BYTES + header.payload_len {
        return Err(corrupt(CorruptKind::Envelope(format!(
            "payload length {} disagrees with record length {}",
            header.payload_len,
            bytes.len()
        ))));
    }
    let computed = checksum(bytes, header.payload_len);
    if computed != header.crc {
        return Err(corrupt(CorruptKind::Checksum { stored: header.crc, computed }));
    }
    Ok(Record {
        workflow_id: id,
        seq,
        kind: header.kind,
        kind_version: header.kind_version,
        at_ms: header.at_ms,
        payload: bytes[HEADER_BYTES..].to_vec(),
    })
}

/// The fixed-size part of an envelope.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Header {
    pub(crate) kind: u16,
    pub(crate) kind_version: u16,
    pub(crate) workflow_id: WorkflowId,
    pub(crate) seq: u64,
    pub(crate) at_ms: u64,
    pub(crate) payload_len: usize,
    pub(crate) crc: u32,
}

pub(crate) fn parse_header(bytes: &[u8]) -> Result<Header, CorruptKind> {
    if bytes.len() < HEADER_BYTES {
        return Err(CorruptKind::Envelope(format!("{} bytes, shorter than a header", bytes.len())));
    }
    if bytes[..4] != MAGIC {
        return Err(CorruptKind::Envelope("bad magic".into()));
    }
    if bytes[4] > ENVELOPE_VERSION {
        return Err(CorruptKind::NewerEnvelope(bytes[4]));
    }
    if bytes[4] != ENVELOPE_VERSION {
        return Err(CorruptKind::Envelope(format!("unknown envelope version {}", bytes[4])));
    }
    if let Err(tag) = Codec::try_from(bytes[5]) {
        return Err(CorruptKind::Envelope(format!("unknown codec tag {tag}")));
    }
    let be_u16 = |at: usize| u16::from_be_bytes([bytes[at], bytes[at + 1]]);
    let be_u64 = |at: usize| u64::from_be_bytes(bytes[at..at + 8].try_into().expect("slice of 8 bytes"));
    let be_u32 = |at: usize| u32::from_be_bytes(bytes[at..at + 4].try_into().expect("slice of 4 bytes"));
    let workflow_id = WorkflowId::from_slice(&bytes[10..26]).expect("slice of 16 bytes");
    let payload_len = be_u32(42) as usize;
    if payload_len > RECORD_PAYLOAD_BYTES_MAX {
        return Err(CorruptKind::Envelope(format!("payload length {payload_len} over the limit")));
    }
    Ok(Header {
        kind: be_u16(6),
        kind_version: be_u16(8),
        workflow_id,
        seq: be_u64(26),
        at_ms: be_u64(34),
        payload_len,
        crc: be_u32(46),
    })
}

/// CRC32C of the header (without the CRC field) and the payload.
pub(crate) fn checksum(bytes: &[u8], payload_len: usize) -> u32 {
    assert!(bytes.len() >= HEADER_BYTES + payload_len, "caller checked the length");
    let head = crc32c::crc32c(&bytes[..HEADER_BYTES - 4]);
    crc32c::crc32c_append(head, &bytes[HEADER_BYTES..HEADER_BYTES + payload_len])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> (WorkflowId, NewRecord) {
        let id = WorkflowId::from_u128(0x0123_4567_89ab_cdef_0123_4567_89ab_cdef);
        let record = NewRecord { kind: 7, kind_version: 2, at_ms: 1_700_000_000_123, payload: b"hello".to_vec() };
        (id, record)
    }

    #[test]
    fn round_trips_every_field() {
        let (id, record) = sample();
        let bytes = encode(id, 42, &record);
        let back = decode(id, 42, &bytes).expect("decodes");
        assert_eq!(back.kind, 7);
        assert_eq!(back.kind_version, 2);
        assert_eq!(back.at_ms, 1_700_000_000_123);
        assert_eq!(back.payload, b"hello");
        assert_eq!(back.seq, 42);
    }

    #[test]
    fn every_single_byte_flip_is_detected() {
        // Goal: no one-byte change anywhere in an envelope decodes silently.
        let (id, record) = sample();
        let bytes = encode(id, 3, &record);
        for at in 0..bytes.len() {
            let mut damaged = bytes.clone();
            damaged[at] ^= 0x40;
            let result = decode(id, 3, &damaged);
            assert!(result.is_err(), "flip at byte {at} went unnoticed");
        }
    }

    #[test]
    fn a_record_under_the_wrong_key_is_reported() {
        let (id, record) = sample();
        let bytes = encode(id, 3, &record);
        let err = decode(id, 4, &bytes).expect_err("wrong seq");
        assert!(matches!(err, Error::Corrupt { seq: 4, kind: CorruptKind::KeyMismatch(_), .. }));
    }

    #[test]
    fn truncated_and_newer_envelopes_are_errors_not_panics() {
        let (id, record) = sample();
        let bytes = encode(id, 0, &record);
        for len in 0..bytes.len() {
            assert!(decode(id, 0, &bytes[..len]).is_err(), "truncated to {len}");
        }
        let mut newer = bytes.clone();
        newer[4] = ENVELOPE_VERSION + 1;
        let err = decode(id, 0, &newer).expect_err("newer");
        assert!(matches!(err, Error::Corrupt { kind: CorruptKind::NewerEnvelope(2), .. }));
    }

    #[test]
    fn keys_sort_by_workflow_then_sequence() {
        let a = WorkflowId::from_u128(1);
        let b = WorkflowId::from_u128(2);
        assert!(key(a, 255) < key(a, 256), "big-endian sequence numbers sort numerically");
        assert!(key(a, u64::MAX) < key(b, 0));
        assert_eq!(split_key(&key(b, 9)), Some((b, 9)));
        assert_eq!(split_key(&[0u8; 3]), None);
    }
}
