//! Sealed gossip datagrams: ChaCha20-Poly1305 under the cluster key, with a timestamp window and
//! a bounded cache of recent nonces against replays. The wire format and the threat model are
//! described in the [module docs](super).

use std::collections::BTreeSet;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chacha20poly1305::aead::AeadInPlace;
use chacha20poly1305::{ChaCha20Poly1305, KeyInit, Nonce, Tag};

use super::key::GossipKey;
use crate::telemetry::GossipDropReason;

/// First byte of every sealed datagram: the format version.
pub const WIRE_VERSION: u8 = 1;
/// Length of the random nonce.
pub const NONCE_LEN: usize = 12;
/// Length of the Poly1305 authentication tag.
pub const TAG_LEN: usize = 16;
/// version (1) | key id (4) | timestamp (8) | nonce (12).
pub const HEADER_LEN: usize = 1 + 4 + 8 + NONCE_LEN;
/// Bytes a sealed datagram adds to the chitchat datagram inside it.
pub const SEAL_OVERHEAD: usize = HEADER_LEN + TAG_LEN;
/// Default acceptance window around the receiver's clock.
pub const DEFAULT_REPLAY_WINDOW: Duration = Duration::from_secs(30);
/// Default number of recent nonces remembered. A node receives a few datagrams per peer and
/// gossip round, so a window holds far fewer than this; past it the oldest entries go and the
/// acceptance floor rises (never a silent acceptance of a replay).
pub const DEFAULT_REPLAY_CACHE_CAPACITY: usize = 16_384;

/// The nonce reserved for deriving the key id; never used to seal a datagram.
const KEY_ID_NONCE: [u8; NONCE_LEN] = [0xff; NONCE_LEN];
const KEY_ID_CONTEXT: &[u8] = b"logcluster gossip key id v1";

/// Milliseconds since the Unix epoch; a function so that tests can move time.
pub type UnixMillisClock = Arc<dyn Fn() -> u64 + Send + Sync>;

/// The wall clock. Gossip timestamps must be comparable across nodes, so this is `SystemTime`,
/// not a monotonic clock: nodes need roughly synchronized clocks (NTP), well within the window.
pub fn system_clock() -> UnixMillisClock {
    Arc::new(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    })
}

/// Seals and opens datagrams under one cluster key. Shared by every socket of a transport; the
/// replay state is per socket ([`ReplayGuard`]).
pub struct Sealer {
    cipher: ChaCha20Poly1305,
    key_id: u32,
    clock: UnixMillisClock,
}

impl fmt::Debug for Sealer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sealer")
            .field("key_id", &format_args!("{:08x}", self.key_id))
            .finish_non_exhaustive()
    }
}

impl Sealer {
    /// A sealer for `key`, reading time from `clock`.
    pub fn new(key: &GossipKey, clock: UnixMillisClock) -> Self {
        let cipher = ChaCha20Poly1305::new(key.as_bytes().into());
        let key_id = derive_key_id(&cipher);
        Sealer {
            cipher,
            key_id,
            clock,
        }
    }

    /// The key's public identifier (a pseudo-random function of the key), carried in every
    /// datagram so that a receiver can tell "sealed under another key" from "tampered with".
    pub fn key_id(&self) -> u32 {
        self.key_id
    }

    /// The current time of this sealer's clock (ms since the Unix epoch).
    pub fn now_millis(&self) -> u64 {
        (self.clock)()
    }

    /// Seals one chitchat datagram.
    pub fn seal(&self, plaintext: &[u8]) -> Vec<u8> {
        let nonce = loop {
            let candidate: [u8; NONCE_LEN] = rand::random();
            if candidate != KEY_ID_NONCE {
                break candidate;
            }
        };
        let mut datagram = Vec::with_capacity(SEAL_OVERHEAD + plaintext.len());
        datagram.push(WIRE_VERSION);
        datagram.extend_from_slice(&self.key_id.to_be_bytes());
        datagram.extend_from_slice(&self.now_millis().to_be_bytes());
        datagram.extend_from_slice(&nonce);
        datagram.extend_from_slice(plaintext);
        let (header, body) = datagram.split_at_mut(HEADER_LEN);
        // NB: encrypting in place cannot fail for messages below the cipher's 256 GiB limit, and
        // a UDP datagram is at most 64 KiB.
        let tag = self
            .cipher
            .encrypt_in_place_detached(Nonce::from_slice(&nonce), header, body)
            .unwrap_or_default();
        datagram.extend_from_slice(&tag);
        datagram
    }

