//! An in-memory datagram network for tests: sockets are channels, links can be cut (both ways or
//! one way) and healed, and a tap sees a copy of every datagram sent, so that tests can replay,
//! tamper with or forge datagrams and inject them as if they came from anywhere.

use std::collections::{HashMap, HashSet};
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use async_trait::async_trait;
use parking_lot::Mutex;
use tokio::sync::mpsc;

use super::datagram::{DatagramSocket, DatagramTransport};

/// Datagrams queued per socket before new ones are dropped (as a full UDP buffer would).
const QUEUE_LEN: usize = 1024;
/// First port handed out for binds to port 0.
const FIRST_EPHEMERAL_PORT: u16 = 40_000;

/// One datagram seen on the network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Datagram {
    /// Sender.
    pub from: SocketAddr,
    /// Destination.
    pub to: SocketAddr,
    /// The bytes as sent.
    pub bytes: Vec<u8>,
}

type Inbox = mpsc::Sender<(Vec<u8>, SocketAddr)>;

#[derive(Default)]
struct Network {
    sockets: HashMap<SocketAddr, Inbox>,
    /// Directed links that drop everything: (from, to).
    cut: HashSet<(SocketAddr, SocketAddr)>,
    taps: Vec<mpsc::UnboundedSender<Datagram>>,
}

/// An in-memory datagram network; clones share it.
#[derive(Clone, Default)]
pub struct MemoryNetwork {
    inner: Arc<Mutex<Network>>,
}

impl std::fmt::Debug for MemoryNetwork {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let net = self.inner.lock();
        f.debug_struct("MemoryNetwork")
            .field("sockets", &net.sockets.keys().collect::<Vec<_>>())
            .field("cut", &net.cut)
            .finish()
    }
}

impl MemoryNetwork {
    /// An empty network.
    pub fn new() -> Self {
        Self::default()
    }

    /// Drops every datagram between `a` and `b`, both ways.
    pub fn cut(&self, a: SocketAddr, b: SocketAddr) {
        let mut net = self.inner.lock();
        net.cut.insert((a, b));
        net.cut.insert((b, a));
    }

    /// Drops every datagram from `from` to `to` (the other way still works).
    pub fn cut_one_way(&self, from: SocketAddr, to: SocketAddr) {
        self.inner.lock().cut.insert((from, to));
    }

    /// Restores the link between `a` and `b`, both ways.
    pub fn heal(&self, a: SocketAddr, b: SocketAddr) {
        let mut net = self.inner.lock();
        net.cut.remove(&(a, b));
        net.cut.remove(&(b, a));
    }

    /// Cuts every link between the two sides.
    pub fn partition(&self, left: &[SocketAddr], right: &[SocketAddr]) {
        for a in left {
            for b in right {
                self.cut(*a, *b);
            }
        }
    }

    /// Restores every link.
    pub fn heal_all(&self) {
        self.inner.lock().cut.clear();
    }

    /// A copy of every datagram sent from now on (whether or not a link or a receiver drops it).
    pub fn tap(&self) -> mpsc::UnboundedReceiver<Datagram> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.inner.lock().taps.push(tx);
        rx
    }

    /// Delivers `bytes` to `to` as if `from` had sent them, bypassing cut links (an attacker on
    /// the path). Returns whether a socket is bound at `to` and had room for it.
    pub fn inject(&self, from: SocketAddr, to: SocketAddr, bytes: Vec<u8>) -> bool {
        let inbox = self.inner.lock().sockets.get(&to).cloned();
        inbox.is_some_and(|inbox| inbox.try_send((bytes, from)).is_ok())
    }

    /// Whether a socket is bound at `addr`.
    pub fn is_bound(&self, addr: SocketAddr) -> bool {
        self.inner.lock().sockets.contains_key(&addr)
    }

    fn send(&self, from: SocketAddr, to: SocketAddr, bytes: &[u8]) {
        let inbox = {
            let mut net = self.inner.lock();
            net.taps.retain(|tap| {
                tap.send(Datagram {
                    from,
                    to,
                    bytes: bytes.to_vec(),
                })
                .is_ok()
            });
            if net.cut.contains(&(from, to)) {
                return;
            }
            net.sockets.get(&to).cloned()
        };
        if let Some(inbox) = inbox {
            // A full queue drops the datagram, as UDP would.
            let _ = inbox.try_send((bytes.to_vec(), from));
        }
    }
}

