//! `logctl dev`, the README's run command: it forms a cluster, a produce/consume round trip
//! works against it with the commands it prints, a node killed under it is restarted while the
//! others keep serving, and Ctrl-C (SIGINT) stops every node process. Loopback subnet 30.

use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use logcluster_tests::cluster::{logctl_binary, lognode_binary};
use logcluster_tests::http;

const SUBNET: u8 = 30;

/// Processes whose command line mentions `needle` (the dev directory).
fn processes_mentioning(needle: &str) -> Vec<(u32, String)> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return found;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == std::process::id() {
            continue;
        }
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        // Zombies have an empty command line and are no longer running.
        if cmdline.contains(needle) {
            found.push((pid, cmdline));
        }
    }
    found
}

/// Runs logctl against the dev cluster (its addresses and certificates in the environment).
fn logctl_output(dir: &Path, args: &[&str]) -> std::process::Output {
    let addrs: Vec<String> = (1..=3)
        .map(|i| format!("127.0.{SUBNET}.{i}:8400"))
        .collect();
    Command::new(logctl_binary().expect("logctl"))
        .args(args)
        .env("LOGCLUSTER_ADDR", addrs.join(","))
        .env("LOGCLUSTER_CA", dir.join("certs/ca.pem"))
        .env("LOGCLUSTER_CERT", dir.join("certs/dev.pem"))
        .env("LOGCLUSTER_KEY", dir.join("certs/dev-key.pem"))
        .output()
        .expect("run logctl")
}

