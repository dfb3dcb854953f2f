//! Child processes that cannot outlive the test process.
//!
//! Three layers make sure no etcd or kube-apiserver is left behind:
//! 1. [`ChildProcess`]'s `Drop` signals the child's process group (SIGTERM, then SIGKILL) and
//!    reaps it — the normal path, panics included (unwinding runs `Drop`).
//! 2. Each child asks the kernel for SIGKILL when its parent goes away (`PR_SET_PDEATHSIG`), for
//!    the paths where `Drop` never runs: `process::exit`, an abort, a SIGKILL of the test binary.
//! 3. `PR_SET_PDEATHSIG` fires when the *thread* that forked the child exits, not the process, and
//!    libtest runs every test on its own short-lived thread. So every child is forked by one
//!    spawner thread that lives as long as the process (it only ever waits for requests).

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use super::{Error, Result};

/// How long a child gets to exit after SIGTERM before it is killed.
const TERM_GRACE: Duration = Duration::from_secs(10);

type SpawnReply = mpsc::Sender<io::Result<Child>>;

/// A running child process in its own process group, with its output in a log file.
#[derive(Debug)]
pub struct ChildProcess {
    name: String,
    child: Child,
    log: PathBuf,
}

impl ChildProcess {
    /// Starts `cmd` with stdout and stderr appended to `log`, in a new process group, with
    /// SIGKILL delivered to it if the test process dies.
    pub fn spawn(name: &str, mut cmd: Command, log: &Path) -> Result<Self> {
        let out =
            File::create(log).map_err(|e| Error::io(format!("creating {}", log.display()), e))?;
        let err = out
            .try_clone()
            .map_err(|e| Error::io(format!("opening {}", log.display()), e))?;
        cmd.stdin(Stdio::null()).stdout(out).stderr(err);
        let program = cmd.get_program().to_string_lossy().into_owned();
        let child = spawn_from_spawner_thread(cmd)
            .map_err(|e| Error::io(format!("starting {name} ({program})"), e))?;
        Ok(Self {
            name: name.to_owned(),
            child,
            log: log.to_owned(),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// `Some(status)` if the process has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// The last `lines` lines of the process's log, for error messages.
    pub fn log_tail(&self, lines: usize) -> String {
        log_tail(&self.log, lines)
    }

    /// SIGTERM to the group, SIGKILL after [`TERM_GRACE`], then reaps the child. Idempotent.
    pub fn stop(&mut self) {
        if self.exited().is_none() {
            signal_group(self.pid(), libc::SIGTERM);
            let deadline = Instant::now() + TERM_GRACE;
            while self.exited().is_none() && Instant::now() < deadline {
                thread::sleep(Duration::from_millis(50));
            }
        }
        // Also sweeps anything else left in the group (our binaries start none, but be sure).
        signal_group(self.pid(), libc::SIGKILL);
        let _ = self.child.wait();
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The last `lines` lines of a log file (empty if it cannot be read).
pub fn log_tail(path: &Path, lines: usize) -> String {
    log_tail_where(path, lines, |_| true)
}

/// The last `lines` lines of a log file that `keep` accepts (empty if it cannot be read).
pub(crate) fn log_tail_where(path: &Path, lines: usize, keep: impl Fn(&str) -> bool) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let kept: Vec<&str> = text.lines().filter(|line| keep(line)).collect();
    kept[kept.len().saturating_sub(lines)..].join("\n")
}

fn signal_group(pid: u32, signal: libc::c_int) {
    let Ok(pgid) = libc::pid_t::try_from(pid) else {
        return;
    };
    // SAFETY: kill(2) has no memory-safety preconditions. The child leads its own group (spawned
    // with `process_group(0)`) and is not yet reaped when this runs, so `-pgid` names only it
    // and processes it started; ESRCH (group already gone) is the expected, ignored outcome.
    unsafe {
        libc::kill(-pgid, signal);
    }
}

fn spawn_from_spawner_thread(cmd: Command) -> io::Result<Child> {
    static SPAWNER: OnceLock<mpsc::Sender<(Command, SpawnReply)>> = OnceLock::new();
    let spawner = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<(Command, SpawnReply)>();
        thread::Builder::new()
            .name("k8s-child-spawner".into())
            .spawn(move || {
                for (cmd, reply) in rx {
                    let _ = reply.send(spawn_with_parent_death_signal(cmd));
                }
            })
            .expect("starting the child-spawner thread");
        tx
    });
    let (reply_tx, reply_rx) = mpsc::channel();
    spawner
        .send((cmd, reply_tx))
        .map_err(|_| io::Error::other("child-spawner thread is gone"))?;
    reply_rx
        .recv()
        .map_err(|_| io::Error::other("child-spawner thread did not answer"))?
}

fn spawn_with_parent_death_signal(mut cmd: Command) -> io::Result<Child> {
    use std::os::unix::process::CommandExt;
    let parent = libc::pid_t::try_from(std::process::id()).map_err(io::Error::other)?;
    cmd.process_group(0);
    // SAFETY: the hook runs in the forked child before exec, where only async-signal-safe calls
    // are allowed: prctl(2), getppid(2) and _exit(2) are, and it allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(io::Error::last_os_error());
            }
            // The parent may have died between fork and prctl; then nobody would signal us.
            if libc::getppid() != parent {
                libc::_exit(1);
            }
            Ok(())
        });
    }
    cmd.spawn()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alive(pid: u32) -> bool {
        // A zombie still has a /proc entry; its state letter is Z.
        std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
            !s.rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z')
        })
    }

    #[test]
    fn drop_stops_a_child_that_ignores_sigterm() {
        let dir = tempfile::tempdir().unwrap();
        let mut cmd = Command::new("sh");
        cmd.args([
            "-c",
            "trap '' TERM; echo started; while :; do sleep 1; done",
        ]);
        let child = ChildProcess::spawn("stubborn", cmd, &dir.path().join("log")).unwrap();
        let pid = child.pid();
        assert!(alive(pid));
        drop(child);
        assert!(!alive(pid), "pid {pid} survived drop");
    }

    #[test]
    fn child_outlives_the_thread_that_asked_for_it() {
        // PR_SET_PDEATHSIG is per forking thread: a child started from a finished test thread
        // must keep running (it belongs to the spawner thread).
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("log");
        let mut child = thread::spawn(move || {
            let mut cmd = Command::new("sleep");
            cmd.arg("30");
            ChildProcess::spawn("sleeper", cmd, &log).unwrap()
        })
        .join()
        .unwrap();
        // Give a (wrongly) delivered death signal time to land before looking.
        thread::sleep(Duration::from_millis(200));
        assert_eq!(
            child.exited(),
            None,
            "child died with its requesting thread"
        );
    }

    #[test]
    fn children_die_when_the_test_process_aborts() {
        // Re-runs this test binary with only `abort_helper` selected: it starts a child and
        // aborts, so neither Drop nor atexit runs; only the parent-death signal can stop it.
        let out = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "k8s::process::tests::abort_helper",
                "--ignored",
                "--nocapture",
            ])
            .env("LOGCLUSTER_ABORT_HELPER", "1")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let pid: u32 = stdout
            .lines()
            .find_map(|l| l.strip_prefix("child-pid="))
            .unwrap_or_else(|| panic!("helper printed no pid: {stdout}\n{out:?}"))
            .parse()
            .unwrap();
        assert!(!out.status.success(), "helper should have aborted: {out:?}");
        let deadline = Instant::now() + Duration::from_secs(10);
        while alive(pid) {
            assert!(
                Instant::now() < deadline,
                "child {pid} outlived its aborted parent"
            );
            thread::sleep(Duration::from_millis(50));
        }
    }

    #[test]
    #[ignore = "helper process for children_die_when_the_test_process_aborts"]
    fn abort_helper() {
        use std::io::Write;
        if std::env::var_os("LOGCLUSTER_ABORT_HELPER").is_none() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let mut cmd = Command::new("sleep");
        cmd.arg("600");
        let child = ChildProcess::spawn("sleeper", cmd, &dir.path().join("log")).unwrap();
        println!("child-pid={}", child.pid());
        std::io::stdout().flush().unwrap();
        std::process::abort();
    }
}
