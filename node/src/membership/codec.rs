//! chitchat envelopes ↔ datagram bytes, with chitchat's own encoder and decoder.
//!
//! NB: chitchat 0.13 keeps `ChitchatEnvelope::serialize`/`deserialize` crate-private, and its
//! public `Socket` trait hands out envelopes, not bytes. The only public code that turns an
//! envelope into bytes (and back) is its UDP socket. So the codec owns two pairs of sockets
//! bound to 127.0.0.1 and lets chitchat's `UdpSocket` do the work: to encode, chitchat's socket
//! sends the envelope to a capture socket that reads the bytes; to decode, an injector socket
//! sends the bytes to a chitchat socket that parses them. Nothing leaves the host: both pairs
//! talk over loopback only, and the sealed bytes are what goes to peers. If chitchat ever makes
//! its envelope codec public, this file shrinks to two calls.
//!
//! Loopback UDP between two sockets is reliable and ordered in practice, but the round trip is
//! still made robust:
//! * **Fences.** Each exchange is bracketed by marker datagrams. chitchat's decoder silently
//!   skips bytes it cannot parse, so "nothing came out before the closing fence" is how a
//!   malformed payload is recognized, instead of waiting forever.
//! * **Cancellation.** chitchat drops its `recv` future whenever its gossip timer fires. Each
//!   decode uses fences of a length not used by the previous ones (the decoder ignores trailing
//!   bytes, so padding a marker keeps it a valid message), so whatever an abandoned exchange left
//!   in the queue is recognized as stale and skipped.
//! * **Strangers.** The capture socket is connected to chitchat's encoder socket, so the kernel
//!   drops anything else; the decoder's results are kept only when they come from the injector
//!   (another process on the host could otherwise inject plaintext gossip into it).

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use chitchat::transport::{RecvOutcome, Socket, UdpSocket as ChitchatUdpSocket};
use chitchat::{ChitchatEnvelope, ChitchatMessage, ProtocolVersion};

/// Upper bound of one loopback round trip; only reached if the host drops loopback datagrams.
const ROUND_TRIP_TIMEOUT: Duration = Duration::from_secs(2);
/// Distinct fence lengths cycle through this many decodes.
const FENCE_SEQUENCES: u16 = 512;
/// Largest UDP payload.
const MAX_DATAGRAM: usize = 65_535;

fn bad_cluster(version: ProtocolVersion) -> ChitchatEnvelope {
    ChitchatEnvelope {
        version,
        message: ChitchatMessage::BadCluster,
    }
}

/// Encodes and decodes chitchat envelopes through chitchat's own UDP socket code.
pub(crate) struct EnvelopeCodec {
    encoder: ChitchatUdpSocket,
    capture: tokio::net::UdpSocket,
    capture_addr: SocketAddr,
    /// The bytes of `BadCluster` at protocol V1 and V0: the encode-side fences.
    open_fence: Vec<u8>,
    close_fence: Vec<u8>,
    injector: tokio::net::UdpSocket,
    injector_addr: SocketAddr,
    decoder: ChitchatUdpSocket,
    fence_sequence: u16,
    buf: Box<[u8]>,
}

impl EnvelopeCodec {
    /// Binds the four loopback sockets and learns the marker bytes from chitchat itself (so no
    /// byte of chitchat's format is hard-coded here).
    pub(crate) async fn new() -> anyhow::Result<Self> {
        let loopback = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
        let mut encoder = ChitchatUdpSocket::open(loopback).await?;
        let capture = tokio::net::UdpSocket::bind(loopback)
            .await
            .context("binding the gossip codec's capture socket on 127.0.0.1")?;
        capture.connect(encoder.local_addr()?).await?;
        let capture_addr = capture.local_addr()?;
        let decoder = ChitchatUdpSocket::open(loopback).await?;
        let injector = tokio::net::UdpSocket::bind(loopback)
            .await
            .context("binding the gossip codec's injector socket on 127.0.0.1")?;
        injector.connect(decoder.local_addr()?).await?;
        let injector_addr = injector.local_addr()?;

        let mut buf = vec![0u8; MAX_DATAGRAM].into_boxed_slice();
        let mut marker = async |version: ProtocolVersion| -> anyhow::Result<Vec<u8>> {
            encoder.send(capture_addr, bad_cluster(version)).await?;
            let n = tokio::time::timeout(ROUND_TRIP_TIMEOUT, capture.recv(&mut buf))
                .await
                .context("chitchat's encoder did not answer on loopback")??;
            Ok(buf[..n].to_vec())
        };
        let open_fence = marker(ProtocolVersion::V1).await?;
        let close_fence = marker(ProtocolVersion::V0).await?;
        if open_fence == close_fence {
            bail!(
                "chitchat encodes BadCluster identically at V0 and V1; the gossip codec needs them to differ"
            );
        }
        Ok(EnvelopeCodec {
            encoder,
            capture,
            capture_addr,
            open_fence,
            close_fence,
            injector,
            injector_addr,
            decoder,
            fence_sequence: 0,
            buf,
        })
    }

