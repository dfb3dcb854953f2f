//! A one-node Kubernetes that runs real pods, inside namespaces the harness creates.
//!
//! [`KubeNode::start`] makes a holder process in new network, mount and PID namespaces and runs
//! everything inside them: etcd, kube-apiserver, kube-controller-manager, kube-scheduler,
//! containerd (runc, the CNI bridge), the kubelet, kube-proxy (iptables) and CoreDNS. The node's
//! address, the pod bridge, every pod and Service address and every iptables rule exist only in
//! that network namespace; `/run` and `/var/lib` are the mount namespace's own tmpfs. When the
//! holder — PID 1 of the PID namespace — dies, the kernel kills every process of the node
//! (containers included) and the namespaces go with them: nothing touches the host's network
//! and nothing outlives the test process.
//!
//! The host only sees: the node's directory under `/var/tmp` (logs, certificates, volumes; kept
//! with `LOGCLUSTER_K8S_KEEP=1`), one cgroup tree per controller named [`CGROUP_NAME`] (removed
//! at stop), and a machine-wide lock — one kubelet per machine.
//!
//! The test process reaches the node through its network namespace: blocking helpers
//! ([`ControlPlane::kubectl`], [`ControlPlane::helm`], `create_namespace`) enter it on their own;
//! async code runs in [`KubeNode::block_on`], whose runtime threads are in it.
//!
//! Images: nothing can be pulled here. The node imports a locally built `pause` image and, with
//! [`KubeNodeOptions::project_images`], LogCluster's own images built by `images/build.sh` under
//! their release names (`ghcr.io/logcluster/…:<version>`), so the README's manifests and the
//! chart's defaults run verbatim.
//!
//! Volumes: a default StorageClass [`STORAGE_CLASS`] whose claims a small provisioner thread of
//! the harness binds to `local` PersistentVolumes (directories under the node's directory), so
//! `fsGroup` and the PVC life cycle behave as on a real cluster.

use std::ffi::OsStr;
use std::fs::File;
use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::node_config::{self, NodePaths};
use super::shared::SharedOnce;
use super::{
    ChildProcess, ControlPlane, ControlPlaneOptions, Error, Placement, Result, Tool, describe,
    success, wait_until,
};

/// The API server's port on the node (well known: the namespace is ours).
pub const API_SERVER_PORT: u16 = 6443;
/// The node's name and address. The address lives on a veth pair inside the namespace; pods
/// reach the API server and CoreDNS on it.
pub const NODE_NAME: &str = "lc-node";
pub const NODE_IP: Ipv4Addr = Ipv4Addr::new(10, 200, 0, 1);
const NODE_PREFIX_LEN: u8 = 24;
/// Pod addresses (the CNI bridge's range).
pub const POD_SUBNET: &str = "10.244.0.0/24";
/// The default StorageClass, served by the harness's provisioner.
pub const STORAGE_CLASS: &str = "logcluster-test-local";
const PROVISIONER: &str = "logcluster.io/test-local";
/// The sandbox image, built locally from `tests/tools/pause`.
pub const PAUSE_IMAGE: &str = "localhost/logcluster/pause:v1";
/// The cgroup (in every v1 hierarchy) that holds all pods.
pub const CGROUP_NAME: &str = "logcluster-k8s";
const CGROUP_CONTROLLERS: [&str; 9] = [
    "blkio", "cpu", "cpuacct", "cpuset", "devices", "freezer", "memory", "pids", "systemd",
];
/// One kubelet per machine: it writes outside its root directory and owns the cgroup tree.
const MACHINE_LOCK: &str = "/var/tmp/logcluster-kubenode.lock";
const DIR_PREFIX: &str = "logcluster-kubenode-";
const COREDNS_READY_PORT: u16 = 8181;
const KUBELET_HEALTHZ_PORT: u16 = 10248;
const KUBE_PROXY_HEALTHZ_PORT: u16 = 10256;
/// How often the provisioner looks for claims to bind and volumes to delete.
const PROVISION_INTERVAL: Duration = Duration::from_millis(500);

/// How to start a node.
#[derive(Debug, Clone)]
pub struct KubeNodeOptions {
    /// Bound on the whole start-up, image builds excluded from nothing: generous, the machine
    /// may be compiling.
    pub start_timeout: Duration,
    /// Build LogCluster's images (`images/build.sh images`, dev profile) and import them.
    pub project_images: bool,
}

