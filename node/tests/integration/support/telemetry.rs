//! Shared by the telemetry tests (`telemetry_rpc` here, and the `telemetry_otlp` binary): a
//! fake `log.v1.Log` service served over loopback (plaintext: TLS is tested with the API)
//! through [`RpcLayer`], a client that names its subject in a header, and a log writer the
//! tests read back.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use logcluster_api::log_v1::log_client::LogClient;
use logcluster_api::log_v1::log_server::{Log, LogServer};
use logcluster_api::log_v1::{
    ConsumeRequest, ConsumeResponse, GetServersRequest, GetServersResponse, ProduceBatchRequest,
    ProduceBatchResponse, ProduceRequest, ProduceResponse, Record,
};
use logcluster_node::config::LogFormat;
use logcluster_node::telemetry::{Metrics, RpcLayer, TracingConfig, rpc_fields};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, mpsc, oneshot, watch};
use tokio_stream::StreamExt as _;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Server};
use tonic::{Request, Response, Status, Streaming};
use tracing::Instrument as _;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

/// The header the test client names its subject in; the test server's subject function reads
/// it (the real one reads the verified client certificate).
pub const SUBJECT_HEADER: &str = "x-test-subject";

/// `ConsumeStream` from this offset: two records, then wait for [`TestServer::release`], then OK.
pub const STREAM_TWO_THEN_WAIT: u64 = 0;
/// `ConsumeStream` from this offset: one record, then DATA_LOSS in the trailers.
pub const STREAM_ONE_THEN_DATA_LOSS: u64 = 500;
/// `ConsumeStream` from this offset: one record, then nothing until the client goes away.
pub const STREAM_ONE_THEN_FOREVER: u64 = 1000;

/// A fake commit log: produces get increasing offsets; every offset below the next one exists.
struct FakeLog {
    next_offset: Arc<AtomicU64>,
    gate: Arc<Semaphore>,
}

fn record(offset: u64) -> Record {
    Record {
        value: format!("record {offset}").into_bytes().into(),
        offset,
        ..Record::default()
    }
}

impl FakeLog {
    fn append(&self) -> u64 {
        // A child span, so the OTLP test can see the handler's work under the RPC span.
        let span = tracing::info_span!("append");
        let _entered = span.enter();
        self.next_offset.fetch_add(1, Ordering::SeqCst)
    }
}

type ResponseStream<T> = ReceiverStream<Result<T, Status>>;

#[tonic::async_trait]
impl Log for FakeLog {
    async fn produce(
        &self,
        request: Request<ProduceRequest>,
    ) -> Result<Response<ProduceResponse>, Status> {
        let fields = rpc_fields(&request);
        let value = request.into_inner().record.unwrap_or_default().value;
        if value.is_empty() {
            return Err(Status::invalid_argument("empty record"));
        }
        // Emitted inside the RPC span: the JSON line carries the span's fields.
        tracing::info!("appending");
        let offset = self.append();
        fields.set_offset(offset);
        fields.add_count(1);
        Ok(Response::new(ProduceResponse { offset }))
    }

    async fn consume(
        &self,
        request: Request<ConsumeRequest>,
    ) -> Result<Response<ConsumeResponse>, Status> {
        let fields = rpc_fields(&request);
        let offset = request.into_inner().offset;
        fields.set_offset(offset);
        if offset >= self.next_offset.load(Ordering::SeqCst) {
            return Err(Status::out_of_range(format!(
                "offset {offset} is past the end"
            )));
        }
        fields.add_count(1);
        Ok(Response::new(ConsumeResponse {
            record: Some(record(offset)),
        }))
    }

    type ConsumeStreamStream = ResponseStream<ConsumeResponse>;

