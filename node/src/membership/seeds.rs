//! Gossip seeds: `host:port` strings, re-resolved periodically.
//!
//! chitchat 0.13 takes seeds as strings: IP literals are used as they are; host names are
//! resolved once at start and then every 60 s by a fixed internal loop. That is too slow for a
//! StatefulSet coming up (the headless Service name resolves to no pod, or to a few, in the
//! first seconds), and the interval cannot be changed. So LogCluster hands chitchat only the
//! literal seeds and resolves host names itself, with its own period (faster while this node
//! knows no other live node), and asks chitchat to gossip with every seed address that is not a
//! live member yet (`ChitchatHandle::gossip`). One SYN is enough: the answer carries the peer's
//! state and from then on regular gossip includes it.

use std::collections::HashSet;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chitchat::ChitchatHandle;
use tokio::sync::watch;

use super::error::{MembershipError, Result};
use super::member::{ClusterMember, is_host_port};

/// Resolves a `host:port` seed to socket addresses.
#[async_trait]
pub trait SeedResolver: Send + Sync + 'static {
    /// Every address `seed` currently stands for (a headless Service: every pod).
    async fn resolve(&self, seed: &str) -> io::Result<Vec<SocketAddr>>;
}

/// The system resolver (`getaddrinfo`, i.e. cluster DNS in Kubernetes).
#[derive(Debug, Clone, Copy, Default)]
pub struct DnsSeedResolver;

#[async_trait]
impl SeedResolver for DnsSeedResolver {
    async fn resolve(&self, seed: &str) -> io::Result<Vec<SocketAddr>> {
        Ok(tokio::net::lookup_host(seed).await?.collect())
    }
}

/// Seeds split into what chitchat can use directly and what needs resolving.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Seeds {
    /// IP literals (`127.0.2.3:8401`, `[::1]:8401`).
    pub(crate) literal: Vec<SocketAddr>,
    /// Host names (`demo-nodes.ns.svc:8401`).
    pub(crate) hosts: Vec<String>,
}

impl Seeds {
    /// Validates `host:port` seeds.
    pub(crate) fn parse(seeds: &[String]) -> Result<Self> {
        let mut parsed = Seeds::default();
        for seed in seeds {
            let seed = seed.trim();
            if seed.is_empty() {
                continue;
            }
            if let Ok(addr) = seed.parse::<SocketAddr>() {
                parsed.literal.push(addr);
            } else if is_host_port(seed) {
                parsed.hosts.push(seed.to_string());
            } else {
                return Err(MembershipError::InvalidSeed {
                    seed: seed.to_string(),
                    reason: "expected host:port, e.g. demo-nodes.default.svc:8401".into(),
                });
            }
        }
        Ok(parsed)
    }
}

/// Periodically resolves the seeds and pokes chitchat toward every seed address that is not
/// this node and not a live member.
pub(crate) async fn run_seed_refresh(
    handle: Arc<ChitchatHandle>,
    resolver: Arc<dyn SeedResolver>,
    seeds: Seeds,
    self_addr: SocketAddr,
    members: watch::Receiver<Vec<ClusterMember>>,
    period: Duration,
    alone_period: Duration,
) {
    loop {
        let mut addrs: HashSet<SocketAddr> = seeds.literal.iter().copied().collect();
        for host in &seeds.hosts {
            match resolver.resolve(host).await {
                Ok(resolved) => addrs.extend(resolved),
                Err(error) => tracing::debug!(seed = %host, %error, "cannot resolve gossip seed"),
            }
        }
        let (known, alone): (HashSet<SocketAddr>, bool) = {
            let members = members.borrow();
            (
                members.iter().map(|m| m.gossip_addr).collect(),
                members.iter().all(|m| m.gossip_addr == self_addr),
            )
        };
        for addr in addrs {
            if addr != self_addr && !known.contains(&addr) && handle.gossip(addr).is_err() {
                // chitchat has stopped; the membership handle reports that.
                return;
            }
        }
        tokio::time::sleep(if alone { alone_period } else { period }).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_are_ip_literals_or_host_names_with_a_port() {
        let seeds = Seeds::parse(&[
            "127.0.2.3:8401".into(),
            " demo-nodes.default.svc.cluster.local:8401 ".into(),
            "[::1]:8401".into(),
            "".into(),
        ])
        .expect("valid seeds");
        assert_eq!(
            seeds.literal,
            vec![
                "127.0.2.3:8401".parse::<SocketAddr>().expect("addr"),
                "[::1]:8401".parse().expect("addr")
            ]
        );
        assert_eq!(
            seeds.hosts,
            vec!["demo-nodes.default.svc.cluster.local:8401"]
        );

        for bad in ["demo-nodes", "demo-nodes:", ":8401", "demo:gossip"] {
            let err = Seeds::parse(&[bad.into()]).expect_err(bad);
            assert!(err.to_string().contains(bad), "{err}");
        }
    }
}