impl Default for KubeNodeOptions {
    fn default() -> Self {
        Self {
            start_timeout: Duration::from_secs(900),
            project_images: true,
        }
    }
}

/// A running one-node cluster; stops everything when dropped.
#[derive(Debug)]
pub struct KubeNode {
    paths: NodePaths,
    dir: Mutex<Option<TempDir>>,
    control_plane: ControlPlane,
    /// The namespace holder (`unshare`, whose child is the namespaces' PID 1).
    holder: Mutex<Option<ChildProcess>>,
    /// PID (on the host) of the process whose namespaces are the node's.
    ns_pid: u32,
    /// containerd, the kubelet, kube-scheduler, kube-proxy, CoreDNS: stopped in reverse.
    processes: Mutex<Vec<ChildProcess>>,
    provisioner: Mutex<Option<Provisioner>>,
    _machine_lock: File,
}

#[derive(Debug)]
struct Provisioner {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<()>,
}

impl KubeNode {
    /// Starts a node with [`KubeNodeOptions::default`] (project images included).
    pub fn start() -> Result<Self> {
        Self::start_with(KubeNodeOptions::default())
    }

    /// Starts the node and returns once it is `Ready`, CoreDNS and kube-proxy serve, the default
    /// ServiceAccount exists and the images are imported. Blocking; needs root.
    pub fn start_with(options: KubeNodeOptions) -> Result<Self> {
        let deadline = Instant::now() + options.start_timeout;
        let lock = lock_machine()?;
        super::remove_stale_dirs_in(Path::new("/var/tmp"), DIR_PREFIX);
        remove_cgroups().map_err(|e| {
            Error::io(
                format!("removing the cgroups {CGROUP_NAME} a previous node left behind"),
                e,
            )
        })?;
        let dir = tempfile::Builder::new()
            .prefix(DIR_PREFIX)
            .tempdir_in("/var/tmp")
            .map_err(|e| Error::io("creating the node directory", e))?;
        let paths = NodePaths {
            root: dir.path().to_owned(),
        };
        write(
            &paths.root.join("owner.pid"),
            &std::process::id().to_string(),
        )?;
        for sub in [
            paths.kubelet_dir(),
            paths.log_dir(),
            paths.cni_conf_dir(),
            paths.ipam_dir(),
            paths.volume_plugin_dir(),
            paths.volumes_dir(),
        ] {
            std::fs::create_dir_all(&sub)
                .map_err(|e| Error::io(format!("creating {}", sub.display()), e))?;
        }

        let (holder, ns_pid) = start_holder(&paths, deadline)?;
        prepare_namespaces(&paths, ns_pid)?;
        create_cgroups()
            .map_err(|e| Error::io(format!("creating the cgroups {CGROUP_NAME}"), e))?;

        let placement = Placement::Namespace {
            holder: ns_pid,
            node_ip: NODE_IP,
        };
        let cp_options = ControlPlaneOptions {
            start_timeout: deadline.saturating_duration_since(Instant::now()),
            apiserver_args: vec!["--kubelet-preferred-address-types=InternalIP".to_owned()],
            // Every controller a cluster runs, except node IPAM: the pod range is the bridge's.
            controllers: vec!["*".to_owned(), "-nodeipam".to_owned()],
        };
        let control_plane = in_network_of(ns_pid, || {
            ControlPlane::start_placed(cp_options, placement.clone(), &[IpAddr::V4(NODE_IP)])
        })?;

        let node = Self {
            paths,
            dir: Mutex::new(Some(dir)),
            control_plane,
            holder: Mutex::new(Some(holder)),
            ns_pid,
            processes: Mutex::new(Vec::new()),
            provisioner: Mutex::new(None),
            _machine_lock: lock,
        };
        // From here on, a failure drops `node`, which stops whatever did start.
        node.start_runtime(deadline)?;
        node.import_image_archive(&pause_image_archive(&node.paths)?)?;
        if options.project_images {
            node.import_project_images(deadline)?;
        }
        in_network_of(ns_pid, || node.start_components(deadline))?;
        node.start_provisioner()?;
        Ok(node)
    }

    /// The node's API server, with kubectl and helm that reach it from any thread.
    pub fn control_plane(&self) -> &ControlPlane {
        &self.control_plane
    }

