//! The byte-level datagram layer under gossip: UDP in production, an in-memory network with
//! cuttable links in tests ([`MemoryNetwork`](super::memory::MemoryNetwork)).
//!
//! chitchat's own `Transport` trait carries parsed envelopes; sealing needs the bytes, so the
//! gossip transport ([`GossipTransport`](super::transport::GossipTransport)) sits on this
//! smaller trait instead.

use std::io;
use std::net::SocketAddr;

use async_trait::async_trait;

/// Opens datagram sockets.
#[async_trait]
pub trait DatagramTransport: Send + Sync + 'static {
    /// Binds a socket to `addr` (port 0 picks a free port).
    async fn bind(&self, addr: SocketAddr) -> io::Result<Box<dyn DatagramSocket>>;
}

/// A bound datagram socket.
#[async_trait]
pub trait DatagramSocket: Send + Sync + 'static {
    /// The address the socket is bound to.
    fn local_addr(&self) -> io::Result<SocketAddr>;

    /// Sends one datagram. Like UDP, success does not mean delivery.
    async fn send_to(&mut self, datagram: &[u8], to: SocketAddr) -> io::Result<()>;

    /// Receives one datagram into `buf` (truncated if longer), returning its length and sender.
    /// Must be cancel-safe: dropping the future loses no datagram.
    async fn recv_from(&mut self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)>;
}

/// Real UDP.
#[derive(Debug, Clone, Copy, Default)]
pub struct UdpDatagramTransport;

#[async_trait]
impl DatagramTransport for UdpDatagramTransport {
    async fn bind(&self, addr: SocketAddr) -> io::Result<Box<dyn DatagramSocket>> {
        let socket = tokio::net::UdpSocket::bind(addr).await.map_err(|e| {
            io::Error::new(e.kind(), format!("cannot bind {addr}/UDP for gossip: {e}"))
        })?;
        Ok(Box::new(UdpDatagramSocket(socket)))
    }
}

struct UdpDatagramSocket(tokio::net::UdpSocket);

/// Errors a UDP socket reports about earlier datagrams (ICMP feedback) or passing memory
/// pressure; the socket is still usable.
fn is_transient(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::OutOfMemory
    )
}

#[async_trait]
impl DatagramSocket for UdpDatagramSocket {
    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.local_addr()
    }

    async fn send_to(&mut self, datagram: &[u8], to: SocketAddr) -> io::Result<()> {
        self.0.send_to(datagram, to).await.map(|_| ())
    }

    async fn recv_from(&mut self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        loop {
            match self.0.recv_from(buf).await {
                Err(e) if is_transient(&e) => {
                    tracing::debug!(error = %e, "transient gossip socket error");
                }
                other => return other,
            }
        }
    }
}
