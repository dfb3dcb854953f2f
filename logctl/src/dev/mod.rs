//! `logctl dev`: a local cluster on loopback in the foreground — the README's first command.
//!
//! Node *i* (1..=N) runs as a `lognode` child process on `127.0.0.i` (gRPC :8400, gossip :8401,
//! HTTP :8402), with its data in `<dir>/node-<i>`. Everything the cluster needs is generated
//! once under `<dir>`: a CA, a node certificate for all the loopback addresses, a client
//! certificate allowed to produce, consume and administer, the casbin policy and the gossip key.
//! Node 1 bootstraps; the others find it through gossip and are added by the leader, the same
//! path a Kubernetes cluster takes. Running the command again reuses the data and the CA.
//!
//! Once the cluster has formed, a node that exits (`kill <pid>` it to watch a failover) is
//! reported with the end of its log and started again after `--restart-delay`; the others keep
//! serving meanwhile. `--no-restart` leaves it down. Ctrl-C stops every node.

use std::io::Write as _;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use logcluster_api::log_v1::ServerRole;
use logcluster_api::{ClientConfig, ClientTls, LogClient};
use logcluster_certs::{CertificateAuthority, CertificateRequest, read_file, write_pem_files};

use self::nodes::{Nodes, Restarts};

/// Length of the cluster gossip key: `lognode --gossip-key-file` reads 32 bytes as 64 hex digits
/// (or raw), a ChaCha20-Poly1305 key.
const GOSSIP_KEY_LEN: usize = 32;

/// Subject of the generated client certificate (its CN).
const CLIENT_NAME: &str = "dev";
const GRPC_PORT: u16 = 8400;
const GOSSIP_PORT: u16 = 8401;
const HTTP_PORT: u16 = 8402;
/// Validity of the generated CA and certificates: long enough that a dev directory kept
/// around keeps working; the node certificate is re-issued on every start anyway.
const VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);

/// Prints a progress line. A dev cluster runs in the foreground for hours, and its reader
/// (`logctl dev | tee log`, a closed terminal) may go away: the cluster keeps running rather
/// than panicking in `println!`, so write errors are ignored here.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

mod nodes;

/// `logctl dev`.
#[derive(Debug, Clone, clap::Args)]
pub struct DevArgs {
    /// Number of nodes (node i listens on 127.0.0.i).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u8).range(1..=9))]
    pub nodes: u8,
    /// Directory for certificates, keys, policy and each node's data; reused when it exists.
    #[arg(long, default_value = "./logcluster-dev")]
    pub dir: PathBuf,
    /// The lognode binary [default: the one next to logctl, else lognode on PATH].
    #[arg(long)]
    pub lognode: Option<PathBuf>,
    /// How long to wait for a leader and all voters before giving up.
    #[arg(long, default_value = "90s", value_parser = humantime::parse_duration)]
    pub ready_timeout: Duration,
    /// Third octet of the nodes' loopback addresses: node i listens on 127.0.<subnet>.i (run
    /// two dev clusters side by side with different subnets).
    #[arg(long, default_value_t = 0)]
    pub subnet: u8,
    /// Leave a node that exits down instead of restarting it (the others keep running either
    /// way; Ctrl-C stops them).
    #[arg(long)]
    pub no_restart: bool,
    /// How long after a node exits it is started again; doubled (up to 1 min) while it keeps
    /// exiting within a minute of starting.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub restart_delay: Duration,
    /// Log filter of the nodes (their logs go to <dir>/node-<i>/lognode.log).
    #[arg(long, default_value = "info")]
    pub log_level: String,
}

/// Files shared by every node and the client.
#[derive(Debug, Clone)]
struct DevFiles {
    ca: PathBuf,
    node_cert: PathBuf,
    node_key: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
    policy: PathBuf,
    gossip_key: PathBuf,
}