    /// Opens a sealed datagram: checks the format, the key id, the tag (over the header and the
    /// ciphertext), then the timestamp window and the nonce cache, in that order, so that nothing
    /// unauthenticated ever enters the cache. Returns the chitchat datagram inside.
    pub fn open(
        &self,
        datagram: &[u8],
        replay: &mut ReplayGuard,
    ) -> Result<Vec<u8>, GossipDropReason> {
        if datagram.len() < SEAL_OVERHEAD || datagram[0] != WIRE_VERSION {
            return Err(GossipDropReason::Malformed);
        }
        let (header, rest) = datagram.split_at(HEADER_LEN);
        let key_id = u32::from_be_bytes(array(&header[1..5]));
        if key_id != self.key_id {
            return Err(GossipDropReason::Forged);
        }
        let timestamp = u64::from_be_bytes(array(&header[5..13]));
        let nonce: [u8; NONCE_LEN] = array(&header[13..HEADER_LEN]);
        let (ciphertext, tag) = rest.split_at(rest.len() - TAG_LEN);
        let mut plaintext = ciphertext.to_vec();
        self.cipher
            .decrypt_in_place_detached(
                Nonce::from_slice(&nonce),
                header,
                &mut plaintext,
                Tag::from_slice(tag),
            )
            .map_err(|_| GossipDropReason::Forged)?;
        match replay.admit(self.now_millis(), timestamp, nonce) {
            Admission::Fresh => Ok(plaintext),
            Admission::OutsideWindow | Admission::Seen => Err(GossipDropReason::Replayed),
        }
    }
}

/// A fixed-size array from a slice whose length the caller has already checked.
fn array<const N: usize>(bytes: &[u8]) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(&bytes[..N]);
    out
}

fn derive_key_id(cipher: &ChaCha20Poly1305) -> u32 {
    let mut empty = [0u8; 0];
    let tag = cipher
        .encrypt_in_place_detached(Nonce::from_slice(&KEY_ID_NONCE), KEY_ID_CONTEXT, &mut empty)
        .unwrap_or_default();
    u32::from_be_bytes(array(&tag[..4]))
}

/// What the replay guard decided about an authenticated datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Inside the window and never seen: accept.
    Fresh,
    /// Its timestamp is too far from the receiver's clock (an old capture, or clock skew).
    OutsideWindow,
    /// Seen before, or older than what the full cache can still tell apart.
    Seen,
}

/// Remembers the (timestamp, nonce) of every datagram accepted within the window.
///
/// Invariant: every accepted datagram with a timestamp at or above `floor` is in `seen`, and
/// nothing below `floor` is accepted. The floor follows the window (`now - window`) and rises
/// further when the cache is full and evicts its oldest entry, so that a bounded cache never
/// turns into a silent acceptance of replays.
#[derive(Debug)]
pub struct ReplayGuard {
    window_ms: u64,
    capacity: usize,
    floor: u64,
    seen: BTreeSet<(u64, [u8; NONCE_LEN])>,
}

impl ReplayGuard {
    /// A guard accepting timestamps within `window` of the receiver's clock, remembering at most
    /// `capacity` nonces.
    pub fn new(window: Duration, capacity: usize) -> Self {
        ReplayGuard {
            window_ms: u64::try_from(window.as_millis()).unwrap_or(u64::MAX),
            capacity: capacity.max(1),
            floor: 0,
            seen: BTreeSet::new(),
        }
    }

    /// Number of nonces remembered.
    pub fn len(&self) -> usize {
        self.seen.len()
    }

