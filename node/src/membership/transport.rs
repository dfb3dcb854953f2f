//! chitchat's [`Transport`] for LogCluster: every datagram sealed under the cluster key (or, only
//! when explicitly asked for, plain), over any [`DatagramTransport`] (UDP, or the in-memory
//! network in tests). Forged, replayed and malformed datagrams are dropped here, counted in
//! `logcluster_gossip_datagrams_dropped_total{reason}`, and never reach chitchat.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use async_trait::async_trait;
use chitchat::ChitchatEnvelope;
use chitchat::transport::{RecvOutcome, SendOutcome, Socket, Transport};

use super::codec::EnvelopeCodec;
use super::datagram::{DatagramSocket, DatagramTransport};
use super::key::GossipSecurity;
use super::seal::{
    DEFAULT_REPLAY_CACHE_CAPACITY, DEFAULT_REPLAY_WINDOW, ReplayGuard, Sealer, UnixMillisClock,
    system_clock,
};
use crate::telemetry::{GossipDropReason, Metrics};

/// Largest UDP payload over IPv4; chitchat sizes its own datagrams to this.
pub const MAX_UDP_PAYLOAD: usize = 65_507;
/// How often at most a socket logs a warning about dropped datagrams (each drop is counted).
const DROP_WARNING_PERIOD: Duration = Duration::from_secs(30);

/// The gossip transport: sealed (or plain) chitchat datagrams over a [`DatagramTransport`].
pub struct GossipTransport {
    datagrams: Arc<dyn DatagramTransport>,
    sealer: Option<Arc<Sealer>>,
    replay_window: Duration,
    replay_capacity: usize,
    metrics: Metrics,
}

impl std::fmt::Debug for GossipTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GossipTransport")
            .field("sealer", &self.sealer)
            .field("replay_window", &self.replay_window)
            .finish_non_exhaustive()
    }
}

impl GossipTransport {
    /// A transport over `datagrams`, sealing with the key in `security` (if any) and reading the
    /// wall clock for timestamps.
    pub fn new(
        datagrams: Arc<dyn DatagramTransport>,
        security: &GossipSecurity,
        metrics: Metrics,
    ) -> Self {
        Self::with_clock(datagrams, security, metrics, system_clock())
    }

    /// Like [`GossipTransport::new`] with another clock (tests move time with it).
    pub fn with_clock(
        datagrams: Arc<dyn DatagramTransport>,
        security: &GossipSecurity,
        metrics: Metrics,
        clock: UnixMillisClock,
    ) -> Self {
        let sealer = match security {
            GossipSecurity::Sealed(key) => Some(Arc::new(Sealer::new(key, clock))),
            GossipSecurity::InsecurePlaintext => None,
        };
        GossipTransport {
            datagrams,
            sealer,
            replay_window: DEFAULT_REPLAY_WINDOW,
            replay_capacity: DEFAULT_REPLAY_CACHE_CAPACITY,
            metrics,
        }
    }

    /// Accepts sealed datagrams stamped within `window` of this node's clock (default 30 s).
    pub fn with_replay_window(mut self, window: Duration) -> Self {
        self.replay_window = window;
        self
    }

    /// Remembers at most `capacity` recent nonces (default 16 384).
    pub fn with_replay_capacity(mut self, capacity: usize) -> Self {
        self.replay_capacity = capacity;
        self
    }
}

#[async_trait]
impl Transport for GossipTransport {
    async fn open(&self, listen_addr: SocketAddr) -> anyhow::Result<Box<dyn Socket>> {
        let socket = self.datagrams.bind(listen_addr).await?;
        let codec = EnvelopeCodec::new().await?;
        Ok(Box::new(GossipSocket {
            socket,
            codec,
            sealer: self.sealer.clone(),
            replay: ReplayGuard::new(self.replay_window, self.replay_capacity),
            metrics: self.metrics.clone(),
            buf: vec![0u8; 65_536].into_boxed_slice(),
            drops: DropWarnings::default(),
        }))
    }
}

struct GossipSocket {
    socket: Box<dyn DatagramSocket>,
    codec: EnvelopeCodec,
    sealer: Option<Arc<Sealer>>,
    replay: ReplayGuard,
    metrics: Metrics,
    buf: Box<[u8]>,
    drops: DropWarnings,
}

