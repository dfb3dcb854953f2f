//! Tests of the auth module: real certificates written to real files, real rustls handshakes
//! over loopback TCP, real tonic calls.

mod authz;
mod fixtures;
mod identity;
mod tls;