/// Runs the cluster until Ctrl-C (or SIGTERM), then stops every node.
pub async fn dev(args: DevArgs) -> Result<()> {
    let lognode = find_lognode(args.lognode.as_deref())?;
    let dir = absolute(&args.dir)?;
    let net = Loopback {
        subnet: args.subnet,
    };
    let files = prepare_files(&dir, args.nodes, net).with_context(|| {
        format!(
            "preparing certificates and keys in {} (delete the directory to start afresh)",
            dir.display()
        )
    })?;
    let addrs: Vec<String> = (1..=args.nodes)
        .map(|i| format!("{}:{GRPC_PORT}", net.node_ip(i)))
        .collect();

    let mut nodes = Nodes::default();
    for i in 1..=args.nodes {
        let child = spawn_node(&lognode, &dir, &files, net, i, &args.log_level)
            .with_context(|| format!("starting node {i}"))?;
        say!(
            "started node {i} (pid {}) on {} — log: {}",
            child.id(),
            addrs[usize::from(i) - 1],
            log_path(&dir, i).display()
        );
        nodes.started(i, child);
    }

    let tls = ClientTls::from_files(&files.ca, &files.client_cert, &files.client_key)
        .context("loading the generated client certificate")?;
    let ready = tokio::select! {
        ready = wait_until_formed(&addrs, tls, args.nodes, args.ready_timeout, &mut nodes, &dir) => ready,
        () = shutdown_signal() => Err(anyhow::anyhow!("interrupted")),
    };
    if let Err(e) = ready {
        nodes.stop_all();
        return Err(e);
    }
    print_usage(&dir, &files, net, &addrs);

    let restart = (!args.no_restart).then_some(args.restart_delay);
    let spawn = |i: u8| spawn_node(&lognode, &dir, &files, net, i, &args.log_level);
    supervise(&mut nodes, restart, &dir, spawn).await;
    say!("stopping {} nodes…", nodes.running());
    nodes.stop_all();
    say!(
        "stopped; the data stays in {} for the next run",
        dir.display()
    );
    Ok(())
}

/// Keeps the cluster running until Ctrl-C (or SIGTERM): a node that exits is reported with the
/// end of its log and, unless `restart` is `None`, started again after the delay — so a user
/// can `kill` a node and watch the others carry on and the node rejoin.
async fn supervise(
    nodes: &mut Nodes,
    restart: Option<Duration>,
    dir: &Path,
    spawn: impl Fn(u8) -> Result<Child>,
) {
    let mut restarts = Restarts::new(restart.unwrap_or_default());
    let stop = shutdown_signal();
    tokio::pin!(stop);
    loop {
        let due = restarts.next_due();
        tokio::select! {
            () = &mut stop => return,
            (i, status, ran_for) = nodes.next_exit() => {
                say!(
                    "node {i} exited ({status}) after {}; the others keep running. The end of its log ({}):\n{}",
                    humantime::format_duration(round_to_seconds(ran_for)),
                    log_path(dir, i).display(),
                    log_tail(dir, i)
                );
                if restart.is_some() {
                    let delay = restarts.schedule(i, ran_for);
                    say!("restarting node {i} in {}", humantime::format_duration(delay));
                } else {
                    say!("node {i} stays down (--no-restart); Ctrl-C stops the others");
                }
            }
            () = sleep_until(due) => {
                for i in restarts.take_due() {
                    match spawn(i) {
                        Ok(child) => {
                            say!("restarted node {i} (pid {})", child.id());
                            nodes.started(i, child);
                        }
                        Err(e) => {
                            let delay = restarts.schedule(i, Duration::ZERO);
                            say!("restarting node {i} failed: {e:#}; trying again in {}",
                                humantime::format_duration(delay));
                        }
                    }
                }
            }
        }
    }
}

/// Sleeps until `at`, or forever when nothing is due.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

fn round_to_seconds(d: Duration) -> Duration {
    Duration::from_secs(d.as_secs())
}