impl GossipSocket {
    fn dropped(&mut self, reason: GossipDropReason, from: SocketAddr) {
        self.metrics.record_gossip_dropped(reason);
        tracing::debug!(%from, reason = reason.as_str(), "dropped a gossip datagram");
        self.drops.note(reason, from);
    }
}

#[async_trait]
impl Socket for GossipSocket {
    fn local_addr(&self) -> anyhow::Result<SocketAddr> {
        Ok(self.socket.local_addr()?)
    }

    async fn send(
        &mut self,
        to: SocketAddr,
        envelope: ChitchatEnvelope,
    ) -> anyhow::Result<SendOutcome> {
        let plaintext = self.codec.encode(envelope).await?;
        let datagram = match &self.sealer {
            Some(sealer) => sealer.seal(&plaintext),
            None => plaintext,
        };
        if datagram.len() > MAX_UDP_PAYLOAD {
            bail!(
                "a gossip datagram of {} bytes does not fit in UDP (the cluster state is too large)",
                datagram.len()
            );
        }
        self.socket
            .send_to(&datagram, to)
            .await
            .with_context(|| format!("sending gossip to {to}"))?;
        Ok(SendOutcome {
            num_bytes_sent: datagram.len(),
        })
    }

    // Cancel-safe, as chitchat requires: the datagram socket's recv is, and the codec tolerates
    // an abandoned decode (that one datagram is lost, as UDP may lose it anyway).
    async fn recv(&mut self) -> anyhow::Result<RecvOutcome> {
        loop {
            let (n, from) = self.socket.recv_from(&mut self.buf).await?;
            let opened = match &self.sealer {
                Some(sealer) => sealer.open(&self.buf[..n], &mut self.replay),
                None => Ok(self.buf[..n].to_vec()),
            };
            let plaintext = match opened {
                Ok(plaintext) => plaintext,
                Err(reason) => {
                    self.dropped(reason, from);
                    continue;
                }
            };
            match self.codec.decode(&plaintext).await {
                Ok(Some(envelope)) => {
                    return Ok(RecvOutcome {
                        from_addr: from,
                        envelope,
                        num_bytes_received: n,
                    });
                }
                Ok(None) => self.dropped(GossipDropReason::Malformed, from),
                Err(error) => {
                    tracing::warn!(%error, %from, "the gossip codec failed; datagram dropped");
                }
            }
        }
    }
}

/// Rate-limits the warning about dropped datagrams; every drop is still counted in metrics.
#[derive(Default)]
struct DropWarnings {
    last_warning: Option<Instant>,
    since_last: u64,
}

impl DropWarnings {
    fn note(&mut self, reason: GossipDropReason, from: SocketAddr) {
        self.since_last += 1;
        let due = self
            .last_warning
            .is_none_or(|at| at.elapsed() >= DROP_WARNING_PERIOD);
        if !due {
            return;
        }
        let hint = match reason {
            GossipDropReason::Forged => "sealed under another gossip key, or tampered with",
            GossipDropReason::Replayed => {
                "a replay, or the sender's clock is more than the replay window away from ours"
            }
            GossipDropReason::Malformed => "not a LogCluster gossip datagram",
        };
        tracing::warn!(
            %from,
            reason = reason.as_str(),
            dropped = self.since_last,
            "dropping gossip datagrams: {hint}"
        );
        self.last_warning = Some(Instant::now());
        self.since_last = 0;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};

    use chitchat::{ChitchatMessage, ProtocolVersion};

    use super::*;
    use crate::membership::key::GossipKey;
    use crate::membership::memory::{Datagram, MemoryNetwork};
    use crate::membership::tests::dropped;

    const T0: u64 = 1_800_000_000_000;

    fn addr(last: u8) -> SocketAddr {
        SocketAddr::from(([127, 0, 1, last], 8401))
    }

    fn syn(cluster_id: &str) -> ChitchatEnvelope {
        ChitchatEnvelope {
            version: ProtocolVersion::V0,
            message: ChitchatMessage::Syn {
                cluster_id: cluster_id.into(),
                digest: Default::default(),
            },
        }
    }