    /// The bytes chitchat would put in a UDP datagram for `envelope`.
    pub(crate) async fn encode(&mut self, envelope: ChitchatEnvelope) -> anyhow::Result<Vec<u8>> {
        if matches!(envelope.message, ChitchatMessage::BadCluster) {
            // The fences are BadCluster messages; their bytes are known already.
            return Ok(match envelope.version {
                ProtocolVersion::V0 => self.close_fence.clone(),
                ProtocolVersion::V1 => self.open_fence.clone(),
            });
        }
        let capture_addr = self.capture_addr;
        self.encoder
            .send(capture_addr, bad_cluster(ProtocolVersion::V1))
            .await?;
        let sent = self.encoder.send(capture_addr, envelope).await?;
        self.encoder
            .send(capture_addr, bad_cluster(ProtocolVersion::V0))
            .await?;
        let exchange = async {
            let mut inside = false;
            let mut encoded = None;
            loop {
                let n = self.capture.recv(&mut self.buf).await?;
                let datagram = &self.buf[..n];
                if datagram == self.open_fence.as_slice() {
                    inside = true;
                    encoded = None;
                } else if datagram == self.close_fence.as_slice() {
                    if inside {
                        return encoded.ok_or_else(|| anyhow!("the encoded envelope was lost"));
                    }
                } else if inside {
                    encoded = Some(datagram.to_vec());
                }
            }
        };
        let encoded: Vec<u8> = tokio::time::timeout(ROUND_TRIP_TIMEOUT, exchange)
            .await
            .context("chitchat's encoder did not answer on loopback")??;
        if encoded.len() != sent.num_bytes_sent {
            bail!(
                "the gossip codec captured {} bytes for an envelope of {}",
                encoded.len(),
                sent.num_bytes_sent
            );
        }
        Ok(encoded)
    }

    /// The envelope chitchat parses from `bytes`, or `None` when it refuses them.
    pub(crate) async fn decode(
        &mut self,
        bytes: &[u8],
    ) -> anyhow::Result<Option<ChitchatEnvelope>> {
        let fences = self.next_fences();
        self.injector.send(&fences.open).await?;
        self.injector.send(bytes).await?;
        self.injector.send(&fences.close).await?;
        self.collect(&fences).await
    }

    /// Fences for the next decode: the V0 `BadCluster` marker padded with zeros to lengths that
    /// the previous decodes did not use.
    fn next_fences(&mut self) -> Fences {
        self.fence_sequence = (self.fence_sequence + 1) % FENCE_SEQUENCES;
        let open_len = self.close_fence.len() + 1 + 2 * usize::from(self.fence_sequence);
        let mut open = self.close_fence.clone();
        open.resize(open_len, 0);
        let mut close = open.clone();
        close.push(0);
        Fences { open, close }
    }

    /// Reads the decoder until `fences.close`, returning what chitchat parsed after
    /// `fences.open`.
    async fn collect(&mut self, fences: &Fences) -> anyhow::Result<Option<ChitchatEnvelope>> {
        let injector_addr = self.injector_addr;
        let exchange = async {
            let mut inside = false;
            let mut decoded = None;
            loop {
                let RecvOutcome {
                    from_addr,
                    envelope,
                    num_bytes_received,
                } = self.decoder.recv().await?;
                if from_addr != injector_addr {
                    tracing::warn!(%from_addr, "dropped a datagram sent to the gossip codec by another local socket");
                    continue;
                }
                let is_fence = matches!(envelope.message, ChitchatMessage::BadCluster);
                if is_fence && num_bytes_received == fences.open.len() {
                    inside = true;
                    decoded = None;
                } else if is_fence && num_bytes_received == fences.close.len() {
                    if inside {
                        return anyhow::Ok(decoded);
                    }
                } else if inside {
                    decoded = Some(envelope);
                }
            }
        };
        match tokio::time::timeout(ROUND_TRIP_TIMEOUT, exchange).await {
            Ok(result) => result,
            Err(_) => {
                // The next decode uses new fences, so whatever arrives late is skipped.
                tracing::warn!("chitchat's decoder did not answer on loopback; datagram dropped");
                Ok(None)
            }
        }
    }
}

