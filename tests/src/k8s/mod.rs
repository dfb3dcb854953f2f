//! A real Kubernetes control plane for tests: etcd and kube-apiserver on loopback.
//!
//! [`ControlPlane::start`] runs the binaries that `scripts/k8s-tools.sh` builds from the Go
//! modules (see [`tools`]), on free loopback ports, in a temporary directory holding generated
//! certificates ([`pki`]), etcd's data and both logs; it returns once `/readyz` answers and the
//! `default` namespace exists, and writes a kubeconfig for an admin (`system:masters`) client.
//!
//! There is no kubelet, scheduler or controller-manager: objects are stored and validated (CRDs,
//! CEL rules, subresources, RBAC, admission) but nothing acts on them — pods are never scheduled,
//! StatefulSet status stays empty unless a test patches it, owner references are not garbage
//! collected and deleted namespaces stay `Terminating`. The `ServiceAccount` admission plugin is
//! off because nothing creates the `default` service accounts it requires.
//!
//! Starting takes seconds; tests in one binary share one control plane through [`shared`], each
//! in its own namespace from [`ControlPlane::create_namespace`]:
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use logcluster_tests::k8s;
//! let cp = k8s::shared()?;
//! let ns = cp.create_namespace("scale")?;
//! let out = cp.kubectl_ok(["-n", &ns, "create", "configmap", "c", "--from-literal=a=b"])?;
//! let client = cp.kube_client().await?; // one per test: clients are tied to their runtime
//! # let _ = (out, client); Ok(()) }
//! ```
//!
//! Set `LOGCLUSTER_K8S_KEEP=1` to keep the directory (logs, certificates, kubeconfig) after the
//! control plane stops.

mod http;
pub mod node;
mod node_config;
pub mod pki;
pub mod pod_client;
pub(crate) mod process;
mod provisioner;
mod shared;
pub mod tools;