    struct Peer {
        socket: Box<dyn Socket>,
        metrics: Metrics,
    }

    async fn peer(
        net: &MemoryNetwork,
        last: u8,
        security: &GossipSecurity,
        clock: &Arc<AtomicU64>,
    ) -> Peer {
        let metrics = Metrics::new(u64::from(last));
        let clock = Arc::clone(clock);
        let transport = GossipTransport::with_clock(
            Arc::new(net.clone()),
            security,
            metrics.clone(),
            Arc::new(move || clock.load(Ordering::SeqCst)),
        );
        let socket = transport.open(addr(last)).await.expect("open");
        Peer { socket, metrics }
    }

    /// Two peers with the same key on a fresh network, a shared clock and a tap.
    struct Pair {
        net: MemoryNetwork,
        clock: Arc<AtomicU64>,
        key: GossipKey,
        a: Peer,
        b: Peer,
        tap: tokio::sync::mpsc::UnboundedReceiver<Datagram>,
    }

    async fn sealed_pair() -> Pair {
        let net = MemoryNetwork::new();
        let clock = Arc::new(AtomicU64::new(T0));
        let key = GossipKey::generate();
        let sealed = GossipSecurity::Sealed(key.clone());
        let a = peer(&net, 1, &sealed, &clock).await;
        let b = peer(&net, 2, &sealed, &clock).await;
        let tap = net.tap();
        Pair {
            net,
            clock,
            key,
            a,
            b,
            tap,
        }
    }

    async fn next_on_wire(tap: &mut tokio::sync::mpsc::UnboundedReceiver<Datagram>) -> Datagram {
        tokio::time::timeout(Duration::from_secs(5), tap.recv())
            .await
            .expect("a datagram on the wire")
            .expect("tap open")
    }

    async fn recv(peer: &mut Peer) -> RecvOutcome {
        tokio::time::timeout(Duration::from_secs(5), peer.socket.recv())
            .await
            .expect("a datagram reaches chitchat")
            .expect("socket healthy")
    }

    #[tokio::test]
    async fn sealed_gossip_reaches_chitchat_and_hides_its_contents() {
        let Pair {
            mut a,
            mut b,
            mut tap,
            ..
        } = sealed_pair().await;

        let outcome = a
            .socket
            .send(addr(2), syn("secret-cluster-name"))
            .await
            .expect("send");
        let wire = next_on_wire(&mut tap).await;
        assert_eq!(outcome.num_bytes_sent, wire.bytes.len());
        assert!(
            !wire
                .bytes
                .windows(b"secret-cluster-name".len())
                .any(|w| w == b"secret-cluster-name"),
            "the chitchat payload is encrypted on the wire"
        );
        let received = recv(&mut b).await;
        assert_eq!(received.from_addr, addr(1));
        assert_eq!(received.envelope, syn("secret-cluster-name"));
        assert_eq!(received.num_bytes_received, wire.bytes.len());
    }

    #[tokio::test]
    async fn forged_replayed_and_malformed_datagrams_never_reach_chitchat() {
        let Pair {
            net,
            clock,
            key,
            mut a,
            mut b,
            mut tap,
        } = sealed_pair().await;
        let mut outsider = peer(
            &net,
            3,
            &GossipSecurity::Sealed(GossipKey::generate()),
            &clock,
        )
        .await;

        a.socket.send(addr(2), syn("first")).await.expect("send");
        let captured = next_on_wire(&mut tap).await.bytes;
        assert_eq!(recv(&mut b).await.envelope, syn("first"));

        // Replayed twice, from the original sender and from elsewhere.
        assert!(net.inject(addr(1), addr(2), captured.clone()));
        assert!(net.inject(addr(9), addr(2), captured.clone()));
        // Tampered: one flipped bit in the ciphertext.
        let mut tampered = captured.clone();
        let middle = tampered.len() / 2;
        tampered[middle] ^= 0x40;
        assert!(net.inject(addr(1), addr(2), tampered));
        // Sealed under another cluster's key.
        outsider
            .socket
            .send(addr(2), syn("intruder"))
            .await
            .expect("send");
        // Garbage, a truncated datagram and a plaintext chitchat datagram.
        assert!(net.inject(addr(1), addr(2), b"garbage".to_vec()));
        assert!(net.inject(addr(1), addr(2), captured[..30].to_vec()));
        let mut codec = EnvelopeCodec::new().await.expect("codec");
        let plaintext = codec.encode(syn("plaintext")).await.expect("encode");
        assert!(net.inject(addr(1), addr(2), plaintext));
        // A datagram sealed with our key around bytes chitchat cannot parse.
        let sealer = Sealer::new(&key, fixed_clock(T0));
        assert!(net.inject(addr(1), addr(2), sealer.seal(b"not chitchat")));

        // Then a genuine one: the next thing chitchat sees.
        a.socket.send(addr(2), syn("second")).await.expect("send");
        assert_eq!(recv(&mut b).await.envelope, syn("second"));

        assert_eq!(dropped(&b.metrics, GossipDropReason::Replayed), 2);
        assert_eq!(dropped(&b.metrics, GossipDropReason::Forged), 2);
        assert_eq!(dropped(&b.metrics, GossipDropReason::Malformed), 4);
        assert_eq!(dropped(&a.metrics, GossipDropReason::Forged), 0);
    }

