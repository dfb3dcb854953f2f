//! The client against a grpc-go-like server: `ProduceStream` headers that come only with the
//! first reply, and past-the-end reads refused with codes other than our `OUT_OF_RANGE`.

use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use logcluster_api::{LogClient, LogEnd};
use tonic::Code;

use crate::fake_log::FakeLog;

/// Guards every exchange: the bugs these tests catch show up as a hang (a deadlock, or retries
/// until the client's retry deadline, which is set far longer than this).
const PATIENCE: Duration = Duration::from_secs(30);
const RETRY_DEADLINE: Duration = Duration::from_secs(300);

async fn within<T>(what: &str, work: impl Future<Output = T>) -> T {
    tokio::time::timeout(PATIENCE, work)
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish within {PATIENCE:?}"))
}

fn values(n: usize) -> Vec<Bytes> {
    (0..n).map(|i| Bytes::from(format!("record-{i}"))).collect()
}

async fn connect(fake: &FakeLog) -> LogClient {
    let mut config = fake.client_config();
    config.retry_deadline = RETRY_DEADLINE;
    within("connecting", LogClient::connect(config))
        .await
        .expect("connect to the fake")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn produce_stream_completes_when_headers_come_with_the_first_reply() {
    let fake = FakeLog::start(Code::NotFound, []).await;
    let client = connect(&fake).await;
    let mut stream = within("opening the stream", client.produce_stream(4))
        .await
        .expect("open ProduceStream");
    let mut offsets = Vec::new();
    within("producing over the stream", async {
        for (i, value) in values(10).into_iter().enumerate() {
            stream.send(value).await.expect("send a record");
            // Keep at most 4 unanswered, as a producer with a window does.
            if i >= 3 {
                offsets.push(stream.next().await.expect("a reply").expect("an offset"));
            }
        }
        stream.finish();
        while let Some(reply) = stream.next().await {
            offsets.push(reply.expect("an offset"));
        }
    })
    .await;
    assert_eq!(offsets, (0..10).collect::<Vec<u64>>());
    assert_eq!(fake.value(9), Some(Bytes::from("record-9")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consume_to_the_end_terminates_whatever_code_says_past_the_end() {
    for code in [
        Code::NotFound,
        Code::InvalidArgument,
        Code::OutOfRange,
        Code::Unknown,
    ] {
        let fake = FakeLog::start(code, values(3)).await;
        let client = connect(&fake).await;
        assert_eq!(
            within("probing the end", client.log_end())
                .await
                .expect("end"),
            LogEnd::Unadvertised,
            "{code:?}"
        );
        for from in [0, 2, 3, 7] {
            let stream = within("opening the read", client.consume_to_end(from))
                .await
                .expect("consume to the end");
            let read: Vec<Bytes> = within("reading to the end", stream.collect::<Vec<_>>())
                .await
                .into_iter()
                .map(|r| r.expect("a record").value)
                .collect();
            let expected: Vec<Bytes> = values(3)
                .into_iter()
                .skip(usize::try_from(from).expect("small"))
                .collect();
            assert_eq!(read, expected, "{code:?} from {from}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_that_is_not_about_the_offset_stays_an_error() {
    let fake = FakeLog::start(Code::PermissionDenied, values(1)).await;
    let client = connect(&fake).await;
    let error = within("probing the end", client.log_end())
        .await
        .expect_err("permission denied is no end of the log");
    assert!(
        matches!(error, logcluster_api::ClientError::PermissionDenied(_)),
        "{error}"
    );
}

/// `logctl` with the fake's address and client certificate (and none of the caller's
/// `LOGCLUSTER_*` settings).
pub fn logctl(fake: &FakeLog, args: &[&str]) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_logctl"));
    command.args(args);
    command
        .arg("--addr")
        .arg(fake.addr.to_string())
        .arg("--ca")
        .arg(&fake.ca)
        .arg("--cert")
        .arg(&fake.cert)
        .arg("--key")
        .arg(&fake.key);
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("LOGCLUSTER_") {
            command.env_remove(name);
        }
    }
    command.kill_on_drop(true);
    command
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logctl_bench_in_stream_mode_and_consume_work_against_the_fake() {
    let fake = FakeLog::start(Code::NotFound, values(2)).await;
    let bench = within(
        "logctl bench --mode stream",
        logctl(
            &fake,
            &[
                "bench",
                "--mode",
                "stream",
                "--count",
                "100",
                "--concurrency",
                "2",
                "--connections",
                "1",
                "--in-flight",
                "8",
                "--json",
            ],
        )
        .output(),
    )
    .await
    .expect("run logctl bench");
    let stdout = String::from_utf8_lossy(&bench.stdout);
    assert!(
        bench.status.success(),
        "logctl bench: {stdout}{}",
        String::from_utf8_lossy(&bench.stderr)
    );
    assert!(stdout.contains(r#""records":100"#), "{stdout}");
    assert_eq!(fake.value(101).as_deref(), Some(&b"x".repeat(100)[..]));

    let consume = within(
        "logctl consume",
        logctl(&fake, &["consume", "--from", "1", "--format", "value"]).output(),
    )
    .await
    .expect("run logctl consume");
    let stdout = String::from_utf8_lossy(&consume.stdout);
    assert!(
        consume.status.success(),
        "{}",
        String::from_utf8_lossy(&consume.stderr)
    );
    assert_eq!(stdout.lines().count(), 101, "{stdout}");
    assert_eq!(stdout.lines().next(), Some("record-1"));
}
