//! The cluster gossip key: loading it from a file, and the explicit choice between sealed and
//! plaintext gossip.

use std::fmt;
use std::path::Path;

use super::error::{MembershipError, Result};

/// Length of the cluster gossip key in bytes (a ChaCha20-Poly1305 key).
pub const GOSSIP_KEY_LEN: usize = 32;

/// The 32-byte cluster key that seals every gossip datagram.
///
/// Its `Debug` output never shows the key material.
#[derive(Clone, PartialEq, Eq)]
pub struct GossipKey([u8; GOSSIP_KEY_LEN]);

impl GossipKey {
    /// A key from its 32 bytes.
    pub fn from_bytes(bytes: [u8; GOSSIP_KEY_LEN]) -> Self {
        GossipKey(bytes)
    }

    /// A fresh random key (for `logctl dev`, the operator and tests).
    pub fn generate() -> Self {
        GossipKey(rand::random())
    }

    /// The key's bytes.
    pub fn as_bytes(&self) -> &[u8; GOSSIP_KEY_LEN] {
        &self.0
    }

    /// The key as 64 lower-case hex digits: the format [`GossipKey::from_file`] reads.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Reads a key file: 64 hex digits (surrounding whitespace, such as the trailing newline of
    /// `xxd -p`, is ignored) or exactly 32 raw bytes. Anything else is an error that names the
    /// file and says what was found.
    pub fn from_file(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|source| MembershipError::ReadKey {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&bytes).map_err(|source| MembershipError::InvalidKey {
            path: path.to_owned(),
            source,
        })
    }

    /// Parses the contents of a key file (see [`GossipKey::from_file`]).
    pub fn parse(contents: &[u8]) -> Result<Self, KeyFormatError> {
        let trimmed = contents.trim_ascii();
        let looks_like_hex = !trimmed.is_empty() && trimmed.iter().all(u8::is_ascii_hexdigit);
        if looks_like_hex {
            let mut key = [0u8; GOSSIP_KEY_LEN];
            if trimmed.len() != 2 * GOSSIP_KEY_LEN
                || hex::decode_to_slice(trimmed, &mut key).is_err()
            {
                return Err(KeyFormatError::HexLength {
                    digits: trimmed.len(),
                });
            }
            return Ok(GossipKey(key));
        }
        // NB: raw keys are taken exactly as they are: trimming would corrupt a random key whose
        // first or last byte happens to be whitespace.
        match <[u8; GOSSIP_KEY_LEN]>::try_from(contents) {
            Ok(key) => Ok(GossipKey(key)),
            Err(_) if contents.is_empty() => Err(KeyFormatError::Empty),
            Err(_) => Err(KeyFormatError::RawLength {
                bytes: contents.len(),
            }),
        }
    }
}

/// What is wrong with a key file's contents.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyFormatError {
    #[error("the file is empty")]
    Empty,
    #[error("found {digits} hex digits, which is {}", hex_bytes(*.digits))]
    HexLength { digits: usize },
    #[error("found {bytes} bytes that are neither 64 hex digits nor 32 raw bytes")]
    RawLength { bytes: usize },
}

fn hex_bytes(digits: usize) -> String {
    if digits.is_multiple_of(2) {
        format!("{} bytes", digits / 2)
    } else {
        "not a whole number of bytes".to_owned()
    }
}

impl fmt::Debug for GossipKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("GossipKey(<redacted>)")
    }
}

/// How gossip datagrams travel: sealed under the cluster key, or in plaintext when the operator
/// explicitly asked for it. An enum rather than an `Option<GossipKey>` so that running without
/// authentication is always a visible, deliberate choice in the code that starts gossip.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GossipSecurity {
    /// Every datagram is authenticated and encrypted with ChaCha20-Poly1305 under this key.
    Sealed(GossipKey),
    /// Plain chitchat datagrams: anyone who can send UDP to the gossip port can announce nodes.
    InsecurePlaintext,
}