    /// Whether no nonce is remembered.
    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }

    /// Decides on an authenticated datagram stamped `timestamp` with `nonce`, at time `now`.
    pub fn admit(&mut self, now: u64, timestamp: u64, nonce: [u8; NONCE_LEN]) -> Admission {
        let oldest_allowed = now.saturating_sub(self.window_ms);
        if timestamp < oldest_allowed || timestamp > now.saturating_add(self.window_ms) {
            return Admission::OutsideWindow;
        }
        self.raise_floor(oldest_allowed);
        if timestamp < self.floor || !self.seen.insert((timestamp, nonce)) {
            return Admission::Seen;
        }
        if self.seen.len() > self.capacity
            && let Some((evicted, _)) = self.seen.first().copied()
        {
            self.raise_floor(evicted.saturating_add(1));
        }
        Admission::Fresh
    }

    fn raise_floor(&mut self, floor: u64) {
        if floor <= self.floor {
            return;
        }
        self.floor = floor;
        while self.seen.first().is_some_and(|(ts, _)| *ts < floor) {
            self.seen.pop_first();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};

    use super::*;

    const T0: u64 = 1_800_000_000_000;

    fn clock_at(millis: &Arc<AtomicU64>) -> UnixMillisClock {
        let millis = Arc::clone(millis);
        Arc::new(move || millis.load(Ordering::SeqCst))
    }

    fn sealer(key: &GossipKey, now: &Arc<AtomicU64>) -> Sealer {
        Sealer::new(key, clock_at(now))
    }

    fn guard() -> ReplayGuard {
        ReplayGuard::new(DEFAULT_REPLAY_WINDOW, DEFAULT_REPLAY_CACHE_CAPACITY)
    }

    #[test]
    fn sealed_datagrams_open_to_the_same_bytes_and_hide_them() {
        let now = Arc::new(AtomicU64::new(T0));
        let key = GossipKey::generate();
        let sealer = sealer(&key, &now);
        let plaintext = b"chitchat says hello, node 1 is at 10.0.0.1:8400".to_vec();
        let datagram = sealer.seal(&plaintext);

        assert_eq!(datagram.len(), plaintext.len() + SEAL_OVERHEAD);
        assert_eq!(datagram[0], WIRE_VERSION);
        assert_eq!(datagram[1..5], sealer.key_id().to_be_bytes());
        assert_eq!(datagram[5..13], T0.to_be_bytes());
        assert!(
            !datagram.windows(8).any(|w| w == b"10.0.0.1"),
            "the payload is encrypted"
        );
        assert_eq!(sealer.open(&datagram, &mut guard()), Ok(plaintext));
        // Two seals of the same bytes differ (fresh nonce).
        assert_ne!(sealer.seal(b"x"), sealer.seal(b"x"));
    }

    #[test]
    fn another_key_or_any_flipped_bit_is_forged() {
        let now = Arc::new(AtomicU64::new(T0));
        let ours = sealer(&GossipKey::generate(), &now);
        let theirs = sealer(&GossipKey::generate(), &now);
        let plaintext = b"membership state".to_vec();

        let datagram = theirs.seal(&plaintext);
        assert_eq!(
            ours.open(&datagram, &mut guard()),
            Err(GossipDropReason::Forged)
        );
        // Same key id (an attacker can copy it), wrong key: the tag fails.
        let mut copied_id = datagram.clone();
        copied_id[1..5].copy_from_slice(&ours.key_id().to_be_bytes());
        assert_eq!(
            ours.open(&copied_id, &mut guard()),
            Err(GossipDropReason::Forged)
        );

        let good = ours.seal(&plaintext);
        // Every byte after the version byte is authenticated: header (key id, timestamp,
        // nonce), ciphertext and tag.
        for i in 1..good.len() {
            let mut tampered = good.clone();
            tampered[i] ^= 0x01;
            assert_eq!(
                ours.open(&tampered, &mut guard()),
                Err(GossipDropReason::Forged),
                "bit flip in byte {i}"
            );
        }
        assert_eq!(ours.open(&good, &mut guard()), Ok(plaintext));
    }

    #[test]
    fn short_garbage_and_unknown_versions_are_malformed() {
        let now = Arc::new(AtomicU64::new(T0));
        let sealer = sealer(&GossipKey::generate(), &now);
        let good = sealer.seal(b"payload");
        for len in 0..SEAL_OVERHEAD {
            assert_eq!(
                sealer.open(&good[..len], &mut guard()),
                Err(GossipDropReason::Malformed),
                "truncated to {len} bytes"
            );
        }
        let mut other_version = good.clone();
        other_version[0] = 2;
        assert_eq!(
            sealer.open(&other_version, &mut guard()),
            Err(GossipDropReason::Malformed)
        );
        // A plain chitchat datagram (magic number first) is not ours either.
        let plain = [0x53, 0xb0, 0x00, 0x03].repeat(20);
        assert_eq!(
            sealer.open(&plain, &mut guard()),
            Err(GossipDropReason::Malformed)
        );
        // Truncating the tag away, but keeping the length, is a forgery, not a crash.
        let truncated = &good[..good.len() - 1];
        assert_eq!(
            sealer.open(truncated, &mut guard()),
            Err(GossipDropReason::Forged)
        );
    }

    #[test]
    fn a_datagram_is_accepted_once() {
        let now = Arc::new(AtomicU64::new(T0));
        let sealer = sealer(&GossipKey::generate(), &now);
        let mut replay = guard();
        let datagram = sealer.seal(b"once");
        assert!(sealer.open(&datagram, &mut replay).is_ok());
        now.fetch_add(10_000, Ordering::SeqCst);
        assert_eq!(
            sealer.open(&datagram, &mut replay),
            Err(GossipDropReason::Replayed)
        );
        // Another datagram of the same millisecond is not mistaken for a replay.
        now.store(T0, Ordering::SeqCst);
        assert!(sealer.open(&sealer.seal(b"once"), &mut replay).is_ok());
    }

    #[test]
    fn datagrams_outside_the_window_are_replays_and_the_cache_forgets_old_nonces() {
        let now = Arc::new(AtomicU64::new(T0));
        let sender = sealer(&GossipKey::from_bytes([7; 32]), &now);
        let receiver_now = Arc::new(AtomicU64::new(T0));
        let receiver = sealer(&GossipKey::from_bytes([7; 32]), &receiver_now);
        let mut replay = guard();
        let window = DEFAULT_REPLAY_WINDOW.as_millis() as u64;

        let old = sender.seal(b"captured");
        assert!(receiver.open(&old, &mut replay).is_ok());
        // The capture replayed after the window: refused by its timestamp.
        receiver_now.store(T0 + window + 1, Ordering::SeqCst);
        assert_eq!(
            receiver.open(&old, &mut replay),
            Err(GossipDropReason::Replayed)
        );
        // A fresh datagram still passes, and the expired nonce has left the cache.
        now.store(T0 + window + 1, Ordering::SeqCst);
        assert!(receiver.open(&sender.seal(b"fresh"), &mut replay).is_ok());
        assert_eq!(replay.len(), 1);

        // A sender clock too far ahead is refused too (symmetric window).
        now.store(T0 + 3 * window, Ordering::SeqCst);
        assert_eq!(
            receiver.open(&sender.seal(b"from the future"), &mut replay),
            Err(GossipDropReason::Replayed)
        );
    }

    #[test]
    fn a_full_cache_raises_the_floor_instead_of_forgetting_silently() {
        let mut replay = ReplayGuard::new(Duration::from_secs(30), 3);
        let now = T0;
        let n = |i: u8| [i; NONCE_LEN];
        assert_eq!(replay.admit(now, now - 5, n(1)), Admission::Fresh);
        assert_eq!(replay.admit(now, now - 4, n(2)), Admission::Fresh);
        assert_eq!(replay.admit(now, now - 3, n(3)), Admission::Fresh);
        assert_eq!(replay.admit(now, now - 2, n(4)), Admission::Fresh);
        assert_eq!(replay.len(), 3, "bounded");
        // The evicted entry (now - 5) is below the floor: its replay is still refused.
        assert_eq!(replay.admit(now, now - 5, n(1)), Admission::Seen);
        // So is an unseen datagram that old: the guard can no longer tell, so it refuses.
        assert_eq!(replay.admit(now, now - 5, n(9)), Admission::Seen);
        assert_eq!(replay.admit(now, now - 3, n(3)), Admission::Seen);
        assert_eq!(replay.admit(now, now - 1, n(5)), Admission::Fresh);
    }

    #[test]
    fn the_key_id_depends_on_the_key_only() {
        let now = Arc::new(AtomicU64::new(T0));
        let a = GossipKey::from_bytes([1; 32]);
        let b = GossipKey::from_bytes([2; 32]);
        assert_eq!(sealer(&a, &now).key_id(), sealer(&a, &now).key_id());
        assert_ne!(sealer(&a, &now).key_id(), sealer(&b, &now).key_id());
    }
}