#[async_trait]
impl DatagramTransport for MemoryNetwork {
    async fn bind(&self, mut addr: SocketAddr) -> io::Result<Box<dyn DatagramSocket>> {
        let (tx, rx) = mpsc::channel(QUEUE_LEN);
        let mut net = self.inner.lock();
        if addr.port() == 0 {
            let port = (FIRST_EPHEMERAL_PORT..=u16::MAX)
                .find(|port| !net.sockets.contains_key(&SocketAddr::new(addr.ip(), *port)))
                .ok_or_else(|| io::Error::new(io::ErrorKind::AddrInUse, "no free port"))?;
            addr.set_port(port);
        }
        if net.sockets.contains_key(&addr) {
            return Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                format!("{addr} is already bound on this in-memory network"),
            ));
        }
        net.sockets.insert(addr, tx);
        Ok(Box::new(MemorySocket {
            addr,
            inbox: rx,
            network: self.clone(),
        }))
    }
}

struct MemorySocket {
    addr: SocketAddr,
    inbox: mpsc::Receiver<(Vec<u8>, SocketAddr)>,
    network: MemoryNetwork,
}

#[async_trait]
impl DatagramSocket for MemorySocket {
    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.addr)
    }

    async fn send_to(&mut self, datagram: &[u8], to: SocketAddr) -> io::Result<()> {
        self.network.send(self.addr, to, datagram);
        Ok(())
    }

    async fn recv_from(&mut self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        let (bytes, from) =
            self.inbox.recv().await.ok_or_else(|| {
                io::Error::new(io::ErrorKind::BrokenPipe, "in-memory socket closed")
            })?;
        let n = bytes.len().min(buf.len());
        buf[..n].copy_from_slice(&bytes[..n]);
        Ok((n, from))
    }
}

impl Drop for MemorySocket {
    fn drop(&mut self) {
        // Unbind synchronously, so that a restarted node can bind the same address at once.
        self.network.inner.lock().sockets.remove(&self.addr);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 1, 1], port))
    }

    #[tokio::test]
    async fn datagrams_flow_until_the_link_is_cut_and_after_it_heals() {
        let net = MemoryNetwork::new();
        let mut a = net.bind(addr(1)).await.expect("bind a");
        let mut b = net.bind(addr(2)).await.expect("bind b");
        let mut tap = net.tap();
        let mut buf = [0u8; 16];

        a.send_to(b"one", addr(2)).await.expect("send");
        assert_eq!(b.recv_from(&mut buf).await.expect("recv"), (3, addr(1)));
        assert_eq!(&buf[..3], b"one");

        net.cut(addr(1), addr(2));
        a.send_to(b"lost", addr(2)).await.expect("send");
        b.send_to(b"lost too", addr(1)).await.expect("send");
        net.heal(addr(1), addr(2));
        a.send_to(b"two", addr(2)).await.expect("send");
        assert_eq!(b.recv_from(&mut buf).await.expect("recv"), (3, addr(1)));
        assert_eq!(&buf[..3], b"two", "the datagram sent while cut was dropped");

        let seen: Vec<_> = std::iter::from_fn(|| tap.try_recv().ok())
            .map(|d| d.bytes)
            .collect();
        assert_eq!(
            seen,
            vec![
                b"one".to_vec(),
                b"lost".to_vec(),
                b"lost too".to_vec(),
                b"two".to_vec()
            ]
        );

        // One-way cut: b still hears a, a no longer hears b.
        net.cut_one_way(addr(2), addr(1));
        b.send_to(b"dropped", addr(1)).await.expect("send");
        a.send_to(b"three", addr(2)).await.expect("send");
        assert_eq!(b.recv_from(&mut buf).await.expect("recv"), (5, addr(1)));
        assert!(net.inject(addr(9), addr(1), b"forged".to_vec()));
        assert_eq!(a.recv_from(&mut buf).await.expect("recv"), (6, addr(9)));
    }

    #[tokio::test]
    async fn addresses_are_exclusive_and_freed_on_drop() {
        let net = MemoryNetwork::new();
        let a = net.bind(addr(1)).await.expect("bind");
        assert!(net.bind(addr(1)).await.is_err());
        drop(a);
        assert!(!net.is_bound(addr(1)));
        let again = net.bind(addr(1)).await.expect("rebind after drop");
        let ephemeral = net.bind(addr(0)).await.expect("port 0");
        assert_ne!(ephemeral.local_addr().expect("addr").port(), 0);
        assert_eq!(again.local_addr().expect("addr"), addr(1));
    }
}
