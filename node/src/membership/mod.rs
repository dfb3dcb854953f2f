//! Gossip membership: who is alive and where (chitchat), authenticated and encrypted on the wire,
//! and the leader-side join handler that turns discoveries into Raft membership changes
//! (ARCHITECTURE decision 4 — gossip discovers, Raft decides).
//!
//! * [`Membership`] — this node's gossip endpoint: typed keys ([`keys`]), the parsed live
//!   [`ClusterMember`]s as a `watch`, readiness, graceful leave, shutdown.
//! * [`Reconciler`] — on the Raft leader: adds newly seen nodes (learner, then voter), removes
//!   nodes that announce they are leaving, never removes silent ones; coded against the small
//!   [`RaftAdmin`] trait the Raft node implements.
//! * [`GossipTransport`] — chitchat's transport with every datagram sealed under the cluster key
//!   ([`GossipKey`], `--gossip-key-file`), over UDP or the in-memory [`MemoryNetwork`] (tests).
//! * [`seeds`] — `host:port` seeds re-resolved periodically (a headless Service name works).
//!
//! # Member keys
//!
//! Each node gossips `node_id`, `rpc_addr`, `generation` (process start time in ms, also the
//! chitchat generation id), `ready` and `leaving`. A restarted node has a new generation: while
//! chitchat briefly lists both incarnations as live, [`Membership::members`] shows only the
//! newest, so a restart is an update of one member and never looks like a departure. A node that
//! goes silent drops out of the live members when the failure detector gives up on it; nothing
//! here removes anything from Raft because of that.
//!
//! # Wire format (version 1)
//!
//! Every gossip datagram on the UDP port is:
//!
//! ```text
//! offset  size  field
//!      0     1  version       = 1
//!      1     4  key id        big-endian; a pseudo-random function of the cluster key
//!      5     8  timestamp     big-endian, sender's wall clock, ms since the Unix epoch
//!     13    12  nonce         random (96 bits) per datagram
//!     25     n  ciphertext    ChaCha20-Poly1305(key, nonce, chitchat datagram)
//!   25+n    16  tag           Poly1305, over the ciphertext and bytes 0..25 as associated data
//! ```
//!
//! The header (version, key id, timestamp, nonce) is authenticated as associated data, so none
//! of it can be altered. A receiver drops the datagram, counts it in
//! `logcluster_gossip_datagrams_dropped_total{reason}` and never hands it to chitchat when:
//! * it is shorter than 41 bytes or its version is unknown — `malformed`;
//! * its key id is not ours (another cluster's key, or a stale key after a rotation) or the tag
//!   does not verify (tampered, or forged without the key) — `forged`;
//! * its timestamp is more than the replay window (30 s) away from the receiver's clock, or its
//!   (timestamp, nonce) was accepted before — `replayed`. Accepted nonces are kept for the
//!   window in a bounded cache; when the cache is full its floor rises, so an old datagram is
//!   refused rather than accepted twice;
//! * it opens but chitchat cannot parse what is inside — `malformed`.
//!
//! The checks run in that order: nothing unauthenticated reaches the nonce cache.
//! The key id derivation: the first 4 bytes of the ChaCha20-Poly1305 tag of the empty message
//! with associated data `"logcluster gossip key id v1"` under the all-`0xff` nonce (which
//! sealing never uses). Overhead: 41 bytes per datagram.
//! Without a key (`--insecure-gossip-without-key`, refused unless given explicitly) datagrams are
//! plain chitchat.
//!
//! # Threat model
//!
//! It protects against anyone **without the cluster key** who can send, capture or alter UDP
//! datagrams on the gossip port (another tenant's pod, a compromised host on the pod network,
//! anything that reaches a node's IP): they cannot announce a node or alter a node's keys, read
//! the cluster's topology (node ids, addresses, readiness), or replay a captured datagram to a
//! node after the window, or twice to the same node within it.
//!
//! It does **not** protect against:
//! * **key holders.** Every node holds the same key and chitchat has no per-node signatures, so
//!   anyone with the key can announce fake nodes, or impersonate a real node's state, e.g. set
//!   its `leaving` flag and get it removed from Raft by the leader. Protect the key file like
//!   the CA key (a Kubernetes Secret readable only by the nodes). A fake node can at most be
//!   added as a learner (learners do not vote): promotion needs it to catch up, i.e. to serve the
//!   Raft peer API with a node certificate from the cluster CA. Gossip alone never removes a
//!   silent voter.
//! * **cross-node replay within the window.** The nonce cache is per receiver, so a datagram
//!   captured on its way to node A can be delivered to node B within 30 s. It carries only
//!   authentic, recent, versioned chitchat state, which chitchat applies idempotently; the
//!   response goes to the (possibly spoofed) source address, encrypted.
//! * **traffic analysis and denial of service.** Sizes, timing and the key id are visible;
//!   dropping or flooding datagrams is not prevented (only counted).
//! * **clock skew.** Nodes whose clocks differ by more than the window cannot gossip (their
//!   datagrams count as `replayed`): run NTP.
//! * **nonce reuse at scale.** Random 96-bit nonces collide with probability ~n²/2⁹⁷ after n
//!   datagrams under one key: negligible at gossip rates (billions of datagrams stay below
//!   2⁻³⁰), but a key is not meant to live forever.
//! * **key rotation.** One key at a time for now: changing it means restarting every node with
//!   the new file (nodes on different keys do not see each other). The key id in the header is
//!   there so that a later version can accept the previous key during a rolling rotation.
//!
//! Implementation note: chitchat 0.13 exposes envelopes, not bytes, through its transport traits,
//! and keeps its envelope codec private; see `codec.rs` for how its own UDP socket code is used
//! to encode and decode over loopback.

mod cluster;
mod codec;
pub mod datagram;
mod error;
mod key;
pub mod member;
pub mod memory;
pub mod reconciler;
pub mod seal;
pub mod seeds;
pub mod transport;

pub use cluster::{
    DEFAULT_CLUSTER_ID, DEFAULT_GOSSIP_INTERVAL, DEFAULT_SEED_REFRESH_INTERVAL, Membership,
    MembershipConfig, failure_detector_for, resolve_gossip_addr,
};
pub use datagram::{DatagramSocket, DatagramTransport, UdpDatagramTransport};
pub use error::{MembershipError, Result};
pub use key::{GOSSIP_KEY_LEN, GossipKey, GossipSecurity};
pub use member::{ClusterMember, keys};
pub use memory::MemoryNetwork;
pub use reconciler::{
    Departures, MembershipChange, RaftAdmin, RaftAdminError, RaftMember, RaftView, ReconcileStatus,
    Reconciler, ReconcilerConfig,
};
pub use seeds::{DnsSeedResolver, SeedResolver};
pub use transport::GossipTransport;

#[cfg(test)]
mod tests;