    /// The node's directory: component logs (`<component>.log`), `log/pods/` (container logs),
    /// volumes, configuration.
    pub fn dir(&self) -> &Path {
        &self.paths.root
    }

    /// Runs `f` on a thread in the node's network (where pod and Service addresses route).
    pub fn in_network<T: Send>(&self, f: impl FnOnce() -> io::Result<T> + Send) -> io::Result<T> {
        in_network_of(self.ns_pid, f)
    }

    /// A multi-threaded runtime whose threads are all in the node's network, for work that runs
    /// in the background while the test drives the cluster (a produce workload during scaling).
    /// Only what it [`NodeRuntime::spawn`]s runs in the node's network.
    pub fn runtime(&self) -> io::Result<NodeRuntime> {
        let ns_pid = self.ns_pid;
        let runtime = in_network_of(ns_pid, || runtime_in_network_of(ns_pid))?;
        Ok(NodeRuntime { runtime })
    }

    /// Runs `future` to completion on a new multi-threaded runtime whose threads are all in the
    /// node's network: kube clients, gRPC clients to pods and Services work from it.
    pub fn block_on<F>(&self, future: F) -> F::Output
    where
        F: Future + Send,
        F::Output: Send,
    {
        let ns_pid = self.ns_pid;
        std::thread::scope(|scope| {
            let thread = scope.spawn(move || {
                enter_network_of(ns_pid).expect("joining the node's network namespace");
                runtime_in_network_of(ns_pid)
                    .expect("building a tokio runtime")
                    .block_on(future)
            });
            match thread.join() {
                Ok(output) => output,
                Err(panic) => std::panic::resume_unwind(panic),
            }
        })
    }