    async fn consume_stream(
        &self,
        request: Request<ConsumeRequest>,
    ) -> Result<Response<Self::ConsumeStreamStream>, Status> {
        let fields = rpc_fields(&request);
        let start = request.into_inner().offset;
        fields.set_offset(start);
        let (tx, rx) = mpsc::channel(4);
        let gate = Arc::clone(&self.gate);
        let send = move |offset: u64| {
            let tx = tx.clone();
            let fields = fields.clone();
            async move {
                let sent = tx
                    .send(Ok(ConsumeResponse {
                        record: Some(record(offset)),
                    }))
                    .await
                    .is_ok();
                if sent {
                    fields.set_offset(offset);
                    fields.add_count(1);
                }
                (sent, tx)
            }
        };
        let feed = async move {
            match start {
                STREAM_TWO_THEN_WAIT => {
                    send(start).await;
                    send(start + 1).await;
                    if let Ok(permit) = gate.acquire().await {
                        permit.forget();
                    }
                }
                STREAM_ONE_THEN_DATA_LOSS => {
                    let (_, tx) = send(start).await;
                    let _ = tx
                        .send(Err(Status::data_loss("segment checksum mismatch")))
                        .await;
                }
                _ => {
                    // Follows the tail: nothing more arrives, until the consumer goes away.
                    let (_, tx) = send(start).await;
                    tx.closed().await;
                }
            }
        };
        // NB: a spawned task does not inherit the span by itself.
        tokio::spawn(feed.in_current_span());
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    type ProduceStreamStream = ResponseStream<ProduceResponse>;

    async fn produce_stream(
        &self,
        request: Request<Streaming<ProduceRequest>>,
    ) -> Result<Response<Self::ProduceStreamStream>, Status> {
        let fields = rpc_fields(&request);
        let mut requests = request.into_inner();
        let (tx, rx) = mpsc::channel(4);
        let counter = Arc::clone(&self.next_offset);
        let feed = async move {
            while let Some(Ok(_request)) = requests.next().await {
                let offset = counter.fetch_add(1, Ordering::SeqCst);
                fields.set_offset(offset);
                fields.add_count(1);
                if tx.send(Ok(ProduceResponse { offset })).await.is_err() {
                    break;
                }
            }
        };
        tokio::spawn(feed.in_current_span());
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn get_servers(
        &self,
        _request: Request<GetServersRequest>,
    ) -> Result<Response<GetServersResponse>, Status> {
        Ok(Response::new(GetServersResponse::default()))
    }

    async fn produce_batch(
        &self,
        _request: Request<ProduceBatchRequest>,
    ) -> Result<Response<ProduceBatchResponse>, Status> {
        Err(Status::unimplemented("not in the fake"))
    }

    type WatchServersStream = ResponseStream<GetServersResponse>;

    async fn watch_servers(
        &self,
        _request: Request<GetServersRequest>,
    ) -> Result<Response<Self::WatchServersStream>, Status> {
        Err(Status::unimplemented("not in the fake"))
    }
}

/// The fake service behind [`RpcLayer`] on a loopback port, with its own metrics.
pub struct TestServer {
    pub addr: SocketAddr,
    pub metrics: Metrics,
    gate: Arc<Semaphore>,
    stop: Option<oneshot::Sender<()>>,
}

impl TestServer {
    /// Serves a fresh fake log whose offsets 0..`records` exist.
    pub async fn start(records: u64) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let metrics = Metrics::new(1);
        let gate = Arc::new(Semaphore::new(0));
        let log = FakeLog {
            next_offset: Arc::new(AtomicU64::new(records)),
            gate: Arc::clone(&gate),
        };
        let layer = RpcLayer::new(metrics.clone()).with_subject(|parts| {
            parts
                .headers
                .get(SUBJECT_HEADER)
                .and_then(|value| value.to_str().ok())
                .map(str::to_owned)
        });
        let (stop, stopped) = oneshot::channel::<()>();
        let server = Server::builder()
            .layer(layer)
            .add_service(LogServer::new(log))
            .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async {
                let _ = stopped.await;
            });
        tokio::spawn(async move {
            if let Err(error) = server.await {
                panic!("test server failed: {error}");
            }
        });
        Self {
            addr,
            metrics,
            gate,
            stop: Some(stop),
        }
    }

    /// Lets one waiting `STREAM_TWO_THEN_WAIT` stream finish.
    pub fn release(&self) {
        self.gate.add_permits(1);
    }

    /// A client whose calls carry `subject`.
    pub async fn client(&self, subject: &str) -> TestClient {
        let channel = Channel::from_shared(format!("http://{}", self.addr))
            .expect("uri")
            .connect()
            .await
            .expect("connect");
        LogClient::with_interceptor(
            channel,
            SubjectHeader(subject.parse().expect("ascii subject")),
        )
    }

    /// A plain channel to the server (for calling services it does not serve).
    pub async fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.addr))
            .expect("uri")
            .connect()
            .await
            .expect("connect")
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Adds [`SUBJECT_HEADER`] to every call.
#[derive(Clone)]
pub struct SubjectHeader(pub tonic::metadata::MetadataValue<tonic::metadata::Ascii>);

