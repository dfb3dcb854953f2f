//! Log entries and their on-disk frame.
//!
//! A frame is one entry in a `.store` file, all integers little-endian:
//!
//! ```text
//! offset  size  field
//!      0     4  len        = number of bytes after the crc field = 25 + payload length
//!      4     4  crc32c     CRC32C (Castagnoli) of the `len` bytes that follow this field
//!      8     8  index      the entry's log index (= its offset)
//!     16     8  term       Raft term
//!     24     1  kind       0 = data, 1 = blank, 2 = membership
//!     25     8  timestamp  leader timestamp, milliseconds since the Unix epoch
//!     33     …  payload
//! ```
//!
//! A frame therefore occupies `8 + len` bytes. The CRC does not cover `len` itself, but a damaged
//! `len` still cannot yield wrong data: the CRC is then computed over a different byte range, and
//! the frame's `index` field, which the log checks against the offset it expects, would also have
//! to match.

use std::fmt;

use bytes::Bytes;

/// Bytes before the payload: `len`, `crc`, `index`, `term`, `kind`, `timestamp`.
pub const HEADER_LEN: usize = 33;
/// Bytes before the CRC-covered part: `len` and `crc`.
pub const PREFIX_LEN: usize = 8;
/// Smallest valid `len` value: the CRC-covered header fields with an empty payload.
pub const MIN_LEN_FIELD: u32 = (HEADER_LEN - PREFIX_LEN) as u32;

/// What an entry is for. Consumers skip everything but [`EntryKind::Data`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum EntryKind {
    /// A client record.
    Data = 0,
    /// A leader's blank entry (Raft no-op at the start of a term).
    Blank = 1,
    /// A Raft membership change.
    Membership = 2,
}

impl TryFrom<u8> for EntryKind {
    type Error = u8;

    fn try_from(value: u8) -> Result<Self, u8> {
        match value {
            0 => Ok(EntryKind::Data),
            1 => Ok(EntryKind::Blank),
            2 => Ok(EntryKind::Membership),
            other => Err(other),
        }
    }
}

/// One log entry. Its `index` is its offset in the log (and its Raft log index).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub index: u64,
    pub term: u64,
    pub kind: EntryKind,
    /// Leader timestamp in milliseconds since the Unix epoch.
    pub timestamp_ms: u64,
    pub payload: Bytes,
}

/// A Raft log id: term and index of an entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LogId {
    pub term: u64,
    pub index: u64,
}

impl fmt::Display for LogId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.term, self.index)
    }
}

/// Bytes a frame with a payload of `payload_len` bytes occupies in the store.
pub fn frame_len(payload_len: usize) -> u64 {
    (HEADER_LEN + payload_len) as u64
}

/// Appends the frame of `entry` to `buf`.
///
/// The caller guarantees `entry.payload.len() <= u32::MAX - 25` (the log enforces its much
/// smaller `max_record_bytes` before encoding).
pub fn encode_into(entry: &Entry, buf: &mut Vec<u8>) {
    let start = buf.len();
    let len_field = MIN_LEN_FIELD as usize + entry.payload.len();
    buf.reserve(PREFIX_LEN + len_field);
    // NB: the payload bound above is enforced by the caller, so this cannot truncate.
    buf.extend_from_slice(&(len_field as u32).to_le_bytes());
    buf.extend_from_slice(&[0; 4]); // CRC, filled in below
    buf.extend_from_slice(&entry.index.to_le_bytes());
    buf.extend_from_slice(&entry.term.to_le_bytes());
    buf.push(entry.kind as u8);
    buf.extend_from_slice(&entry.timestamp_ms.to_le_bytes());
    buf.extend_from_slice(&entry.payload);
    let crc = crc32c::crc32c(&buf[start + PREFIX_LEN..]);
    buf[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// The validated header of a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameHeader {
    pub index: u64,
    pub term: u64,
    pub kind: EntryKind,
    pub timestamp_ms: u64,
    /// Total bytes of the frame (`8 + len`).
    pub frame_len: u64,
}

impl FrameHeader {
    /// Byte range of the payload relative to the frame start.
    pub fn payload_range(&self) -> std::ops::Range<usize> {
        HEADER_LEN..self.frame_len as usize
    }

    /// The entry this header describes, with the payload taken from `frame` (which starts at the
    /// frame's first byte) without copying.
    pub fn entry(&self, frame: &Bytes) -> Entry {
        Entry {
            index: self.index,
            term: self.term,
            kind: self.kind,
            timestamp_ms: self.timestamp_ms,
            payload: frame.slice(self.payload_range()),
        }
    }
}

/// Why bytes are not a valid frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// The buffer ends before the frame does; `needed` is the full frame length when known
    /// (`None` when even the 8-byte prefix is incomplete).
    Incomplete { needed: Option<u64> },
    /// The bytes can never become a valid frame.
    Invalid(String),
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Incomplete { needed: Some(n) } => {
                write!(f, "incomplete frame of {n} bytes")
            }
            DecodeError::Incomplete { needed: None } => f.write_str("incomplete frame header"),
            DecodeError::Invalid(reason) => f.write_str(reason),
        }
    }
}

/// Reads the frame length from the 8-byte prefix, rejecting impossible values.
pub fn peek_frame_len(buf: &[u8]) -> Result<u64, DecodeError> {
    let Some(prefix) = buf.get(..4) else {
        return Err(DecodeError::Incomplete { needed: None });
    };
    let len = u32::from_le_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]);
    if len < MIN_LEN_FIELD {
        return Err(DecodeError::Invalid(format!(
            "frame length field {len} is below the minimum of {MIN_LEN_FIELD}"
        )));
    }
    Ok(PREFIX_LEN as u64 + u64::from(len))
}