    /// Runs `ctr` against the node's containerd, in the CRI's `k8s.io` namespace (where the
    /// kubelet's images and containers are), and returns its standard output.
    pub fn ctr<I, S>(&self, args: I) -> Result<String>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let mut cmd = Command::new("ctr");
        cmd.arg("--address")
            .arg(self.paths.containerd_socket())
            .args(["--namespace", "k8s.io"])
            .args(args);
        run_ok(cmd)
    }

    /// Imports an OCI archive into the node's image store.
    pub fn import_image_archive(&self, archive: &Path) -> Result<()> {
        self.ctr(["images".as_ref(), "import".as_ref(), archive.as_os_str()])
            .map(drop)
    }

    /// Names of the images in the node's store.
    pub fn images(&self) -> Result<Vec<String>> {
        Ok(self
            .ctr(["images", "list", "--quiet"])?
            .lines()
            .map(str::to_owned)
            .collect())
    }

    /// Stops every process of the node, removes its cgroups, then its directory (unless
    /// `LOGCLUSTER_K8S_KEEP` is set). Idempotent; `Drop` calls it.
    pub fn stop(&self) {
        if let Some(p) = self
            .provisioner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            p.stop.store(true, Ordering::Relaxed);
            let _ = p.thread.join();
        }
        let mut processes = self.processes.lock().unwrap_or_else(|e| e.into_inner());
        while let Some(mut p) = processes.pop() {
            p.stop();
        }
        self.control_plane.stop();
        // PID 1 of the namespace: its death kills containerd's shims and every container.
        if let Some(mut holder) = self.holder.lock().unwrap_or_else(|e| e.into_inner()).take() {
            holder.stop();
        }
        if let Err(e) = remove_cgroups() {
            eprintln!("kube node: could not remove the cgroups {CGROUP_NAME}: {e}");
        }
        let dir = self.dir.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(dir) = dir
            && std::env::var_os("LOGCLUSTER_K8S_KEEP").is_some()
        {
            eprintln!("kube node: kept {}", dir.keep().display());
        }
    }

    fn push(&self, process: ChildProcess) {
        self.processes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(process);
    }

    /// A command that runs `program` inside the node's namespaces.
    fn command(&self, program: &Path) -> Command {
        Placement::Namespace {
            holder: self.ns_pid,
            node_ip: NODE_IP,
        }
        .command(program)
    }

    /// containerd, waiting until its socket accepts connections.
    fn start_runtime(&self, deadline: Instant) -> Result<()> {
        write(
            &self.paths.containerd_config(),
            &node_config::containerd(&self.paths, PAUSE_IMAGE),
        )?;
        write(
            &self.paths.cni_conf_dir().join("10-logcluster.conflist"),
            &node_config::cni(&self.paths, POD_SUBNET),
        )?;
        let mut cmd = self.command(Path::new("/usr/bin/containerd"));
        cmd.arg("--config").arg(self.paths.containerd_config());
        let mut processes = vec![ChildProcess::spawn(
            "containerd",
            cmd,
            &self.paths.logs("containerd"),
        )?];
        let socket = self.paths.containerd_socket();
        let result = wait_until(&mut processes, deadline, "containerd's socket", || {
            Ok((UnixStream::connect(&socket).is_ok(), "not accepting".into()))
        });
        self.push(processes.remove(0));
        result
    }

    /// The kubelet, kube-scheduler, kube-proxy and CoreDNS; then the node `Ready`, the default
    /// ServiceAccount and the StorageClass. Runs on a thread in the node's network.
    fn start_components(&self, deadline: Instant) -> Result<()> {
        let cp = &self.control_plane;
        let kubeconfig = cp.kubeconfig_path().to_owned();
        let pki = cp.pki().clone();
        write(
            &self.paths.resolv_conf(),
            &node_config::resolv_conf(NODE_IP),
        )?;
        write(
            &self.paths.kubelet_config(),
            &node_config::kubelet(
                &self.paths,
                NODE_IP,
                &pki.ca_cert,
                &format!("/{CGROUP_NAME}"),
                POD_SUBNET,
            ),
        )?;
        write(
            &self.paths.corefile(),
            &node_config::corefile(NODE_IP, &kubeconfig, COREDNS_READY_PORT),
        )?;

        let kubeconfig_arg = format!("--kubeconfig={}", kubeconfig.display());
        let mut kubelet = self.command(&Tool::Kubelet.path()?);
        kubelet
            .arg(format!(
                "--config={}",
                self.paths.kubelet_config().display()
            ))
            .arg(&kubeconfig_arg)
            .arg(format!("--hostname-override={NODE_NAME}"))
            .arg(format!("--node-ip={NODE_IP}"))
            .arg("--root-dir=/var/lib/kubelet")
            .arg("--v=1");
        self.start_and_wait(
            "kubelet",
            kubelet,
            deadline,
            local(KUBELET_HEALTHZ_PORT),
            "/healthz",
        )?;

        let mut scheduler = self.command(&Tool::KubeScheduler.path()?);
        scheduler
            .arg(&kubeconfig_arg)
            .args(["--leader-elect=false", "--bind-address=127.0.0.1"])
            .args(["--secure-port=10259", "--profiling=false"]);
        self.push(ChildProcess::spawn(
            "kube-scheduler",
            scheduler,
            &self.paths.logs("kube-scheduler"),
        )?);

        let mut proxy = self.command(&Tool::KubeProxy.path()?);
        proxy
            .arg(&kubeconfig_arg)
            .args([
                "--proxy-mode=iptables",
                &format!("--cluster-cidr={POD_SUBNET}"),
            ])
            .arg(format!("--hostname-override={NODE_NAME}"))
            // The connection-tracking limits are the host's, not ours to change.
            .args(["--conntrack-max-per-core=0"])
            .args(["--conntrack-tcp-timeout-established=0s"])
            .args(["--conntrack-tcp-timeout-close-wait=0s"])
            .arg(format!(
                "--healthz-bind-address=127.0.0.1:{KUBE_PROXY_HEALTHZ_PORT}"
            ))
            .arg("--metrics-bind-address=127.0.0.1:10249");
        self.start_and_wait(
            "kube-proxy",
            proxy,
            deadline,
            local(KUBE_PROXY_HEALTHZ_PORT),
            "/healthz",
        )?;

        let mut coredns = self.command(&Tool::Coredns.path()?);
        coredns.arg("-conf").arg(self.paths.corefile());
        self.start_and_wait(
            "coredns",
            coredns,
            deadline,
            local(COREDNS_READY_PORT),
            "/ready",
        )?;

        self.wait_for_api("node Ready", deadline, |cp| {
            let (status, body) =
                cp.probe
                    .request("GET", &format!("/api/v1/nodes/{NODE_NAME}"), None)?;
            Ok((
                status == 200 && node_is_ready(&body),
                summary(status, &body),
            ))
        })?;
        self.wait_for_api("the default ServiceAccount", deadline, |cp| {
            let (status, body) = cp.probe.request(
                "GET",
                "/api/v1/namespaces/default/serviceaccounts/default",
                None,
            )?;
            Ok((status == 200, summary(status, &body)))
        })?;
        self.create_storage_class()
    }

    fn start_and_wait(
        &self,
        name: &str,
        cmd: Command,
        deadline: Instant,
        addr: SocketAddr,
        path: &str,
    ) -> Result<()> {
        let mut processes = vec![ChildProcess::spawn(name, cmd, &self.paths.logs(name))?];
        let result = wait_until(&mut processes, deadline, &format!("{name} {path}"), || {
            let (status, body) = super::http::plain_get(addr, path)?;
            Ok((status == 200, summary(status, &body)))
        });
        self.push(processes.remove(0));
        result
    }

    /// Polls the API server until `check` is satisfied, failing early if a node process exits.
    fn wait_for_api(
        &self,
        what: &str,
        deadline: Instant,
        mut check: impl FnMut(&ControlPlane) -> io::Result<(bool, String)>,
    ) -> Result<()> {
        let mut processes = self.processes.lock().unwrap_or_else(|e| e.into_inner());
        wait_until(&mut processes, deadline, what, || {
            check(&self.control_plane)
        })
    }

    fn create_storage_class(&self) -> Result<()> {
        let body = serde_json::json!({
            "apiVersion": "storage.k8s.io/v1",
            "kind": "StorageClass",
            "metadata": {
                "name": STORAGE_CLASS,
                "annotations": { "storageclass.kubernetes.io/is-default-class": "true" },
            },
            "provisioner": PROVISIONER,
            "reclaimPolicy": "Delete",
            "volumeBindingMode": "Immediate",
        })
        .to_string();
        let path = "/apis/storage.k8s.io/v1/storageclasses";
        let (status, answer) = self
            .control_plane
            .probe
            .request("POST", path, Some(&body))
            .map_err(|e| Error::io(format!("POST {path}"), e))?;
        if status != 201 {
            return Err(Error::Api {
                request: format!("POST {path}"),
                status,
                body: answer,
            });
        }
        Ok(())
    }

    fn start_provisioner(&self) -> Result<()> {
        let stop = Arc::new(AtomicBool::new(false));
        let probe = self.control_plane.probe.clone();
        let volumes = self.paths.volumes_dir();
        let ns_pid = self.ns_pid;
        let log = self.paths.logs("provisioner");
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("test-provisioner".into())
            .spawn(move || {
                if let Err(e) = enter_network_of(ns_pid) {
                    eprintln!("kube node: the provisioner could not join the network: {e}");
                    return;
                }
                let provisioner = super::provisioner::LocalProvisioner {
                    probe,
                    volumes,
                    log,
                    storage_class: STORAGE_CLASS,
                    provisioner: PROVISIONER,
                    node_name: NODE_NAME,
                };
                while !flag.load(Ordering::Relaxed) {
                    provisioner.reconcile();
                    std::thread::sleep(PROVISION_INTERVAL);
                }
            })
            .map_err(|e| Error::io("starting the provisioner thread", e))?;
        *self.provisioner.lock().unwrap_or_else(|e| e.into_inner()) =
            Some(Provisioner { stop, thread });
        Ok(())
    }

    /// Builds LogCluster's images with `images/build.sh` (dev profile, the suite's target
    /// directory) into private buildah storage and imports them.
    fn import_project_images(&self, deadline: Instant) -> Result<()> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .expect("tests/ is inside the workspace")
            .to_owned();
        let buildah_root = self.paths.root.join("buildah");
        let mut build = Command::new(root.join("images/build.sh"));
        build
            .arg("images")
            .current_dir(&root)
            .env("LOGCLUSTER_IMAGE_PROFILE", "dev")
            .env(
                "LOGCLUSTER_IMAGE_CONTEXT",
                self.paths.root.join("image-context"),
            )
            .env("BUILDAH_ROOT", &buildah_root);
        if std::env::var_os("CARGO_TARGET_DIR").is_none() {
            build.env("CARGO_TARGET_DIR", root.join("target"));
        }
        // The build is the slow part of a cold start (a static build of three binaries).
        let mut build =
            ChildProcess::spawn("images/build.sh", build, &self.paths.logs("image-build"))?;
        wait_for_exit(&mut build, deadline)?;
        let version = env!("CARGO_PKG_VERSION");
        for name in ["lognode", "logcluster-operator"] {
            let image = format!("ghcr.io/logcluster/{name}:{version}");
            let archive = self.paths.root.join(format!("{name}.oci.tar"));
            let mut push = buildah(&buildah_root);
            push.arg("push")
                .arg(&image)
                .arg(format!("oci-archive:{}:{image}", archive.display()));
            run_ok(push)?;
            self.import_image_archive(&archive)?;
            let _ = std::fs::remove_file(&archive);
        }
        Ok(())
    }
}

