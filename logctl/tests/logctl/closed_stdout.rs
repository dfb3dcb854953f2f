//! `logctl … | head -1`: a reader that closes standard output ends the command quietly, with
//! status 0 — for every command that prints a stream.

use std::process::Stdio;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tonic::Code;

use crate::fake_log::FakeLog;
use crate::late_headers::logctl;

/// Far more than a pipe buffers (64 KiB), so logctl is still writing when the reader goes.
const RECORDS: usize = 400;
const RECORD_SIZE: usize = 1024;
const PATIENCE: Duration = Duration::from_secs(60);

/// Runs `logctl args`, reads one line of its output, closes the pipe and returns how logctl
/// ended and what it said on standard error.
async fn first_line_then_close(
    fake: &FakeLog,
    args: &[&str],
) -> (std::process::ExitStatus, String) {
    let mut child = logctl(fake, args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start logctl");
    let stdout = child.stdout.take().expect("stdout");
    let mut stderr = child.stderr.take().expect("stderr");
    let run = async {
        let mut lines = BufReader::new(stdout).lines();
        let first = lines
            .next_line()
            .await
            .expect("read")
            .expect("a first line");
        assert!(first.starts_with("0\t"), "{first}");
        drop(lines); // `head -1` exits
        let status = child.wait().await.expect("wait for logctl");
        let mut said = String::new();
        tokio::io::AsyncReadExt::read_to_string(&mut stderr, &mut said)
            .await
            .expect("read stderr");
        (status, said)
    };
    tokio::time::timeout(PATIENCE, run)
        .await
        .unwrap_or_else(|_| {
            panic!("logctl {args:?} did not end within {PATIENCE:?} of its reader closing")
        })
}

async fn fake() -> FakeLog {
    let value = Bytes::from(vec![b'v'; RECORD_SIZE]);
    FakeLog::start(Code::NotFound, std::iter::repeat_n(value, RECORDS)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logctl_consume_into_a_closed_pipe_exits_0_quietly() {
    let fake = fake().await;
    let (status, stderr) = first_line_then_close(&fake, &["consume", "--from", "0"]).await;
    assert!(status.success(), "{status}: {stderr}");
    assert_eq!(stderr, "", "nothing is said about the closed pipe");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logctl_consume_follow_into_a_closed_pipe_exits_0_quietly() {
    let fake = fake().await;
    let (status, stderr) =
        first_line_then_close(&fake, &["consume", "--from", "0", "--follow"]).await;
    assert!(status.success(), "{status}: {stderr}");
    assert_eq!(stderr, "", "nothing is said about the closed pipe");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logctl_produce_into_a_closed_pipe_exits_0_quietly() {
    let fake = FakeLog::start(Code::NotFound, []).await;
    let mut child = logctl(&fake, &["produce", "a", "b"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start logctl");
    // Closed before logctl prints its first offset.
    drop(child.stdout.take());
    let output = tokio::time::timeout(PATIENCE, child.wait_with_output())
        .await
        .expect("logctl produce ended")
        .expect("wait for logctl");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{}: {stderr}", output.status);
    assert_eq!(stderr, "");
    assert_eq!(
        fake.value(0),
        Some(Bytes::from("a")),
        "the first record was produced"
    );
}