/// The markers around one decode.
struct Fences {
    open: Vec<u8>,
    close: Vec<u8>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One envelope of every kind (chitchat envelopes are not `Clone`, hence a function).
    fn sample(kind: usize) -> ChitchatEnvelope {
        let message = match kind {
            0 | 1 => ChitchatMessage::Syn {
                cluster_id: "logcluster-test".into(),
                digest: Default::default(),
            },
            2 => ChitchatMessage::SynAck {
                digest: Default::default(),
                delta: Default::default(),
            },
            3 => ChitchatMessage::Ack {
                delta: Default::default(),
            },
            _ => ChitchatMessage::BadCluster,
        };
        let version = if kind.is_multiple_of(2) {
            ProtocolVersion::V0
        } else {
            ProtocolVersion::V1
        };
        ChitchatEnvelope { version, message }
    }

    const KINDS: usize = 6;

    #[tokio::test]
    async fn envelopes_round_trip_through_chitchats_own_codec() {
        let mut codec = EnvelopeCodec::new().await.expect("codec");
        for kind in 0..KINDS {
            let bytes = codec.encode(sample(kind)).await.expect("encode");
            let decoded = codec.decode(&bytes).await.expect("decode");
            assert_eq!(decoded, Some(sample(kind)), "kind {kind}");
        }
    }

    #[tokio::test]
    async fn bytes_chitchat_cannot_parse_decode_to_none() {
        let mut codec = EnvelopeCodec::new().await.expect("codec");
        let valid = codec.encode(sample(0)).await.expect("encode");
        for garbage in [&b""[..], b"junk", &valid[..valid.len() - 1], &[0xff; 300]] {
            assert_eq!(
                codec.decode(garbage).await.expect("decode"),
                None,
                "{garbage:?}"
            );
        }
        // The codec is still in step afterwards.
        assert_eq!(codec.decode(&valid).await.expect("decode"), Some(sample(0)));
    }

    #[tokio::test]
    async fn an_abandoned_decode_does_not_leak_into_the_next_one() {
        let mut codec = EnvelopeCodec::new().await.expect("codec");
        let syn = codec.encode(sample(0)).await.expect("encode syn");
        let ack = codec.encode(sample(3)).await.expect("encode ack");
        // What chitchat's select! leaves behind when it drops `recv` mid-decode: a finished
        // exchange nobody read, and one abandoned between its fences.
        for close in [true, false] {
            let fences = codec.next_fences();
            codec.injector.send(&fences.open).await.expect("send");
            codec.injector.send(&syn).await.expect("send");
            if close {
                codec.injector.send(&fences.close).await.expect("send");
            }
        }
        assert_eq!(codec.decode(&ack).await.expect("decode"), Some(sample(3)));
        assert_eq!(codec.decode(b"junk").await.expect("decode"), None);
    }

    #[tokio::test]
    async fn strangers_on_loopback_cannot_inject_into_the_decoder() {
        let mut codec = EnvelopeCodec::new().await.expect("codec");
        let syn = codec.encode(sample(0)).await.expect("encode");
        let stranger = tokio::net::UdpSocket::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let decoder_addr = codec.decoder.local_addr().expect("addr");
        // A stranger's well-formed SYN lands inside the fences of a decode of garbage: it must
        // not come out as the decoded message.
        let fences = codec.next_fences();
        codec.injector.send(&fences.open).await.expect("send");
        stranger.send_to(&syn, decoder_addr).await.expect("send");
        codec.injector.send(b"junk").await.expect("send");
        codec.injector.send(&fences.close).await.expect("send");
        assert_eq!(codec.collect(&fences).await.expect("collect"), None);
    }

    #[tokio::test]
    async fn the_encoder_recovers_from_an_abandoned_exchange() {
        let mut codec = EnvelopeCodec::new().await.expect("codec");
        let capture_addr = codec.capture_addr;
        // An encode abandoned after its opening fence and envelope were sent.
        codec
            .encoder
            .send(capture_addr, bad_cluster(ProtocolVersion::V1))
            .await
            .expect("send");
        codec
            .encoder
            .send(capture_addr, sample(2))
            .await
            .expect("send");
        let ack = codec.encode(sample(3)).await.expect("encode");
        assert_eq!(codec.decode(&ack).await.expect("decode"), Some(sample(3)));
    }
}