/// Where the nodes of a dev cluster listen.
#[derive(Debug, Clone, Copy)]
struct Loopback {
    subnet: u8,
}

impl Loopback {
    fn node_ip(self, i: u8) -> Ipv4Addr {
        Ipv4Addr::new(127, 0, self.subnet, i)
    }
}

fn log_path(dir: &Path, i: u8) -> PathBuf {
    dir.join(format!("node-{i}")).join("lognode.log")
}

/// `dir` as an absolute path without `.` components, so that the paths printed for copy and
/// paste read `/repo/logcluster-dev/…`, not `/repo/./logcluster-dev/…`. (`..` stays: resolving
/// it without following symlinks could name another directory.)
fn absolute(dir: &Path) -> Result<PathBuf> {
    std::path::absolute(dir).with_context(|| format!("making {} absolute", dir.display()))
}

/// `lognode` next to this executable (a cargo build puts them together), else on `PATH`.
fn find_lognode(explicit: Option<&Path>) -> Result<PathBuf> {
    if let Some(path) = explicit {
        if !path.is_file() {
            bail!("--lognode {} does not exist", path.display());
        }
        return Ok(path.to_owned());
    }
    if let Ok(me) = std::env::current_exe()
        && let Some(sibling) = me.parent().map(|d| d.join("lognode"))
        && sibling.is_file()
    {
        return Ok(sibling);
    }
    let on_path = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .map(|d| d.join("lognode"))
        .find(|p| p.is_file());
    on_path.context(
        "cannot find the lognode binary next to logctl or on PATH; build it \
         (cargo build --release --bin lognode) or pass --lognode <path>",
    )
}

/// Creates what is missing under `dir` and re-issues the node certificate (so a run with more
/// nodes than the last one still verifies).
fn prepare_files(dir: &Path, nodes: u8, net: Loopback) -> Result<DevFiles> {
    let certs = dir.join("certs");
    let ca_cert = certs.join("ca.pem");
    let ca_key = certs.join("ca-key.pem");
    let ca = if ca_cert.exists() {
        CertificateAuthority::from_pem(&read_file(&ca_cert)?, &read_file(&ca_key)?)
            .with_context(|| format!("loading the CA in {}", certs.display()))?
    } else {
        let ca = CertificateAuthority::generate("LogCluster dev CA", VALIDITY)?;
        write_pem_files(&certs, "ca", ca.cert_pem(), Some(ca.key_pem()))?;
        say!("created a CA in {}", certs.display());
        ca
    };
    let ips = (1..=nodes)
        .map(|i| IpAddr::V4(net.node_ip(i)))
        .chain([IpAddr::V4(Ipv4Addr::LOCALHOST)]);
    let node = ca.issue(&CertificateRequest::node(
        "node",
        ["localhost"],
        ips,
        VALIDITY,
    ))?;
    write_pem_files(&certs, "node", &node.cert_pem, Some(&node.key_pem))?;
    let client_cert = certs.join(format!("{CLIENT_NAME}.pem"));
    if !client_cert.exists() {
        let client = ca.issue(&CertificateRequest::client(CLIENT_NAME, VALIDITY))?;
        write_pem_files(&certs, CLIENT_NAME, &client.cert_pem, Some(&client.key_pem))?;
    }
    let policy = dir.join("policy.csv");
    if !policy.exists() {
        // Nodes replicate, join (admin) and forward client calls; the dev user may do all a
        // person does. Edit the file while the cluster runs: nodes reload it.
        let text = format!(
            "p, node, *, replicate\np, node, *, admin\np, node, *, produce\np, node, *, consume\n\
             p, {CLIENT_NAME}, *, produce\np, {CLIENT_NAME}, *, consume\np, {CLIENT_NAME}, *, admin\n"
        );
        std::fs::write(&policy, text).with_context(|| format!("writing {}", policy.display()))?;
    }
    let gossip_key = dir.join("gossip.key");
    if !gossip_key.exists() {
        write_secret(&gossip_key, new_gossip_key().as_bytes())?;
    }
    Ok(DevFiles {
        ca: ca_cert,
        node_cert: certs.join("node.pem"),
        node_key: certs.join("node-key.pem"),
        client_cert,
        client_key: certs.join(format!("{CLIENT_NAME}-key.pem")),
        policy,
        gossip_key,
    })
}

