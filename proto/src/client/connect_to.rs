//! Dialing a server somewhere other than the address the cluster advertises for it, while still
//! verifying its certificate against the advertised name (what curl's `--connect-to` does).
//!
//! Servers advertise the names their certificates carry (on Kubernetes, a pod's DNS name). A
//! client that cannot resolve those names, or reaches the servers through a tunnel or a
//! `kubectl port-forward`, maps each advertised `host:port` to an address it can dial; the TLS
//! handshake still checks the certificate against the advertised host, so the map cannot be
//! used to talk to a server that is not the one named.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

type Lookup = dyn Fn(&str) -> Option<String> + Send + Sync;

/// Where to dial an advertised address. Cheap to clone.
#[derive(Clone, Default)]
pub struct ConnectTo {
    lookup: Option<Arc<Lookup>>,
}

impl fmt::Debug for ConnectTo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.lookup {
            Some(_) => f.write_str("ConnectTo(mapped)"),
            None => f.write_str("ConnectTo(direct)"),
        }
    }
}

impl ConnectTo {
    /// Dial every address as advertised (the default).
    pub fn direct() -> Self {
        ConnectTo::default()
    }

    /// Dial the addresses of `map` (advertised `host:port` → address to dial) where they are
    /// listed, any other address as advertised.
    pub fn fixed(map: HashMap<String, String>) -> Self {
        ConnectTo::with(move |addr| map.get(addr).cloned())
    }

    /// Ask `lookup` where to dial each advertised address, every time a connection is made:
    /// `None` dials it as advertised. For maps that change while the client runs (servers
    /// that move to other addresses when they are restarted).
    pub fn with(lookup: impl Fn(&str) -> Option<String> + Send + Sync + 'static) -> Self {
        ConnectTo {
            lookup: Some(Arc::new(lookup)),
        }
    }

    /// The address to dial for `advertised`, if it is not `advertised` itself.
    pub(crate) fn dial(&self, advertised: &str) -> Option<String> {
        let lookup = self.lookup.as_ref()?;
        lookup(strip_scheme(advertised)).filter(|dial| dial != advertised)
    }
}

fn strip_scheme(addr: &str) -> &str {
    addr.strip_prefix("https://")
        .or_else(|| addr.strip_prefix("http://"))
        .unwrap_or(addr)
}

/// The host of `host:port` (IPv6 literals in brackets keep their brackets off), the name a
/// server's certificate is checked against.
pub(crate) fn host_of(addr: &str) -> &str {
    let addr = strip_scheme(addr);
    let addr = addr.split('/').next().unwrap_or(addr);
    if let Some(rest) = addr.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match addr.rsplit_once(':') {
        Some((host, port)) if port.chars().all(|c| c.is_ascii_digit()) => host,
        _ => addr,
    }
}

/// A `--connect-to` argument that is not `HOST:PORT=HOST:PORT`, or a name mapped twice.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnectToError {
    #[error("--connect-to {arg:?}: expected ADVERTISED_HOST:PORT=DIAL_HOST:PORT")]
    NoEquals { arg: String },
    #[error("--connect-to {arg:?}: the {what} address {addr:?} is not HOST:PORT")]
    NotHostPort {
        arg: String,
        what: &'static str,
        addr: String,
    },
    #[error("--connect-to: {advertised:?} is mapped more than once")]
    MappedTwice { advertised: String },
}

/// Parses `--connect-to` arguments, each `HOST:PORT=ADDR:PORT`.
pub fn parse_connect_to(args: &[String]) -> Result<ConnectTo, ConnectToError> {
    if args.is_empty() {
        return Ok(ConnectTo::direct());
    }
    let mut map = HashMap::new();
    for arg in args {
        let (advertised, dial) = arg
            .split_once('=')
            .ok_or_else(|| ConnectToError::NoEquals { arg: arg.clone() })?;
        for (what, addr) in [("advertised", advertised), ("dial", dial)] {
            let port = addr.rsplit_once(':').map(|(_, port)| port);
            if port.is_none_or(|p| p.parse::<u16>().is_err()) || host_of(addr).is_empty() {
                return Err(ConnectToError::NotHostPort {
                    arg: arg.clone(),
                    what,
                    addr: addr.to_owned(),
                });
            }
        }
        if map.insert(advertised.to_owned(), dial.to_owned()).is_some() {
            return Err(ConnectToError::MappedTwice {
                advertised: advertised.to_owned(),
            });
        }
    }
    Ok(ConnectTo::fixed(map))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_host_is_what_a_certificate_is_checked_against() {
        assert_eq!(
            host_of("demo-0.demo-nodes.default.svc:8400"),
            "demo-0.demo-nodes.default.svc"
        );
        assert_eq!(host_of("https://node-1:8400"), "node-1");
        assert_eq!(host_of("[::1]:8400"), "::1");
        assert_eq!(host_of("127.0.0.1:8400"), "127.0.0.1");
        assert_eq!(host_of("localhost"), "localhost");
    }

    #[test]
    fn mapped_addresses_are_dialed_elsewhere_and_others_as_advertised() {
        let to = parse_connect_to(&[
            "demo-0.demo-nodes:8400=127.0.0.1:18400".to_owned(),
            "demo-1.demo-nodes:8400=demo-1.demo-nodes:8400".to_owned(),
        ])
        .expect("valid");
        assert_eq!(
            to.dial("demo-0.demo-nodes:8400").as_deref(),
            Some("127.0.0.1:18400")
        );
        assert_eq!(
            to.dial("https://demo-0.demo-nodes:8400").as_deref(),
            Some("127.0.0.1:18400")
        );
        // A map to itself is no map.
        assert_eq!(to.dial("demo-1.demo-nodes:8400"), None);
        assert_eq!(to.dial("demo-2.demo-nodes:8400"), None);
        assert_eq!(ConnectTo::direct().dial("demo-0.demo-nodes:8400"), None);
    }

    #[test]
    fn malformed_maps_are_refused_with_the_argument_named() {
        for bad in [
            "demo-0:8400",
            "demo-0:8400=",
            "=127.0.0.1:1",
            "demo-0=127.0.0.1:1",
            "a:1=b:99999",
        ] {
            let error = parse_connect_to(&[bad.to_owned()]).expect_err(bad);
            assert!(error.to_string().contains(bad), "{bad}: {error}");
        }
        let twice = parse_connect_to(&["a:1=b:2".to_owned(), "a:1=c:3".to_owned()]);
        assert!(
            twice
                .expect_err("twice")
                .to_string()
                .contains("more than once")
        );
    }
}