use std::ffi::OsStr;
use std::io::{self, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use tempfile::TempDir;

pub use pki::PkiFiles;
pub use process::ChildProcess;
pub use tools::Tool;

use http::ApiProbe;
use shared::SharedOnce;

/// What went wrong while starting or using a test control plane.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{tool} not found at {}: {hint}", path.display())]
    ToolMissing {
        tool: &'static str,
        path: PathBuf,
        hint: String,
    },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
    #[error("generating test certificates: {0}")]
    Certificate(#[from] rcgen::Error),
    #[error("setting up TLS for the readiness probe: {0}")]
    Tls(#[from] rustls::Error),
    #[error("{name} exited during start-up ({status}); last lines of {}:\n{tail}", log.display())]
    ExitedEarly {
        name: String,
        status: String,
        log: PathBuf,
        tail: String,
    },
    #[error(
        "{what} not ready after {timeout:?} (last answer: {last}); last lines of {}:\n{tail}",
        log.display()
    )]
    NotReady {
        what: String,
        timeout: Duration,
        last: String,
        log: PathBuf,
        tail: String,
    },
    #[error("reading the test kubeconfig: {0}")]
    Kubeconfig(#[from] kube::config::KubeconfigError),
    #[error("creating a kube client: {0}")]
    Kube(#[from] kube::Error),
    #[error("`{command}` failed ({status}):\n{stderr}")]
    CommandFailed {
        command: String,
        status: String,
        stderr: String,
    },
    #[error("API request {request} answered {status}: {body}")]
    Api {
        request: String,
        status: u16,
        body: String,
    },
    #[error("namespace prefix {0:?} must be 1-40 lowercase letters, digits or '-'")]
    InvalidPrefix(String),
    #[error("the shared control plane failed to start: {0}")]
    Shared(String),
}

impl Error {
    fn io(context: impl Into<String>, source: io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// How to start a control plane; [`Default`] is what [`ControlPlane::start`] uses.
#[derive(Debug, Clone)]
pub struct ControlPlaneOptions {
    /// Bound on the whole start-up (both processes, all retries). Generous: the machine may be
    /// busy compiling.
    pub start_timeout: Duration,
    /// Extra `kube-apiserver` flags, appended after the harness's own (a later flag wins).
    pub apiserver_args: Vec<String>,
    /// kube-controller-manager controllers to run (its `--controllers` names, such as
    /// `garbagecollector` or `namespace`). Empty, the default, runs no controller-manager.
    /// NB: `statefulset` would fight tests that patch StatefulSet status themselves, and pods it
    /// creates are never scheduled.
    pub controllers: Vec<String>,
}

impl Default for ControlPlaneOptions {
    fn default() -> Self {
        Self {
            start_timeout: Duration::from_secs(180),
            apiserver_args: Vec::new(),
            controllers: Vec::new(),
        }
    }
}

/// The service range given to the API server; its first address is the `kubernetes` Service.
pub const SERVICE_CLUSTER_IP_RANGE: &str = "10.96.0.0/24";
const KUBERNETES_SERVICE_IP: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 96, 0, 1));
const DIR_PREFIX: &str = "logcluster-k8s-";
/// A bound port can be taken by someone else between our probe and the server's bind.
const PORT_ATTEMPTS: u32 = 3;

/// Where a control plane's processes run.
#[derive(Debug, Clone)]
enum Placement {
    /// On the host, on free loopback ports.
    Host,
    /// Inside the network, mount and PID namespaces of process `holder` (a [`node::KubeNode`]),
    /// on well-known ports, serving on the node address `node_ip` too.
    Namespace { holder: u32, node_ip: Ipv4Addr },
}

impl Placement {
    /// A command that runs `program` here. `nsenter` forks the program inside the PID namespace
    /// and waits for it, so the returned process lives exactly as long as the program.
    fn command(&self, program: &Path) -> Command {
        match self {
            Placement::Host => Command::new(program),
            Placement::Namespace { holder, .. } => {
                let mut cmd = Command::new("nsenter");
                cmd.arg(format!("--target={holder}"))
                    .args(["--net", "--mount", "--pid", "--"])
                    .arg(program);
                cmd
            }
        }
    }

    /// A command that runs `program` in this placement's network only: the caller's file system
    /// and working directory stay as they are (kubectl and helm read files the test names).
    fn network_command(&self, program: &Path) -> Command {
        match self {
            Placement::Host => Command::new(program),
            Placement::Namespace { holder, .. } => {
                let mut cmd = Command::new("nsenter");
                cmd.arg(format!("--target={holder}"))
                    .args(["--net", "--"])
                    .arg(program);
                cmd
            }
        }
    }

    /// Runs `f` where it can reach this placement's loopback: here, or on a short-lived thread
    /// that joined the namespace's network (a thread's network namespace is its own, so the
    /// caller's is untouched).
    fn in_network<T: Send>(&self, f: impl FnOnce() -> io::Result<T> + Send) -> io::Result<T> {
        match self {
            Placement::Host => f(),
            Placement::Namespace { holder, .. } => node::in_network_of(*holder, f),
        }
    }
}

/// A running etcd + kube-apiserver pair; stops both and removes its directory when dropped.
#[derive(Debug)]
pub struct ControlPlane {
    root: PathBuf,
    dir: Mutex<Option<TempDir>>,
    /// etcd, the API server, then the controller-manager if any: stopped in reverse.
    processes: Mutex<Vec<ChildProcess>>,
    server: String,
    kubeconfig: PathBuf,
    pki: PkiFiles,
    probe: ApiProbe,
    namespaces: AtomicU32,
    placement: Placement,
}

impl ControlPlane {
    /// Starts a control plane with [`ControlPlaneOptions::default`].
    pub fn start() -> Result<Self> {
        Self::start_with(ControlPlaneOptions::default())
    }

    /// Starts etcd and kube-apiserver and waits until the API server is ready. Blocking: call it
    /// before entering an async runtime, from `spawn_blocking`, or accept that it blocks the
    /// current test's runtime for a few seconds.
    pub fn start_with(options: ControlPlaneOptions) -> Result<Self> {
        Self::start_placed(options, Placement::Host, &[])
    }

    /// Starts the control plane at `placement`, with `extra_ips` in the API server's serving
    /// certificate. For [`Placement::Namespace`] the calling thread must be in the namespace's
    /// network (the readiness probes connect to its loopback).
    fn start_placed(
        options: ControlPlaneOptions,
        placement: Placement,
        extra_ips: &[IpAddr],
    ) -> Result<Self> {
        let deadline = Instant::now() + options.start_timeout;
        let etcd = Tool::Etcd.path()?;
        let apiserver = Tool::KubeApiserver.path()?;
        let controller_manager = if options.controllers.is_empty() {
            None
        } else {
            Some(Tool::KubeControllerManager.path()?)
        };
        remove_stale_dirs();
        let dir = tempfile::Builder::new()
            .prefix(DIR_PREFIX)
            .tempdir()
            .map_err(|e| Error::io("creating the control plane directory", e))?;
        let root = dir.path().to_owned();
        std::fs::write(root.join("owner.pid"), std::process::id().to_string())
            .map_err(|e| Error::io(format!("writing {}", root.join("owner.pid").display()), e))?;
        let pki_dir = root.join("pki");
        std::fs::create_dir(&pki_dir).map_err(|e| Error::io("creating pki/", e))?;
        let ips: Vec<IpAddr> = std::iter::once(KUBERNETES_SERVICE_IP)
            .chain(extra_ips.iter().copied())
            .collect();
        let pki = pki::Pki::generate(&pki_dir, &ips)?;

        let mut attempt = 1;
        let (mut processes, port) = loop {
            match start_processes(
                &etcd, &apiserver, &root, &pki, &options, &placement, attempt, deadline,
            ) {
                Ok(started) => break started,
                Err(Error::ExitedEarly { tail, .. })
                    if attempt < PORT_ATTEMPTS && tail.contains("address already in use") =>
                {
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        };
        let server = format!("https://127.0.0.1:{port}");
        let kubeconfig = root.join("kubeconfig");
        write_kubeconfig(&kubeconfig, &server, &pki.files)?;
        let probe = ApiProbe::new(port, &pki)?;
        if let Some(binary) = controller_manager {
            let manager = start_controller_manager(
                &binary,
                &root,
                &pki,
                &kubeconfig,
                &options,
                &placement,
                deadline,
            )?;
            processes.push(manager);
        }
        Ok(Self {
            root,
            dir: Mutex::new(Some(dir)),
            processes: Mutex::new(processes),
            server,
            kubeconfig,
            pki: pki.files,
            probe,
            namespaces: AtomicU32::new(0),
            placement,
        })
    }

    /// The API server's URL (`https://127.0.0.1:<port>`).
    pub fn server_url(&self) -> &str {
        &self.server
    }

    /// A kubeconfig for the admin client (certificate files referenced by path).
    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig
    }

    /// The certificate and key files: the CA the API server trusts, its serving certificate, the
    /// admin client certificate and the service-account signing key.
    pub fn pki(&self) -> &PkiFiles {
        &self.pki
    }

    /// Process ids of etcd, the API server and the controller-manager if any (empty once
    /// stopped).
    pub fn pids(&self) -> Vec<u32> {
        let processes = self.processes.lock().unwrap_or_else(|e| e.into_inner());
        processes.iter().map(ChildProcess::pid).collect()
    }

    /// The control plane's directory (logs: `etcd-<n>.log`, `kube-apiserver-<n>.log`).
    pub fn dir(&self) -> &Path {
        &self.root
    }

    /// A new admin client. Build one per test (per async runtime): a `kube::Client` drives its
    /// connections from a task on the runtime that created it and fails once that runtime ends.
    pub async fn kube_client(&self) -> Result<kube::Client> {
        let kubeconfig = kube::config::Kubeconfig::read_from(&self.kubeconfig)?;
        let config = kube::Config::from_custom_kubeconfig(
            kubeconfig,
            &kube::config::KubeConfigOptions::default(),
        )
        .await?;
        Ok(kube::Client::try_from(config)?)
    }

    /// Creates a namespace named `<prefix>-<n>`, unique within this control plane, and returns
    /// its name. Blocking (a single request), so it also serves non-async tests.
    pub fn create_namespace(&self, prefix: &str) -> Result<String> {
        let valid = !prefix.is_empty()
            && prefix.len() <= 40
            && prefix
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !prefix.starts_with('-');
        if !valid {
            return Err(Error::InvalidPrefix(prefix.to_owned()));
        }
        let name = format!(
            "{prefix}-{}",
            self.namespaces.fetch_add(1, Ordering::Relaxed)
        );
        let body = serde_json::json!({
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": { "name": name, "labels": { "logcluster.io/test-prefix": prefix } },
        })
        .to_string();
        let request = format!("POST /api/v1/namespaces ({name})");
        let (status, answer) = self
            .placement
            .in_network(|| {
                self.probe
                    .request("POST", "/api/v1/namespaces", Some(&body))
            })
            .map_err(|e| Error::io(&request, e))?;
        if status != 201 {
            return Err(Error::Api {
                request,
                status,
                body: answer,
            });
        }
        Ok(name)
    }

    /// Runs kubectl (`LOGCLUSTER_KUBECTL`, `/usr/bin/kubectl` or a built one) against this
    /// control plane.
    pub fn kubectl<I, S>(&self, args: I) -> Result<Output>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.run(self.kubectl_command(args)?, None)
    }

    /// Runs kubectl with `stdin` as its standard input (for `apply -f -`).
    pub fn kubectl_with_stdin<I, S>(&self, args: I, stdin: &str) -> Result<Output>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.run(self.kubectl_command(args)?, Some(stdin))
    }

    /// [`Self::kubectl_with_stdin`] that returns standard output, or an error carrying standard
    /// error when kubectl fails.
    pub fn kubectl_with_stdin_ok<I, S>(&self, args: I, stdin: &str) -> Result<String>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let cmd = self.kubectl_command(args)?;
        let described = describe(&cmd);
        success(described, self.run(cmd, Some(stdin))?)
    }

    /// Runs kubectl and returns its standard output, or an error carrying its standard error.
    pub fn kubectl_ok<I, S>(&self, args: I) -> Result<String>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let cmd = self.kubectl_command(args)?;
        let described = describe(&cmd);
        success(described, self.run(cmd, None)?)
    }

    /// Runs the cached helm against this control plane, with helm's cache, config and data
    /// directories inside the control plane's directory (nothing touches `$HOME`).
    pub fn helm<I, S>(&self, args: I) -> Result<Output>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.run(self.helm_command(args)?, None)
    }

    /// Runs helm and returns its standard output, or an error carrying its standard error.
    pub fn helm_ok<I, S>(&self, args: I) -> Result<String>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let cmd = self.helm_command(args)?;
        let described = describe(&cmd);
        success(described, self.run(cmd, None)?)
    }

    /// A kubectl command with `KUBECONFIG` and a private discovery cache set, for callers that
    /// need more control (environment, current directory).
    pub fn kubectl_command<I, S>(&self, args: I) -> Result<Command>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = self.placement.network_command(&Tool::Kubectl.path()?);
        cmd.args(args)
            .env("KUBECONFIG", &self.kubeconfig)
            // Discovery is cached per host:port; a fresh cache per control plane can never serve
            // another run's resource list.
            .env("KUBECACHEDIR", self.root.join("kubectl-cache"));
        Ok(cmd)
    }

    /// A helm command with `KUBECONFIG` and private helm directories set.
    pub fn helm_command<I, S>(&self, args: I) -> Result<Command>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = self.placement.network_command(&Tool::Helm.path()?);
        let helm_home = self.root.join("helm");
        cmd.args(args)
            .env("KUBECONFIG", &self.kubeconfig)
            .env("HELM_CACHE_HOME", helm_home.join("cache"))
            .env("HELM_CONFIG_HOME", helm_home.join("config"))
            .env("HELM_DATA_HOME", helm_home.join("data"));
        Ok(cmd)
    }

    fn run(&self, mut cmd: Command, stdin: Option<&str>) -> Result<Output> {
        let described = describe(&cmd);
        if stdin.is_some() {
            cmd.stdin(Stdio::piped());
        } else {
            cmd.stdin(Stdio::null());
        }
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| Error::io(&described, e))?;
        if let Some(input) = stdin {
            let mut pipe = child.stdin.take().expect("stdin is piped");
            // A writer thread: a large input could otherwise fill the pipe while the child
            // blocks writing a full stdout pipe that nobody reads yet.
            let input = input.to_owned();
            std::thread::spawn(move || {
                let _ = pipe.write_all(input.as_bytes());
            });
        }
        child
            .wait_with_output()
            .map_err(|e| Error::io(&described, e))
    }

    /// Stops the controller-manager if any, the API server, then etcd, and removes the directory (unless
    /// `LOGCLUSTER_K8S_KEEP` is set). Idempotent; `Drop` calls it.
    pub fn stop(&self) {
        let mut processes = self.processes.lock().unwrap_or_else(|e| e.into_inner());
        while let Some(mut p) = processes.pop() {
            p.stop();
        }
        let dir = self.dir.lock().unwrap_or_else(|e| e.into_inner()).take();
        // Dropping the TempDir removes it, unless asked to keep it for a post-mortem.
        if let Some(dir) = dir
            && std::env::var_os("LOGCLUSTER_K8S_KEEP").is_some()
        {
            eprintln!("k8s harness: kept {}", dir.keep().display());
        }
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        self.stop();
    }
}