/// A fresh random gossip key in the hex form `lognode --gossip-key-file` reads (the node's
/// `GossipKey::from_file`; kept in step by the `logctl_dev` end-to-end test, which starts nodes
/// with it).
fn new_gossip_key() -> String {
    hex::encode(rand::random::<[u8; GOSSIP_KEY_LEN]>())
}

/// Resolves on Ctrl-C (SIGINT) or SIGTERM.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        // Without a SIGTERM handler, Ctrl-C still stops the cluster.
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

fn write_secret(path: &Path, contents: &[u8]) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    file.write_all(contents)
        .and_then(|()| file.sync_all())
        .with_context(|| format!("writing {}", path.display()))
}

fn spawn_node(
    lognode: &Path,
    dir: &Path,
    files: &DevFiles,
    net: Loopback,
    i: u8,
    log_level: &str,
) -> Result<Child> {
    let home = dir.join(format!("node-{i}"));
    std::fs::create_dir_all(&home).with_context(|| format!("creating {}", home.display()))?;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_path(dir, i))
        .with_context(|| format!("opening {}", log_path(dir, i).display()))?;
    let ip = net.node_ip(i);
    let mut cmd = Command::new(lognode);
    cmd.arg("--node-id")
        .arg(i.to_string())
        .arg("--data-dir")
        .arg(home.join("data"))
        .arg("--listen-addr")
        .arg(format!("{ip}:{GRPC_PORT}"))
        .arg("--advertise-addr")
        .arg(format!("{ip}:{GRPC_PORT}"))
        .arg("--http-listen-addr")
        .arg(format!("{ip}:{HTTP_PORT}"))
        .arg("--gossip-listen-addr")
        .arg(format!("{ip}:{GOSSIP_PORT}"))
        .arg("--gossip-seed")
        .arg(format!("{}:{GOSSIP_PORT}", net.node_ip(1)))
        .arg("--gossip-key-file")
        .arg(&files.gossip_key)
        .arg("--tls-ca-file")
        .arg(&files.ca)
        .arg("--tls-cert-file")
        .arg(&files.node_cert)
        .arg("--tls-key-file")
        .arg(&files.node_key)
        .arg("--acl-policy-file")
        .arg(&files.policy)
        .arg("--log-level")
        .arg(log_level)
        // The dev cluster's own environment must not leak in (e.g. LOGCLUSTER_ADDR of the shell).
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    if i == 1 {
        // Idempotent: a restart of an initialized node does nothing more.
        cmd.arg("--bootstrap");
    }
    // Own process group: Ctrl-C in the terminal reaches logctl only, which then stops the
    // nodes in order instead of all of them at once.
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    cmd.spawn()
        .with_context(|| format!("running {}", lognode.display()))
}