    fn fixed_clock(millis: u64) -> UnixMillisClock {
        Arc::new(move || millis)
    }

    #[tokio::test]
    async fn a_capture_replayed_after_the_window_is_dropped() {
        let Pair {
            net,
            clock,
            mut a,
            mut b,
            mut tap,
            ..
        } = sealed_pair().await;

        a.socket.send(addr(2), syn("old")).await.expect("send");
        let captured = next_on_wire(&mut tap).await.bytes;
        // Suppose b never saw it (lost), and the attacker replays it 31 s later: the nonce
        // cache cannot know it, the timestamp refuses it.
        net.cut_one_way(addr(1), addr(2));
        a.socket.send(addr(2), syn("lost")).await.expect("send");
        let lost = next_on_wire(&mut tap).await.bytes;
        net.heal(addr(1), addr(2));
        assert_eq!(recv(&mut b).await.envelope, syn("old"));

        clock.fetch_add(
            DEFAULT_REPLAY_WINDOW.as_millis() as u64 + 1_000,
            Ordering::SeqCst,
        );
        assert!(net.inject(addr(1), addr(2), lost));
        assert!(net.inject(addr(1), addr(2), captured));
        a.socket.send(addr(2), syn("fresh")).await.expect("send");
        assert_eq!(recv(&mut b).await.envelope, syn("fresh"));
        assert_eq!(dropped(&b.metrics, GossipDropReason::Replayed), 2);
    }

    #[tokio::test]
    async fn plaintext_and_sealed_nodes_do_not_understand_each_other() {
        let net = MemoryNetwork::new();
        let clock = Arc::new(AtomicU64::new(T0));
        let plain = GossipSecurity::InsecurePlaintext;
        let sealed = GossipSecurity::Sealed(GossipKey::generate());
        let mut a = peer(&net, 1, &plain, &clock).await;
        let mut b = peer(&net, 2, &plain, &clock).await;
        let mut s = peer(&net, 3, &sealed, &clock).await;
        let mut t = peer(&net, 4, &sealed, &clock).await;

        a.socket.send(addr(2), syn("plain")).await.expect("send");
        assert_eq!(recv(&mut b).await.envelope, syn("plain"));

        // A sealed datagram is not chitchat to a plaintext node.
        s.socket.send(addr(2), syn("sealed")).await.expect("send");
        assert!(net.inject(addr(1), addr(2), b"junk".to_vec()));
        a.socket
            .send(addr(2), syn("plain again"))
            .await
            .expect("send");
        assert_eq!(recv(&mut b).await.envelope, syn("plain again"));
        assert_eq!(dropped(&b.metrics, GossipDropReason::Malformed), 2);

        // A plaintext datagram is refused by a sealed node.
        a.socket
            .send(addr(3), syn("plain to sealed"))
            .await
            .expect("send");
        t.socket
            .send(addr(3), syn("sealed to sealed"))
            .await
            .expect("send");
        assert_eq!(recv(&mut s).await.envelope, syn("sealed to sealed"));
        assert_eq!(dropped(&s.metrics, GossipDropReason::Malformed), 1);
    }
}