impl Interceptor for SubjectHeader {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        request
            .metadata_mut()
            .insert(SUBJECT_HEADER, self.0.clone());
        Ok(request)
    }
}

pub type TestClient = LogClient<InterceptedService<Channel, SubjectHeader>>;

/// A produce request with a non-empty value.
pub fn produce_request(value: &str) -> ProduceRequest {
    ProduceRequest {
        record: Some(Record {
            value: value.as_bytes().to_vec().into(),
            ..Record::default()
        }),
    }
}

/// A consume request for `offset` (whatever else the message grows stays at its default).
#[allow(clippy::needless_update)]
pub fn consume_request(offset: u64) -> ConsumeRequest {
    ConsumeRequest {
        offset,
        ..ConsumeRequest::default()
    }
}

/// Every line the process-wide subscriber wrote, parsed (the subscriber writes JSON).
pub struct Capture {
    lines: Mutex<Vec<serde_json::Value>>,
    partial: Mutex<Vec<u8>>,
    written: watch::Sender<usize>,
}

/// Installs the process-wide subscriber (LogCluster's JSON layer, filter `info`) writing into
/// the capture, once per test binary, and returns the capture.
pub fn capture() -> &'static Capture {
    static CAPTURE: OnceLock<&'static Capture> = OnceLock::new();
    CAPTURE.get_or_init(|| {
        let capture: &'static Capture = Box::leak(Box::new(Capture {
            lines: Mutex::new(Vec::new()),
            partial: Mutex::new(Vec::new()),
            written: watch::channel(0).0,
        }));
        let config = TracingConfig {
            format: LogFormat::Json,
            filter: "info".to_owned(),
            service_name: "telemetry-test".to_owned(),
            otlp_endpoint: None,
            ansi: false,
        };
        let (layer, _no_export) =
            logcluster_node::telemetry::tracing::layer(&config, CaptureWriter(capture))
                .expect("layers");
        tracing_subscriber::registry()
            .with(layer)
            .try_init()
            .expect("no other global subscriber in this test binary");
        capture
    })
}

impl Capture {
    /// The "rpc finished" lines of calls made by `subject`.
    pub fn rpc_lines(&self, subject: &str) -> Vec<serde_json::Value> {
        self.lines(|line| line["message"] == "rpc finished" && line["subject"] == subject)
    }

    /// Every line `keep` accepts.
    pub fn lines(&self, keep: impl Fn(&serde_json::Value) -> bool) -> Vec<serde_json::Value> {
        let lines = self.lines.lock().expect("capture lock");
        lines.iter().filter(|line| keep(line)).cloned().collect()
    }

    /// Waits until `subject` has `count` "rpc finished" lines, for calls that end on the
    /// server after the client has stopped waiting (a client that goes away).
    pub async fn wait_for_rpc_lines(&self, subject: &str, count: usize) -> Vec<serde_json::Value> {
        let mut written = self.written.subscribe();
        // Only a guard against hanging the suite: the line is expected within milliseconds.
        let wait = written.wait_for(|_| self.rpc_lines(subject).len() >= count);
        tokio::time::timeout(Duration::from_secs(60), wait)
            .await
            .unwrap_or_else(|_| panic!("no {count} rpc line(s) for {subject} after 60 s"))
            .expect("capture alive");
        self.rpc_lines(subject)
    }

    fn write(&self, bytes: &[u8]) {
        let mut partial = self.partial.lock().expect("capture lock");
        partial.extend_from_slice(bytes);
        let mut added = 0;
        while let Some(end) = partial.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = partial.drain(..=end).collect();
            let parsed = serde_json::from_slice(&line).unwrap_or_else(|error| {
                panic!(
                    "log line is not JSON ({error}): {}",
                    String::from_utf8_lossy(&line)
                )
            });
            self.lines.lock().expect("capture lock").push(parsed);
            added += 1;
        }
        drop(partial);
        if added > 0 {
            self.written.send_modify(|count| *count += added);
        }
    }
}

#[derive(Clone, Copy)]
struct CaptureWriter(&'static Capture);

impl std::io::Write for CaptureWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.write(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for CaptureWriter {
    type Writer = CaptureWriter;

    fn make_writer(&'a self) -> Self::Writer {
        *self
    }
}