/// Decodes and verifies the frame at the start of `buf` (trailing bytes are ignored).
pub fn decode(buf: &[u8]) -> Result<FrameHeader, DecodeError> {
    let frame_len = peek_frame_len(buf)?;
    if buf.len() < PREFIX_LEN {
        return Err(DecodeError::Incomplete { needed: None });
    }
    let Some(frame) = usize::try_from(frame_len).ok().and_then(|n| buf.get(..n)) else {
        return Err(DecodeError::Incomplete {
            needed: Some(frame_len),
        });
    };
    let stored = u32::from_le_bytes([frame[4], frame[5], frame[6], frame[7]]);
    let computed = crc32c::crc32c(&frame[PREFIX_LEN..]);
    if stored != computed {
        return Err(DecodeError::Invalid(format!(
            "CRC mismatch: stored {stored:#010x}, computed {computed:#010x}"
        )));
    }
    let u64_at = |at: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&frame[at..at + 8]);
        u64::from_le_bytes(b)
    };
    let kind = EntryKind::try_from(frame[24])
        .map_err(|k| DecodeError::Invalid(format!("unknown entry kind {k}")))?;
    Ok(FrameHeader {
        index: u64_at(8),
        term: u64_at(16),
        kind,
        timestamp_ms: u64_at(25),
        frame_len,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn entry(index: u64, payload: &[u8]) -> Entry {
        Entry {
            index,
            term: 7,
            kind: EntryKind::Membership,
            timestamp_ms: 1_700_000_000_123,
            payload: Bytes::copy_from_slice(payload),
        }
    }

    #[test]
    fn frame_layout_matches_the_documented_format() {
        let mut buf = Vec::new();
        encode_into(&entry(0x0102_0304_0506_0708, b"hi"), &mut buf);
        assert_eq!(buf.len(), HEADER_LEN + 2);
        assert_eq!(
            &buf[0..4],
            &27u32.to_le_bytes(),
            "len counts header rest + payload"
        );
        assert_eq!(&buf[4..8], &crc32c::crc32c(&buf[8..]).to_le_bytes());
        assert_eq!(&buf[8..16], &0x0102_0304_0506_0708u64.to_le_bytes());
        assert_eq!(&buf[16..24], &7u64.to_le_bytes());
        assert_eq!(buf[24], EntryKind::Membership as u8);
        assert_eq!(&buf[25..33], &1_700_000_000_123u64.to_le_bytes());
        assert_eq!(&buf[33..], b"hi");
    }

    #[test]
    fn every_truncation_of_a_frame_is_incomplete() {
        let mut buf = Vec::new();
        encode_into(&entry(3, b"payload"), &mut buf);
        for cut in 0..buf.len() {
            assert!(
                matches!(decode(&buf[..cut]), Err(DecodeError::Incomplete { .. })),
                "cut at {cut}"
            );
        }
        assert!(decode(&buf).is_ok());
    }

    #[test]
    fn every_bit_flip_of_a_frame_is_rejected() {
        let mut buf = Vec::new();
        encode_into(&entry(3, b"some payload"), &mut buf);
        for bit in 0..buf.len() * 8 {
            let mut flipped = buf.clone();
            flipped[bit / 8] ^= 1 << (bit % 8);
            assert!(
                decode(&flipped).is_err(),
                "bit {bit} flipped went undetected"
            );
        }
    }

    #[test]
    fn unknown_kind_is_invalid_even_with_a_valid_crc() {
        let mut buf = Vec::new();
        encode_into(&entry(1, b"x"), &mut buf);
        buf[24] = 9;
        let crc = crc32c::crc32c(&buf[PREFIX_LEN..]);
        buf[4..8].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(
            decode(&buf),
            Err(DecodeError::Invalid("unknown entry kind 9".into()))
        );
    }

    fn arb_entry() -> impl Strategy<Value = Entry> {
        (
            any::<u64>(),
            any::<u64>(),
            0u8..3,
            any::<u64>(),
            proptest::collection::vec(any::<u8>(), 0..300),
        )
            .prop_map(|(index, term, kind, timestamp_ms, payload)| Entry {
                index,
                term,
                kind: EntryKind::try_from(kind).unwrap(),
                timestamp_ms,
                payload: payload.into(),
            })
    }

    proptest! {
        #[test]
        fn frames_round_trip(e in arb_entry(), trailing in proptest::collection::vec(any::<u8>(), 0..16)) {
            let mut buf = Vec::new();
            encode_into(&e, &mut buf);
            prop_assert_eq!(buf.len() as u64, frame_len(e.payload.len()));
            buf.extend_from_slice(&trailing);
            let bytes = Bytes::from(buf);
            let header = decode(&bytes).unwrap();
            prop_assert_eq!(header.frame_len, frame_len(e.payload.len()));
            prop_assert_eq!(header.entry(&bytes), e);
        }

        /// Fuzz-style: arbitrary bytes never panic the decoder, and whatever it accepts is a
        /// self-consistent frame that re-encodes to exactly the bytes it was decoded from.
        #[test]
        fn decoder_accepts_only_frames_that_re_encode_identically(
            bytes in proptest::collection::vec(any::<u8>(), 0..200)
        ) {
            let bytes = Bytes::from(bytes);
            if let Ok(header) = decode(&bytes) {
                let mut again = Vec::new();
                encode_into(&header.entry(&bytes), &mut again);
                prop_assert_eq!(&again[..], &bytes[..header.frame_len as usize]);
            }
        }
    }
}