static SHARED: SharedOnce<ControlPlane> = SharedOnce::new();

/// One control plane for the whole test binary, started on first use and stopped when the
/// process exits.
pub fn shared() -> Result<&'static ControlPlane> {
    SHARED.get_or_start(ControlPlane::start, stop_shared)
}

extern "C" fn stop_shared() {
    SHARED.stop(ControlPlane::stop);
}

#[allow(clippy::too_many_arguments)]
fn start_processes(
    etcd: &Path,
    apiserver: &Path,
    root: &Path,
    pki: &pki::Pki,
    options: &ControlPlaneOptions,
    placement: &Placement,
    attempt: u32,
    deadline: Instant,
) -> Result<(Vec<ChildProcess>, u16)> {
    let (etcd_client, etcd_peer, secure) = match placement {
        // Hold all three ports until just before the servers bind them, so they differ.
        Placement::Host => {
            let listeners = (0..3)
                .map(|_| TcpListener::bind((Ipv4Addr::LOCALHOST, 0)))
                .collect::<io::Result<Vec<_>>>()
                .map_err(|e| Error::io("finding free loopback ports", e))?;
            let ports = listeners
                .iter()
                .map(|l| l.local_addr().map(|a| a.port()))
                .collect::<io::Result<Vec<_>>>()
                .map_err(|e| Error::io("finding free loopback ports", e))?;
            (ports[0], ports[1], ports[2])
        }
        // A network namespace of our own: the well-known ports are free.
        Placement::Namespace { .. } => (2379, 2380, node::API_SERVER_PORT),
    };

    let mut processes = Vec::new();
    let etcd_data = root.join(format!("etcd-data-{attempt}"));
    let mut cmd = placement.command(etcd);
    cmd.arg("--name=logcluster-test")
        .arg(format!("--data-dir={}", etcd_data.display()))
        .arg(format!(
            "--listen-client-urls=http://127.0.0.1:{etcd_client}"
        ))
        .arg(format!("--listen-peer-urls=http://127.0.0.1:{etcd_peer}"))
        // The data is thrown away with the directory; fsync only slows tests down.
        .arg("--unsafe-no-fsync");
    let log = root.join(format!("etcd-{attempt}.log"));
    processes.push(ChildProcess::spawn("etcd", cmd, &log)?);
    let etcd_addr = SocketAddr::from((Ipv4Addr::LOCALHOST, etcd_client));
    wait_until(&mut processes, deadline, "etcd /health", || {
        let (status, body) = http::plain_get(etcd_addr, "/health")?;
        let healthy = status == 200 && body.contains(r#""health":"true""#);
        Ok((healthy, format!("{status} {body}")))
    })?;

    let f = &pki.files;
    let file_arg = |flag: &str, path: &Path| format!("--{flag}={}", path.display());
    let mut cmd = placement.command(apiserver);
    cmd.arg(format!("--etcd-servers=http://127.0.0.1:{etcd_client}"))
        .arg(format!("--secure-port={secure}"))
        .arg(file_arg("cert-dir", &root.join("apiserver-certs")))
        .arg(file_arg("tls-cert-file", &f.serving_cert))
        .arg(file_arg("tls-private-key-file", &f.serving_key))
        .arg(file_arg("client-ca-file", &f.ca_cert))
        .arg(file_arg("service-account-key-file", &f.service_account_pub))
        .arg(file_arg(
            "service-account-signing-key-file",
            &f.service_account_key,
        ))
        .arg("--service-account-issuer=https://kubernetes.default.svc.cluster.local")
        .arg(format!(
            "--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}"
        ))
        .arg("--allow-privileged=true");
    match placement {
        Placement::Host => {
            cmd.arg("--bind-address=127.0.0.1")
                .arg("--advertise-address=127.0.0.1")
                .arg("--authorization-mode=RBAC")
                // Nothing creates the per-namespace `default` ServiceAccount without a
                // controller-manager.
                .arg("--disable-admission-plugins=ServiceAccount")
                // The endpoint reconciler would publish 127.0.0.1 for the `kubernetes` Service,
                // which endpoint validation rejects (loopback) — endless log noise and retries.
                .arg("--endpoint-reconciler-type=none");
        }
        Placement::Namespace { node_ip, .. } => {
            // Pods reach the API server on the node's address, directly or through the
            // `kubernetes` Service whose endpoint is that address; the kubelet is authorized as
            // a node.
            cmd.arg("--bind-address=0.0.0.0")
                .arg(format!("--advertise-address={node_ip}"))
                .arg("--authorization-mode=Node,RBAC")
                // Logs, exec and port-forward reach the kubelet as the admin.
                .arg(file_arg("kubelet-client-certificate", &f.admin_cert))
                .arg(file_arg("kubelet-client-key", &f.admin_key));
        }
    }
    cmd
        // Priority and fairness bootstraps dozens of objects and queues requests; tests gain
        // nothing from it and start faster without.
        .arg("--enable-priority-and-fairness=false")
        .arg("--profiling=false")
        .args(&options.apiserver_args);
    let log = root.join(format!("kube-apiserver-{attempt}.log"));
    processes.push(ChildProcess::spawn("kube-apiserver", cmd, &log)?);
    let probe = ApiProbe::new(secure, pki)?;
    for path in ["/readyz", "/api/v1/namespaces/default"] {
        let what = format!("kube-apiserver {path}");
        wait_until(&mut processes, deadline, &what, || {
            let (status, body) = probe.request("GET", path, None)?;
            let short: String = body.chars().take(300).collect();
            Ok((status == 200, format!("{status} {short}")))
        })?;
    }
    Ok((processes, secure))
}

/// Starts kube-controller-manager with `options.controllers` and waits for its `/healthz`.
fn start_controller_manager(
    binary: &Path,
    root: &Path,
    pki: &pki::Pki,
    kubeconfig: &Path,
    options: &ControlPlaneOptions,
    placement: &Placement,
    deadline: Instant,
) -> Result<ChildProcess> {
    let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map_err(|e| Error::io("finding a free loopback port", e))?
        .port();
    let f = &pki.files;
    let file_arg = |flag: &str, path: &Path| format!("--{flag}={}", path.display());
    let mut cmd = placement.command(binary);
    cmd.arg(file_arg("kubeconfig", kubeconfig))
        .arg(format!("--controllers={}", options.controllers.join(",")))
        .arg("--leader-elect=false")
        .arg("--bind-address=127.0.0.1")
        .arg(format!("--secure-port={port}"))
        // Serving with the API server's certificate (valid for 127.0.0.1) lets the harness's
        // probe, which trusts only the test CA, check /healthz.
        .arg(file_arg("tls-cert-file", &f.serving_cert))
        .arg(file_arg("tls-private-key-file", &f.serving_key))
        .arg(file_arg("root-ca-file", &f.ca_cert))
        .arg(file_arg(
            "service-account-private-key-file",
            &f.service_account_key,
        ))
        .arg("--use-service-account-credentials=false")
        .arg("--profiling=false");
    let log = root.join("kube-controller-manager.log");
    let mut processes = vec![ChildProcess::spawn("kube-controller-manager", cmd, &log)?];
    let probe = ApiProbe::new(port, pki)?;
    wait_until(
        &mut processes,
        deadline,
        "kube-controller-manager /healthz",
        || {
            let (status, body) = probe.request("GET", "/healthz", None)?;
            let short: String = body.chars().take(300).collect();
            Ok((status == 200, format!("{status} {short}")))
        },
    )?;
    Ok(processes.pop().expect("one process"))
}

/// Polls `check` until it reports ready, a process exits, or `deadline` passes. `check` returns
/// (ready, a description of the answer for the timeout error).
fn wait_until(
    processes: &mut [ChildProcess],
    deadline: Instant,
    what: &str,
    mut check: impl FnMut() -> io::Result<(bool, String)>,
) -> Result<()> {
    let started = Instant::now();
    let mut last;
    loop {
        for p in processes.iter_mut() {
            if let Some(status) = p.exited() {
                return Err(Error::ExitedEarly {
                    name: p.name().to_owned(),
                    status: status.to_string(),
                    log: p.log_path().to_owned(),
                    tail: p.log_tail(30),
                });
            }
        }
        match check() {
            Ok((true, _)) => return Ok(()),
            Ok((false, answer)) => last = answer,
            Err(e) => last = e.to_string(),
        }
        if Instant::now() >= deadline {
            let newest = processes.last().expect("waiting on a started process");
            return Err(Error::NotReady {
                what: what.to_owned(),
                timeout: started.elapsed(),
                last,
                log: newest.log_path().to_owned(),
                tail: newest.log_tail(30),
            });
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn write_kubeconfig(path: &Path, server: &str, pki: &PkiFiles) -> Result<()> {
    // Paths are written as JSON strings, which YAML reads verbatim whatever they contain.
    let q = |p: &Path| serde_json::Value::from(p.display().to_string()).to_string();
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: logcluster-test\n  cluster:\n    \
         server: {server}\n    certificate-authority: {ca}\nusers:\n- name: admin\n  user:\n    \
         client-certificate: {cert}\n    client-key: {key}\ncontexts:\n- name: logcluster-test\n  \
         context:\n    cluster: logcluster-test\n    user: admin\n    namespace: default\n\
         current-context: logcluster-test\n",
        ca = q(&pki.ca_cert),
        cert = q(&pki.admin_cert),
        key = q(&pki.admin_key),
    );
    std::fs::write(path, text).map_err(|e| Error::io(format!("writing {}", path.display()), e))
}

/// Removes directories of control planes whose test process is gone (killed before it could
/// clean up). Best effort: anything unexpected is left alone.
fn remove_stale_dirs() {
    remove_stale_dirs_in(&std::env::temp_dir(), DIR_PREFIX);
}

/// Removes the `prefix*` directories in `parent` whose `owner.pid` names a process that is gone.
fn remove_stale_dirs_in(parent: &Path, prefix: &str) {
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    for entry in entries.flatten() {
        if !entry.file_name().to_string_lossy().starts_with(prefix) {
            continue;
        }
        let Ok(pid) = std::fs::read_to_string(entry.path().join("owner.pid")) else {
            continue;
        };
        let Ok(pid) = pid.trim().parse::<u32>() else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

fn describe(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

fn success(command: String, output: Output) -> Result<String> {
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(Error::CommandFailed {
            command,
            status: output.status.to_string(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        })
    }
}
