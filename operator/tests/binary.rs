//! The `logcluster-operator` binary as the Helm chart runs it: configured by flags and
//! `LOGCLUSTER_OPERATOR_*` variables, against a real API server (the tests crate's harness),
//! serving its health and metrics endpoints, holding its Lease, and letting go of it on SIGTERM.

use std::fs::File;
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use logcluster_tests::http;
use logcluster_tests::k8s::{self, ControlPlane};

const BINARY: &str = env!("CARGO_BIN_EXE_logcluster-operator");
const CRD: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../crds/logcluster.yaml");
const MINIMAL: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/minimal.yaml");
/// Upper bound of every wait (the machine may be busy); not an assertion on speed.
const PATIENCE: Duration = Duration::from_secs(120);

/// Kills the child when a test fails half-way.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn poll<T>(what: &str, mut f: impl FnMut() -> Result<Option<T>>) -> Result<T> {
    let deadline = Instant::now() + PATIENCE;
    let mut last = String::new();
    loop {
        match f() {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => {}
            Err(e) => last = format!("{e:#}"),
        }
        if Instant::now() > deadline {
            bail!("gave up waiting for {what} (last error: {last})");
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn install_crd(cp: &ControlPlane) -> Result<()> {
    let crd = std::fs::read_to_string(CRD)?;
    let out = cp.kubectl_with_stdin(["apply", "--server-side", "-f", "-"], &crd)?;
    ensure!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    poll("the CRD to be established", || {
        let crd: serde_json::Value = serde_json::from_str(&cp.kubectl_ok([
            "get",
            "crd",
            "logclusters.logcluster.io",
            "-o",
            "json",
        ])?)?;
        let established = crd["status"]["conditions"].as_array().is_some_and(|c| {
            c.iter()
                .any(|c| c["type"] == "Established" && c["status"] == "True")
        });
        Ok(established.then_some(()))
    })
}

/// `GET path` on the operator's HTTP port: (status code, body).
fn http_get(port: u16, path: &str) -> Result<(u16, String)> {
    let addr = format!("127.0.0.1:{port}");
    http::get(&addr, path).with_context(|| format!("GET {path} on {addr}"))
}

fn lease_holder(cp: &ControlPlane, ns: &str) -> Result<String> {
    cp.kubectl_ok([
        "-n",
        ns,
        "get",
        "lease",
        "logcluster-operator",
        "-o",
        "jsonpath={.spec.holderIdentity}",
    ])
    .map_err(Into::into)
}

#[test]
fn the_binary_reconciles_with_its_flags_and_releases_its_lease_on_sigterm() -> Result<()> {
    let cp = k8s::shared()?;
    install_crd(cp)?;
    let ns = cp.create_namespace("op-binary")?;
    let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let log_path = cp.dir().join(format!("operator-{ns}.log"));
    let log = File::create(&log_path)?;
    let child = Command::new(BINARY)
        .env("KUBECONFIG", cp.kubeconfig_path())
        // The namespace through its environment variable, the rest as flags: both paths work.
        .env("LOGCLUSTER_OPERATOR_NAMESPACES", &ns)
        .env_remove("RUST_LOG")
        .args(["--leader-election", "--leader-election-namespace", &ns])
        .args([
            "--leader-election-identity",
            "op-test",
            "--log-format",
            "json",
        ])
        .args([
            "--http-addr",
            &format!("127.0.0.1:{port}"),
            "--admin-timeout",
            "2s",
        ])
        .args(["--node-address", &format!("{ns}/demo-0=127.0.0.1:9")])
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()?;
    let mut running = Running(child);

    poll("/readyz", || {
        Ok(http_get(port, "/readyz").ok().filter(|(c, _)| *c == 200))
    })?;
    assert_eq!(http_get(port, "/healthz")?.0, 200);
    let out = cp.kubectl(["-n", &ns, "apply", "--server-side", "-f", MINIMAL])?;
    ensure!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    poll("the StatefulSet", || {
        Ok(cp
            .kubectl(["-n", &ns, "get", "statefulset", "demo"])?
            .status
            .success()
            .then_some(()))
    })?;
    assert_eq!(lease_holder(cp, &ns)?, "op-test");
    let (code, metrics) = http_get(port, "/metrics")?;
    assert_eq!(code, 200);
    for series in [
        "logcluster_operator_leader 1",
        "logcluster_operator_reconciliations_total",
        "logcluster_operator_certificate_expiry_timestamp_seconds{",
    ] {
        ensure!(
            metrics.contains(series),
            "{series} missing from /metrics:\n{metrics}"
        );
    }

    // SIGTERM: graceful shutdown, then the Lease is handed back.
    let pid = libc::pid_t::try_from(running.0.id())?;
    // SAFETY: plain kill(2) on our own child's pid.
    ensure!(
        unsafe { libc::kill(pid, libc::SIGTERM) } == 0,
        "kill failed"
    );
    let status = poll("the operator to exit", || Ok(running.0.try_wait()?))?;
    let logs = std::fs::read_to_string(&log_path)?;
    ensure!(status.success(), "exit {status}; logs:\n{logs}");
    assert_eq!(lease_holder(cp, &ns)?, "", "the Lease was not released");
    // JSON logs: every line is an object.
    for line in logs.lines().filter(|l| !l.trim().is_empty()) {
        let parsed: serde_json::Value =
            serde_json::from_str(line).with_context(|| format!("not JSON: {line}"))?;
        ensure!(parsed.is_object(), "{line}");
    }
    Ok(())
}

#[test]
fn help_documents_every_environment_variable() -> Result<()> {
    let out = Command::new(BINARY).arg("--help").output()?;
    ensure!(out.status.success());
    let help = String::from_utf8(out.stdout)?;
    for var in [
        "LOGCLUSTER_OPERATOR_NAMESPACES",
        "LOGCLUSTER_OPERATOR_LEADER_ELECTION",
        "LOGCLUSTER_OPERATOR_LEADER_ELECTION_LEASE_NAME",
        "LOGCLUSTER_OPERATOR_LEADER_ELECTION_NAMESPACE",
        "LOGCLUSTER_OPERATOR_LEADER_ELECTION_IDENTITY",
        "LOGCLUSTER_OPERATOR_HTTP_ADDR",
        "LOGCLUSTER_OPERATOR_LOG_FORMAT",
        "LOGCLUSTER_OPERATOR_LOG_LEVEL",
        "LOGCLUSTER_OPERATOR_DEFAULT_NODE_IMAGE",
        "LOGCLUSTER_OPERATOR_CLUSTER_DOMAIN",
        "LOGCLUSTER_OPERATOR_RESYNC_INTERVAL",
        "LOGCLUSTER_OPERATOR_STEP_INTERVAL",
        "LOGCLUSTER_OPERATOR_ADMIN_TIMEOUT",
        "LOGCLUSTER_OPERATOR_NODE_ADDRESSES",
    ] {
        ensure!(help.contains(var), "{var} missing from --help");
    }
    Ok(())
}

#[test]
fn a_bad_configuration_exits_before_touching_kubernetes() -> Result<()> {
    let out = Command::new(BINARY)
        .args(["--leader-election", "--log-format", "plain"])
        .env_remove("POD_NAMESPACE")
        .env_remove("LOGCLUSTER_OPERATOR_LEADER_ELECTION_NAMESPACE")
        .env("KUBECONFIG", "/nonexistent")
        .output()?;
    ensure!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(stderr.contains("--leader-election-namespace"), "{stderr}");
    Ok(())
}