impl Drop for KubeNode {
    fn drop(&mut self) {
        self.stop();
    }
}

static SHARED: SharedOnce<KubeNode> = SharedOnce::new();

/// One node for the whole test binary, started on first use (minutes when the images must be
/// built) and stopped when the process exits.
pub fn shared() -> Result<&'static KubeNode> {
    SHARED.get_or_start(KubeNode::start, stop_shared)
}

extern "C" fn stop_shared() {
    SHARED.stop(KubeNode::stop);
}

/// Runs `f` on a new thread that has joined the network namespace of process `pid`.
pub(super) fn in_network_of<T: Send, E: Send + From<JoinNetwork>>(
    pid: u32,
    f: impl FnOnce() -> std::result::Result<T, E> + Send,
) -> std::result::Result<T, E> {
    std::thread::scope(|scope| {
        let thread = scope.spawn(move || {
            enter_network_of(pid).map_err(JoinNetwork)?;
            f()
        });
        match thread.join() {
            Ok(result) => result,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}

/// A thread could not join the node's network namespace.
#[derive(Debug)]
pub(super) struct JoinNetwork(io::Error);

impl From<JoinNetwork> for io::Error {
    fn from(e: JoinNetwork) -> Self {
        e.0
    }
}

impl From<JoinNetwork> for Error {
    fn from(e: JoinNetwork) -> Self {
        Error::io("joining the node's network namespace", e.0)
    }
}

/// Moves the calling thread (only it: a network namespace is per thread) into `pid`'s network.
/// A multi-threaded runtime whose every thread joins the network namespace of process `pid`.
/// Call it from a thread already there: threads inherit the creating thread's namespace, but
/// the blocking pool may be grown from anywhere, so every runtime thread joins explicitly.
fn runtime_in_network_of(pid: u32) -> io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .on_thread_start(move || {
            if let Err(e) = enter_network_of(pid) {
                eprintln!("kube node: a runtime thread could not join: {e}");
            }
        })
        .build()
}

fn enter_network_of(pid: u32) -> io::Result<()> {
    let path = format!("/proc/{pid}/ns/net");
    let ns = File::open(&path)?;
    // SAFETY: setns(2) on a descriptor we own and keep open for the call.
    let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc != 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(e.kind(), format!("setns({path}): {e}")));
    }
    Ok(())
}