/// Waits until one leader and `nodes` voters are reported, printing progress.
async fn wait_until_formed(
    addrs: &[String],
    tls: ClientTls,
    nodes: u8,
    patience: Duration,
    children: &mut Nodes,
    dir: &Path,
) -> Result<()> {
    let deadline = Instant::now() + patience;
    let mut config = ClientConfig::new(addrs.to_vec(), tls);
    config.retry_deadline = Duration::from_secs(2);
    let mut last = String::new();
    let mut client: Option<LogClient> = None;
    loop {
        if let Some((i, status)) = children.try_exited() {
            bail!(
                "node {i} exited ({status}) while the cluster was forming; its log: {}\n{}",
                log_path(dir, i).display(),
                log_tail(dir, i)
            );
        }
        if client.is_none() {
            client = LogClient::connect(config.clone()).await.ok();
        }
        let progress = match &client {
            None => "waiting for the nodes to serve".to_string(),
            Some(client) => match client.refresh().await {
                Ok(servers) => {
                    let voters = servers
                        .iter()
                        .filter(|s| s.role == ServerRole::Voter as i32)
                        .count();
                    let leader = servers.iter().find(|s| s.is_leader);
                    if let Some(leader) = leader
                        && voters == usize::from(nodes)
                    {
                        say!(
                            "cluster ready: leader is node {} ({}), {voters} voters",
                            leader.id,
                            leader.rpc_addr
                        );
                        return Ok(());
                    }
                    format!(
                        "{voters}/{nodes} voters, leader: {}",
                        leader.map_or("none yet".to_string(), |l| format!("node {}", l.id))
                    )
                }
                Err(e) => format!("waiting for a leader ({e})"),
            },
        };
        if progress != last {
            say!("  {progress}");
            last = progress;
        }
        if Instant::now() >= deadline {
            bail!(
                "the cluster did not form within {patience:?} (last: {last}); see the logs in {}",
                dir.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn print_usage(dir: &Path, files: &DevFiles, net: Loopback, addrs: &[String]) {
    say!();
    say!(
        "LogCluster dev cluster — Ctrl-C stops it; data and certificates stay in {}",
        dir.display()
    );
    say!();
    for (i, addr) in addrs.iter().enumerate() {
        let ip = net.node_ip(u8::try_from(i + 1).unwrap_or(u8::MAX));
        say!(
            "  node {}: gRPC {addr}   metrics http://{ip}:{HTTP_PORT}/metrics",
            i + 1
        );
    }
    say!();
    say!("In another terminal:");
    say!();
    // The README's quick start runs `logctl` from PATH: name the directory this one is in.
    if let Some(bin_dir) = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(Path::to_path_buf))
    {
        say!("  export PATH={}:$PATH", bin_dir.display());
    }
    say!("  export LOGCLUSTER_ADDR={}", addrs.join(","));
    say!("  export LOGCLUSTER_CA={}", files.ca.display());
    say!("  export LOGCLUSTER_CERT={}", files.client_cert.display());
    say!("  export LOGCLUSTER_KEY={}", files.client_key.display());
    say!("  logctl produce hello world          # prints the offsets");
    say!("  logctl consume --from 0             # prints offset<TAB>value");
    say!("  logctl consume --from 0 --follow    # follows the tail");
    say!("  logctl servers                      # members, roles, leader");
    say!("  logctl admin status                 # term, commit index, lag");
    say!();
    // Flush so a pipe (e.g. a test reading this output) sees it at once.
    let _ = std::io::stdout().flush();
}

fn log_tail(dir: &Path, i: u8) -> String {
    let text = std::fs::read_to_string(log_path(dir, i)).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gossip_key_is_64_hex_digits_as_lognode_reads_it() {
        let key = new_gossip_key();
        assert_eq!(key.len(), 2 * GOSSIP_KEY_LEN, "{key}");
        assert!(key.bytes().all(|b| b.is_ascii_hexdigit()), "{key}");
        assert_ne!(key, new_gossip_key(), "keys are random");
    }

    #[test]
    fn the_default_directory_prints_without_a_dot_component() {
        let dir = absolute(Path::new("./logcluster-dev")).expect("absolute");
        let cwd = std::env::current_dir().expect("current dir");
        assert_eq!(dir, cwd.join("logcluster-dev"));
        assert!(
            !dir.display().to_string().contains("/./"),
            "{}",
            dir.display()
        );
        let kept = Path::new("/already/absolute");
        assert_eq!(absolute(kept).expect("absolute"), kept);
    }
}