/// Runs logctl, which must succeed; returns its standard output.
fn logctl(dir: &Path, args: &[&str]) -> String {
    let output = logctl_output(dir, args);
    assert!(
        output.status.success(),
        "logctl {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn logctl_dev_serves_a_round_trip_restarts_a_killed_node_and_ctrl_c_stops_every_node() {
    let dir = tempfile::Builder::new()
        .prefix("logctl-dev-")
        .tempdir()
        .expect("tempdir");
    let dev_dir = dir.path().join("dev");
    let dev_dir_text = dev_dir.display().to_string();
    let mut dev = Command::new(logctl_binary().expect("logctl"))
        .args([
            "dev",
            "--nodes",
            "3",
            "--subnet",
            &SUBNET.to_string(),
            "--dir",
        ])
        .arg(&dev_dir)
        .arg("--lognode")
        .arg(lognode_binary().expect("lognode"))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start logctl dev");
    let stdout = dev.stdout.take().expect("stdout");
    let (lines_tx, lines) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                return;
            }
        }
    });

    // Wait for the banner with the copy-paste commands.
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut printed = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) => {
                let done = line.contains("logctl admin status");
                printed.push(line);
                if done {
                    break;
                }
            }
            Err(_) => {
                let _ = dev.kill();
                panic!(
                    "logctl dev did not report a ready cluster:\n{}",
                    printed.join("\n")
                );
            }
        }
    }
    let banner = printed.join("\n");
    assert!(banner.contains("cluster ready: leader is node"), "{banner}");
    assert!(banner.contains("3 voters"), "{banner}");
    assert!(
        banner.contains(&format!("export LOGCLUSTER_CA={dev_dir_text}/certs/ca.pem")),
        "{banner}"
    );
    assert_eq!(
        processes_mentioning(&dev_dir_text).len(),
        4,
        "logctl dev and 3 nodes"
    );

    let offsets: Vec<u64> = logctl(&dev_dir, &["produce", "hello", "world"])
        .lines()
        .map(|l| l.trim().parse().expect("an offset per line"))
        .collect();
    assert_eq!(offsets.len(), 2);
    assert_eq!(offsets[1], offsets[0] + 1);
    let consumed = logctl(
        &dev_dir,
        &[
            "consume",
            "--from",
            &offsets[0].to_string(),
            "--limit",
            "2",
            "--format",
            "value",
        ],
    );
    assert_eq!(consumed.lines().collect::<Vec<_>>(), ["hello", "world"]);

    // `--connect-to` dials a name the client cannot reach as advertised (nothing listens on
    // localhost:9) at a node, and checks the node's certificate against that name ("localhost"
    // is on the dev certificate)...
    let node_1 = format!("127.0.{SUBNET}.1:8400");
    let servers = logctl(
        &dev_dir,
        &[
            "servers",
            "--addr",
            "localhost:9",
            "--connect-to",
            &format!("localhost:9={node_1}"),
        ],
    );
    assert!(servers.contains(&node_1), "{servers}");
    // ... so it cannot make the client accept a server under a name its certificate lacks.
    let refused = logctl_output(
        &dev_dir,
        &[
            "servers",
            "--addr",
            "elsewhere.example:8400",
            "--connect-to",
            &format!("elsewhere.example:8400={node_1}"),
            "--retry-deadline",
            "2s",
        ],
    );
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success() && stderr.contains("certificate"),
        "a node answered as elsewhere.example: {stderr}"
    );
    // A malformed map is refused before anything is dialed.
    let malformed = logctl_output(&dev_dir, &["servers", "--connect-to", "localhost:9"]);
    let stderr = String::from_utf8_lossy(&malformed.stderr);
    assert!(
        !malformed.status.success() && stderr.contains("--connect-to \"localhost:9\""),
        "{stderr}"
    );

    // Kill node 2 as a user trying a failover would: the others keep serving, logctl dev
    // reports the exit and starts the node again, and the node catches up.
    let node_2_pid = banner
        .lines()
        .find_map(|l| {
            l.strip_prefix("started node 2 (pid ")
                .and_then(|rest| rest.split(')').next())
        })
        .and_then(|pid| pid.parse::<i32>().ok())
        .unwrap_or_else(|| panic!("no pid of node 2 in the banner:\n{banner}"));
    // SAFETY: kill(2) on a node process logctl dev started (its child, not yet reaped).
    unsafe {
        libc::kill(node_2_pid, libc::SIGKILL);
    }
    let mut reported = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    let restarted = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) => {
                let done = line.starts_with("restarted node 2 (pid ");
                reported.push(line);
                if done {
                    break reported.join("\n");
                }
            }
            Err(_) => {
                let _ = dev.kill();
                panic!(
                    "logctl dev did not restart node 2:\n{}",
                    reported.join("\n")
                );
            }
        }
    };
    assert!(
        restarted.contains("node 2 exited (signal: 9")
            && restarted.contains("the others keep running"),
        "{restarted}"
    );
    assert!(
        dev.try_wait().expect("wait").is_none(),
        "logctl dev ended when a node exited"
    );
    // Produced while node 2 may still be starting: 2 of 3 voters are a quorum.
    let after = logctl(&dev_dir, &["produce", "after the kill"]);
    let after: u64 = after.trim().parse().expect("an offset");
    let followed = logctl(
        &dev_dir,
        &[
            "consume",
            "--follow",
            "--from",
            &after.to_string(),
            "--limit",
            "1",
            "--format",
            "value",
        ],
    );
    assert_eq!(followed.trim(), "after the kill");
    // The restarted node rejoins: its readiness probe passes again (bounded wait on the probe).
    let node_2_http = format!("127.0.{SUBNET}.2:8402");
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        match http::get(&node_2_http, "/readyz") {
            Ok((200, _)) => break,
            answer if Instant::now() > deadline => {
                let _ = dev.kill();
                panic!("the restarted node 2 never became ready again: {answer:?}");
            }
            _ => std::thread::sleep(Duration::from_millis(200)),
        }
    }
    assert_eq!(
        processes_mentioning(&dev_dir_text).len(),
        4,
        "logctl dev and 3 nodes after the restart"
    );

    // Ctrl-C.
    let pid = i32::try_from(dev.id()).expect("pid");
    // SAFETY: kill(2) on our own unreaped child.
    unsafe {
        libc::kill(pid, libc::SIGINT);
    }
    let deadline = Instant::now() + Duration::from_secs(90);
    let status = loop {
        if let Some(status) = dev.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = dev.kill();
            panic!("logctl dev did not stop within 90 s of SIGINT");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "logctl dev exited with {status}");
    let left = processes_mentioning(&dev_dir_text);
    assert!(left.is_empty(), "processes left behind: {left:?}");
    let rest: Vec<String> = lines.try_iter().collect();
    assert!(
        rest.iter()
            .any(|l| l.contains("stopped; the data stays in")),
        "{}",
        rest.join("\n")
    );
}