fn lock_machine() -> Result<File> {
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(MACHINE_LOCK)
        .map_err(|e| Error::io(format!("opening {MACHINE_LOCK}"), e))?;
    // SAFETY: flock(2) on a descriptor we own.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        eprintln!("kube node: another test process runs the machine's node; waiting for it");
        // SAFETY: as above; this time blocking until the other process is done.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(Error::io(
                format!("locking {MACHINE_LOCK}"),
                io::Error::last_os_error(),
            ));
        }
    }
    Ok(file)
}

/// `unshare` with new PID, mount and network namespaces around the pause program; returns it
/// and the PID of pause (PID 1 inside), whose namespaces are the node's.
fn start_holder(paths: &NodePaths, deadline: Instant) -> Result<(ChildProcess, u32)> {
    let mut cmd = Command::new("unshare");
    cmd.args(["--pid", "--fork", "--mount-proc", "--mount"])
        .args(["--propagation", "private", "--net", "--kill-child", "--"])
        .arg(Tool::Pause.path()?);
    let mut holder = ChildProcess::spawn("namespace holder", cmd, &paths.logs("holder"))?;
    let unshare = holder.pid();
    let children = format!("/proc/{unshare}/task/{unshare}/children");
    loop {
        let found = std::fs::read_to_string(&children)
            .ok()
            .and_then(|s| s.split_whitespace().next()?.parse::<u32>().ok());
        // The namespaces are made before the fork; pause is exec'ed right after it. Either way
        // the child's network namespace differs from ours once it exists.
        if let Some(pid) = found
            && std::fs::read_link(format!("/proc/{pid}/ns/net")).ok()
                != std::fs::read_link("/proc/self/ns/net").ok()
        {
            return Ok((holder, pid));
        }
        if let Some(status) = holder.exited() {
            return Err(Error::ExitedEarly {
                name: "unshare".into(),
                status: status.to_string(),
                log: holder.log_path().to_owned(),
                tail: holder.log_tail(20),
            });
        }
        if Instant::now() >= deadline {
            return Err(Error::NotReady {
                what: "the namespace holder".into(),
                timeout: Duration::ZERO,
                last: format!("no child in {children}"),
                log: holder.log_path().to_owned(),
                tail: holder.log_tail(20),
            });
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Mounts and network of the namespaces: private `/run` and `/var/lib`, the kubelet's and the
/// logs' directories, loopback, the node's address on a veth pair (both ends inside), a default
/// route (components pick the node address from it), forwarding and bridge filtering (Services
/// of pods on the same bridge).
fn prepare_namespaces(paths: &NodePaths, ns_pid: u32) -> Result<()> {
    let q = |p: &Path| shell_quote(&p.display().to_string());
    let script = format!(
        "set -eu\n\
         mount -t tmpfs -o mode=755 tmpfs /run\n\
         mount -t tmpfs -o mode=755 tmpfs /var/lib\n\
         mkdir -p /var/lib/kubelet\n\
         mount --bind {kubelet} /var/lib/kubelet\n\
         mount --bind {log} /var/log\n\
         ip link set lo up\n\
         ip link add node0 type veth peer name node0-peer\n\
         ip link set node0 up\n\
         ip link set node0-peer up\n\
         ip addr add {NODE_IP}/{NODE_PREFIX_LEN} dev node0\n\
         ip route add default dev node0\n\
         sysctl -q -w net.ipv4.ip_forward=1\n\
         sysctl -q -w net.bridge.bridge-nf-call-iptables=1\n",
        kubelet = q(&paths.kubelet_dir()),
        log = q(&paths.log_dir()),
    );
    let mut cmd = Command::new("nsenter");
    cmd.arg(format!("--target={ns_pid}"))
        .args(["--mount", "--net", "--", "sh", "-c", &script]);
    run_ok(cmd).map(drop)
}

fn cgroup_dirs() -> impl Iterator<Item = PathBuf> {
    CGROUP_CONTROLLERS
        .iter()
        .map(|c| Path::new("/sys/fs/cgroup").join(c))
        .filter(|p| p.is_dir())
        .map(|p| p.join(CGROUP_NAME))
}

fn create_cgroups() -> io::Result<()> {
    for dir in cgroup_dirs() {
        std::fs::create_dir_all(&dir)?;
        // A new cpuset cgroup has no CPUs or memory nodes until given its parent's.
        if dir.parent().is_some_and(|p| p.ends_with("cpuset")) {
            for file in ["cpuset.cpus", "cpuset.mems"] {
                let parent = std::fs::read_to_string(dir.parent().expect("checked").join(file))?;
                std::fs::write(dir.join(file), parent.trim())?;
            }
        }
    }
    Ok(())
}

/// Removes the cgroup trees depth-first. A cgroup is only removable once its processes have
/// gone, which takes the kernel a moment after a SIGKILL: bounded retries.
fn remove_cgroups() -> io::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut last = None;
        for dir in cgroup_dirs() {
            if dir.exists()
                && let Err(e) = remove_cgroup_tree(&dir)
            {
                last = Some(io::Error::new(e.kind(), format!("{}: {e}", dir.display())));
            }
        }
        match last {
            None => return Ok(()),
            Some(e) if Instant::now() >= deadline => return Err(e),
            Some(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

fn remove_cgroup_tree(dir: &Path) -> io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            remove_cgroup_tree(&entry.path())?;
        }
    }
    std::fs::remove_dir(dir)
}

/// The pause image as an OCI archive, built once per pause version into the tools cache.
fn pause_image_archive(paths: &NodePaths) -> Result<PathBuf> {
    let binary = Tool::Pause.path()?;
    let archive = binary.with_file_name("pause-image.oci.tar");
    let fresh = match (archive.metadata(), binary.metadata()) {
        (Ok(a), Ok(b)) => a.modified().ok() >= b.modified().ok(),
        _ => false,
    };
    if fresh {
        return Ok(archive);
    }
    let root = paths.root.join("buildah-pause");
    let container = run_ok({
        let mut cmd = buildah(&root);
        cmd.args(["from", "scratch"]);
        cmd
    })?;
    let container = container.trim();
    let steps: [&[&OsStr]; 3] = [
        &[
            "copy".as_ref(),
            container.as_ref(),
            binary.as_os_str(),
            "/pause".as_ref(),
        ],
        &[
            "config".as_ref(),
            "--entrypoint".as_ref(),
            r#"["/pause"]"#.as_ref(),
            "--user".as_ref(),
            "65535:65535".as_ref(),
            container.as_ref(),
        ],
        &["commit".as_ref(), container.as_ref(), PAUSE_IMAGE.as_ref()],
    ];
    for args in steps {
        let mut cmd = buildah(&root);
        cmd.args(args);
        run_ok(cmd)?;
    }
    // Written beside, then renamed: a concurrent reader never sees half an archive.
    let partial = archive.with_extension(format!("partial-{}", std::process::id()));
    let mut push = buildah(&root);
    push.arg("push")
        .arg(PAUSE_IMAGE)
        .arg(format!("oci-archive:{}:{PAUSE_IMAGE}", partial.display()));
    run_ok(push)?;
    std::fs::rename(&partial, &archive)
        .map_err(|e| Error::io(format!("renaming {}", partial.display()), e))?;
    Ok(archive)
}

/// Waits for `process` to exit successfully by `deadline`.
fn wait_for_exit(process: &mut ChildProcess, deadline: Instant) -> Result<()> {
    let started = Instant::now();
    loop {
        if let Some(status) = process.exited() {
            if status.success() {
                return Ok(());
            }
            return Err(Error::ExitedEarly {
                name: process.name().to_owned(),
                status: status.to_string(),
                log: process.log_path().to_owned(),
                tail: process.log_tail(30),
            });
        }
        if Instant::now() >= deadline {
            return Err(Error::NotReady {
                what: format!("{} to finish", process.name()),
                timeout: started.elapsed(),
                last: "still running".into(),
                log: process.log_path().to_owned(),
                tail: process.log_tail(30),
            });
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn buildah(root: &Path) -> Command {
    let mut cmd = Command::new("buildah");
    cmd.args(["--storage-driver", "vfs", "--root"])
        .arg(root.join("storage"))
        .arg("--runroot")
        .arg(root.join("run"));
    cmd
}

fn run_ok(mut cmd: Command) -> Result<String> {
    let described = describe(&cmd);
    let output = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| Error::io(&described, e))?;
    success(described, output)
}

fn write(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).map_err(|e| Error::io(format!("writing {}", path.display()), e))
}

fn local(port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, port))
}

fn summary(status: u16, body: &str) -> String {
    format!("{status} {}", body.chars().take(300).collect::<String>())
}

/// Whether a Node object's `Ready` condition is `True`.
fn node_is_ready(body: &str) -> bool {
    let Ok(node) = serde_json::from_str::<serde_json::Value>(body) else {
        return false;
    };
    node["status"]["conditions"]
        .as_array()
        .is_some_and(|conditions| {
            conditions
                .iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        })
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// A tokio runtime in the node's network (see [`KubeNode::runtime`]).
pub struct NodeRuntime {
    runtime: tokio::runtime::Runtime,
}

impl NodeRuntime {
    /// Starts `future` on the runtime's threads.
    pub fn spawn<F>(&self, future: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.runtime.spawn(future)
    }

    /// Runs `future` on the runtime's threads and waits for it here (the calling thread stays
    /// where it is: only the runtime's threads are in the node's network).
    pub fn run<F>(&self, future: F) -> F::Output
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        match self.runtime.block_on(self.runtime.spawn(future)) {
            Ok(output) => output,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(e) => panic!("a task on the node's runtime was cancelled: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_readiness_reads_the_ready_condition() {
        let ready = r#"{"status":{"conditions":[{"type":"MemoryPressure","status":"False"},
            {"type":"Ready","status":"True"}]}}"#;
        let not_ready = r#"{"status":{"conditions":[{"type":"Ready","status":"False"}]}}"#;
        assert!(node_is_ready(ready));
        assert!(!node_is_ready(not_ready));
        assert!(!node_is_ready("not json"));
    }

    #[test]
    fn shell_quote_survives_quotes() {
        assert_eq!(shell_quote("a'b"), r"'a'\''b'");
    }
}
