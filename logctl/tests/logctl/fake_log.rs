//! A minimal `log.v1` server that behaves like grpc-go servers do, not like ours:
//!
//! * `ProduceStream` sends its response headers only with its first reply: the handler waits
//!   for the first record before it returns (tonic sends the headers when it returns). A client
//!   that waits for the headers before sending deadlocks against it.
//! * a read past the end is refused with a code chosen by the test (`NOT_FOUND`,
//!   `INVALID_ARGUMENT`, …) and no `google.rpc.ErrorInfo`: the committed range is not
//!   advertised.
//! * `ConsumeStream` ignores `end_offset` (proglog has no such field) and follows the tail.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use logcluster_api::log_v1::log_server::{Log, LogServer};
use logcluster_api::log_v1::{
    ConsumeRequest, ConsumeResponse, GetServersRequest, GetServersResponse, ProduceBatchRequest,
    ProduceBatchResponse, ProduceRequest, ProduceResponse, Record, Server, ServerRole,
};
use logcluster_api::{ClientConfig, ClientTls};
use logcluster_certs::testsuite::{LOOPBACK, TestPki};
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::transport::{Certificate, Identity, Server as GrpcServer, ServerTlsConfig};
use tonic::{Code, Request, Response, Status, Streaming};

/// The fake's log: record values by offset.
#[derive(Clone, Default)]
struct Records(Arc<Mutex<Vec<Bytes>>>);

impl Records {
    fn append(&self, value: Bytes) -> u64 {
        let mut records = self.0.lock().expect("records lock");
        records.push(value);
        records.len() as u64 - 1
    }

    fn get(&self, offset: u64) -> Option<Bytes> {
        let records = self.0.lock().expect("records lock");
        usize::try_from(offset)
            .ok()
            .and_then(|i| records.get(i).cloned())
    }
}

fn record(offset: u64, value: Bytes) -> Record {
    Record {
        value,
        offset,
        ..Record::default()
    }
}

struct FakeLogService {
    records: Records,
    addr: String,
    past_the_end: Code,
}

impl FakeLogService {
    fn past_the_end(&self, offset: u64) -> Status {
        Status::new(self.past_the_end, format!("offset out of range: {offset}"))
    }
}

#[tonic::async_trait]
impl Log for FakeLogService {
    async fn produce(
        &self,
        request: Request<ProduceRequest>,
    ) -> Result<Response<ProduceResponse>, Status> {
        let value = request.into_inner().record.unwrap_or_default().value;
        Ok(Response::new(ProduceResponse {
            offset: self.records.append(value),
        }))
    }

    async fn consume(
        &self,
        request: Request<ConsumeRequest>,
    ) -> Result<Response<ConsumeResponse>, Status> {
        let offset = request.into_inner().offset;
        let value = self
            .records
            .get(offset)
            .ok_or_else(|| self.past_the_end(offset))?;
        Ok(Response::new(ConsumeResponse {
            record: Some(record(offset, value)),
        }))
    }

    type ConsumeStreamStream = BoxStream<'static, Result<ConsumeResponse, Status>>;

    async fn consume_stream(
        &self,
        request: Request<ConsumeRequest>,
    ) -> Result<Response<Self::ConsumeStreamStream>, Status> {
        let records = self.records.clone();
        let from = request.into_inner().offset;
        // What is there now, then nothing more, and the stream stays open (a tail).
        let stream = futures::stream::iter((from..).map_while(move |offset| {
            records.get(offset).map(|value| {
                Ok(ConsumeResponse {
                    record: Some(record(offset, value)),
                })
            })
        }))
        .chain(futures::stream::pending());
        Ok(Response::new(stream.boxed()))
    }

    type ProduceStreamStream = BoxStream<'static, Result<ProduceResponse, Status>>;