impl GossipSecurity {
    /// The choice `lognode`'s flags make: a key file seals gossip; no key file is refused unless
    /// `insecure_without_key` (`--insecure-gossip-without-key`) is set; both together are refused
    /// too, because one of them is a mistake.
    pub fn from_flags(key_file: Option<&Path>, insecure_without_key: bool) -> Result<Self> {
        match (key_file, insecure_without_key) {
            (Some(_), true) => Err(MembershipError::ConflictingKeyFlags),
            (Some(path), false) => Ok(GossipSecurity::Sealed(GossipKey::from_file(path)?)),
            (None, true) => Ok(GossipSecurity::InsecurePlaintext),
            (None, false) => Err(MembershipError::KeyRequired),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &tempfile::TempDir, name: &str, contents: &[u8]) -> std::path::PathBuf {
        let path = dir.path().join(name);
        std::fs::write(&path, contents).expect("write key file");
        path
    }

    #[test]
    fn key_files_hold_hex_or_raw_bytes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let key = GossipKey::from_bytes(std::array::from_fn(|i| i as u8 * 7));

        let hex_file = write(&dir, "hex", format!("  {}\n", key.to_hex()).as_bytes());
        assert_eq!(GossipKey::from_file(&hex_file).expect("hex key"), key);
        let upper = write(&dir, "upper", key.to_hex().to_uppercase().as_bytes());
        assert_eq!(GossipKey::from_file(&upper).expect("upper-case hex"), key);

        // Raw bytes that start and end with whitespace must not be trimmed.
        let mut raw = *key.as_bytes();
        raw[0] = b' ';
        raw[31] = b'\n';
        let raw_file = write(&dir, "raw", &raw);
        assert_eq!(
            GossipKey::from_file(&raw_file).expect("raw key").as_bytes(),
            &raw
        );
    }

    #[test]
    fn bad_key_files_are_refused_with_the_reason() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cases: [(&str, &[u8], &str); 4] = [
            ("empty", b"", "empty"),
            (
                "short-hex",
                b"abcd\n",
                "found 4 hex digits, which is 2 bytes",
            ),
            ("odd-hex", &[b'a'; 63], "not a whole number of"),
            ("text", b"not a key at all", "found 16 bytes"),
        ];
        for (name, contents, expected) in cases {
            let path = write(&dir, name, contents);
            let err = GossipKey::from_file(&path).expect_err(name).to_string();
            assert!(err.contains(expected), "{name}: {err}");
            assert!(err.contains(name), "the error names the file: {err}");
        }
        let missing = dir.path().join("missing");
        let err = GossipKey::from_file(&missing).expect_err("missing file");
        assert!(matches!(err, MembershipError::ReadKey { .. }), "{err}");
    }

    #[test]
    fn gossip_without_a_key_needs_the_explicit_insecure_flag() {
        let dir = tempfile::tempdir().expect("tempdir");
        let key = GossipKey::generate();
        let path = write(&dir, "key", key.to_hex().as_bytes());

        assert_eq!(
            GossipSecurity::from_flags(Some(&path), false).expect("key file"),
            GossipSecurity::Sealed(key)
        );
        assert!(matches!(
            GossipSecurity::from_flags(None, false),
            Err(MembershipError::KeyRequired)
        ));
        assert_eq!(
            GossipSecurity::from_flags(None, true).expect("insecure"),
            GossipSecurity::InsecurePlaintext
        );
        assert!(matches!(
            GossipSecurity::from_flags(Some(&path), true),
            Err(MembershipError::ConflictingKeyFlags)
        ));
    }

    #[test]
    fn debug_output_never_shows_the_key() {
        let key = GossipKey::from_bytes([0x5a; 32]);
        let shown = format!("{key:?} {:?}", GossipSecurity::Sealed(key.clone()));
        assert!(!shown.to_lowercase().contains("5a5a"), "{shown}");
        assert!(!shown.contains("90, 90"), "{shown}");
    }
}
