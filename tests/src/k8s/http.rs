//! A minimal blocking HTTP/1.1 client for the harness's own requests (readiness, namespaces).
//!
//! `ControlPlane::start` is synchronous — `shared()` initialises inside a `OnceLock` from any test
//! thread, inside or outside a runtime — so it cannot lean on kube's async client. One request
//! per connection, `Connection: close`, the body read to EOF: enough for these few calls.

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use rustls::RootCertStore;
use rustls_pki_types::ServerName;

use super::Result;
use super::pki::Pki;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// Speaks HTTPS to the API server as the admin client.
#[derive(Debug, Clone)]
pub(super) struct ApiProbe {
    addr: SocketAddr,
    tls: Arc<rustls::ClientConfig>,
}

impl ApiProbe {
    pub(super) fn new(port: u16, pki: &Pki) -> Result<Self> {
        let mut roots = RootCertStore::empty();
        roots.add(pki.ca_der.clone())?;
        // An explicit provider: the process-wide default may be unset (or another one) in tests.
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_client_auth_cert(vec![pki.admin_cert_der.clone()], pki.admin_key_der())?;
        Ok(Self {
            addr: SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
            tls: Arc::new(tls),
        })
    }

    /// Sends one request (a JSON body if given) and returns the status code and body.
    pub(super) fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
    ) -> io::Result<(u16, String)> {
        let tcp = connect(self.addr)?;
        let server_name = ServerName::IpAddress(Ipv4Addr::LOCALHOST.into());
        let conn = rustls::ClientConnection::new(self.tls.clone(), server_name)
            .map_err(io::Error::other)?;
        let mut tls = rustls::StreamOwned::new(conn, tcp);
        exchange(&mut tls, self.addr, method, path, body)
    }
}

/// A plain-HTTP GET (etcd's `/health`).
pub(super) fn plain_get(addr: SocketAddr, path: &str) -> io::Result<(u16, String)> {
    let mut tcp = connect(addr)?;
    exchange(&mut tcp, addr, "GET", path, None)
}

fn connect(addr: SocketAddr) -> io::Result<TcpStream> {
    let tcp = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT)?;
    tcp.set_read_timeout(Some(IO_TIMEOUT))?;
    tcp.set_write_timeout(Some(IO_TIMEOUT))?;
    Ok(tcp)
}

fn exchange(
    stream: &mut (impl Read + Write),
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> io::Result<(u16, String)> {
    let body = body.unwrap_or("");
    let content_type = if body.is_empty() {
        ""
    } else {
        "Content-Type: application/json\r\n"
    };
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: application/json, */*\r\n\
         {content_type}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    stream.flush()?;
    let mut raw = Vec::new();
    match stream.read_to_end(&mut raw) {
        Ok(_) => {}
        // A peer that closes without a TLS close_notify still sent a complete response.
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof && !raw.is_empty() => {}
        Err(e) => return Err(e),
    }
    parse_response(&raw)
}

fn parse_response(raw: &[u8]) -> io::Result<(u16, String)> {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .lines()
        .next()
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| {
            let start: String = head.chars().take(100).collect();
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("not an HTTP response: {start:?}"),
            )
        })?;
    let chunked = head.lines().skip(1).any(|line| {
        line.split_once(':').is_some_and(|(name, value)| {
            name.trim().eq_ignore_ascii_case("transfer-encoding")
                && value.trim().eq_ignore_ascii_case("chunked")
        })
    });
    let body = if chunked {
        decode_chunked(body)?
    } else {
        body.to_owned()
    };
    Ok((status, body))
}

/// The body of a `Transfer-Encoding: chunked` response (the API server chunks large objects such
/// as a Node): hex size line, that many bytes, CRLF, until the zero-size chunk.
fn decode_chunked(mut rest: &str) -> io::Result<String> {
    let bad =
        |what: &str| io::Error::new(io::ErrorKind::InvalidData, format!("chunked body: {what}"));
    let mut body = String::new();
    loop {
        let (size_line, after) = rest.split_once("\r\n").ok_or_else(|| bad("no size line"))?;
        let size_hex = size_line.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_hex, 16)
            .map_err(|_| bad(&format!("size {size_hex:?} is not hex")))?;
        if size == 0 {
            return Ok(body);
        }
        let chunk = after.get(..size).ok_or_else(|| bad("truncated chunk"))?;
        body.push_str(chunk);
        rest = after[size..]
            .strip_prefix("\r\n")
            .ok_or_else(|| bad("no CRLF after a chunk"))?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_status_and_body() {
        let raw = b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\n{}";
        assert_eq!(parse_response(raw).unwrap(), (201, "{}".to_owned()));
    }

    #[test]
    fn decodes_a_chunked_body() {
        let raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\n{\"a\r\n5\r\n\":1}\n\r\n0\r\n\r\n";
        assert_eq!(
            parse_response(raw).unwrap(),
            (200, "{\"a\":1}\n".to_owned())
        );
    }

    #[test]
    fn rejects_a_truncated_chunk() {
        let raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n10\r\nshort";
        assert!(parse_response(raw).is_err());
    }

    #[test]
    fn rejects_garbage() {
        assert!(parse_response(b"\x15\x03\x03").is_err());
    }
}