    async fn produce_stream(
        &self,
        request: Request<Streaming<ProduceRequest>>,
    ) -> Result<Response<Self::ProduceStreamStream>, Status> {
        let mut inbound = request.into_inner();
        // Late headers: nothing goes back before the first record has arrived.
        let Some(first) = inbound.message().await? else {
            return Ok(Response::new(futures::stream::empty().boxed()));
        };
        let records = self.records.clone();
        let (replies, responses) = mpsc::channel(64);
        let offset = records.append(first.record.unwrap_or_default().value);
        replies
            .send(Ok(ProduceResponse { offset }))
            .await
            .map_err(|_| Status::cancelled("the client went away"))?;
        tokio::spawn(async move {
            loop {
                let reply = match inbound.message().await {
                    Ok(Some(request)) => Ok(ProduceResponse {
                        offset: records.append(request.record.unwrap_or_default().value),
                    }),
                    Ok(None) => return,
                    Err(status) => Err(status),
                };
                if replies.send(reply).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(responses).boxed()))
    }

    async fn get_servers(
        &self,
        _: Request<GetServersRequest>,
    ) -> Result<Response<GetServersResponse>, Status> {
        Ok(Response::new(GetServersResponse {
            servers: vec![Server {
                id: "fake".into(),
                rpc_addr: self.addr.clone(),
                is_leader: true,
                role: ServerRole::Voter as i32,
                replicated_offset: 0,
            }],
        }))
    }

    async fn produce_batch(
        &self,
        request: Request<ProduceBatchRequest>,
    ) -> Result<Response<ProduceBatchResponse>, Status> {
        let offsets = request
            .into_inner()
            .records
            .into_iter()
            .map(|r| self.records.append(r.value))
            .collect();
        Ok(Response::new(ProduceBatchResponse { offsets }))
    }

    type WatchServersStream = BoxStream<'static, Result<GetServersResponse, Status>>;

    async fn watch_servers(
        &self,
        _: Request<GetServersRequest>,
    ) -> Result<Response<Self::WatchServersStream>, Status> {
        Err(Status::unimplemented("not in this fake"))
    }
}

/// A running fake and the client files that reach it. The server stops on drop.
pub struct FakeLog {
    pub addr: SocketAddr,
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    records: Records,
    _pki: TestPki,
    _stop: oneshot::Sender<()>,
}

impl FakeLog {
    /// Starts a fake holding `values` at offsets 0.., refusing reads past its end with
    /// `past_the_end`.
    pub async fn start(past_the_end: Code, values: impl IntoIterator<Item = Bytes>) -> Self {
        let pki = TestPki::new().expect("test PKI");
        let node = pki
            .node("node", "node", &[LOOPBACK], &[])
            .expect("node cert");
        let client = pki.client("client").expect("client cert");
        let tls = ServerTlsConfig::new()
            .identity(Identity::from_pem(
                &node.issued.cert_pem,
                &node.issued.key_pem,
            ))
            .client_ca_root(Certificate::from_pem(pki.ca().cert_pem()));
        let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .expect("bind a loopback port");
        let addr = listener.local_addr().expect("local addr");
        let records = Records::default();
        for value in values {
            records.append(value);
        }
        let service = FakeLogService {
            records: records.clone(),
            addr: addr.to_string(),
            past_the_end,
        };
        let (stop, stopped) = oneshot::channel::<()>();
        let server = GrpcServer::builder()
            .tls_config(tls)
            .expect("server TLS")
            .add_service(LogServer::new(service))
            .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async {
                let _ = stopped.await;
            });
        tokio::spawn(server);
        FakeLog {
            addr,
            ca: client.ca,
            cert: client.cert,
            key: client.key,
            records,
            _pki: pki,
            _stop: stop,
        }
    }

    /// Client settings for this fake, with a retry deadline long enough that a client that
    /// took a definite answer for unavailability would be seen waiting for it.
    pub fn client_config(&self) -> ClientConfig {
        let tls = ClientTls::from_files(&self.ca, &self.cert, &self.key).expect("client TLS");
        ClientConfig::new(vec![self.addr.to_string()], tls)
    }

    /// The value at `offset`, if the fake holds one.
    pub fn value(&self, offset: u64) -> Option<Bytes> {
        self.records.get(offset)
    }
}
