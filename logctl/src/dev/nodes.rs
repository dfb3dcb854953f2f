//! The `lognode` children of a dev cluster, and when to start again one that exited.

use std::collections::BTreeMap;
use std::process::{Child, ExitStatus};
use std::time::{Duration, Instant};

/// How long a node stops after SIGTERM before it is killed.
const STOP_PATIENCE: Duration = Duration::from_secs(20);
/// How often exits are looked for (`Child` has no async wait).
const EXIT_POLL: Duration = Duration::from_millis(250);
/// A node that ran this long before it exited is restarted after the base delay again.
const STABLE_RUN: Duration = Duration::from_secs(60);
/// The longest wait before a restart of a node that keeps exiting.
const MAX_RESTART_DELAY: Duration = Duration::from_secs(60);

/// A running node.
struct Running {
    id: u8,
    child: Child,
    since: Instant,
}

/// The running `lognode` children.
#[derive(Default)]
pub(super) struct Nodes {
    children: Vec<Running>,
}

impl Nodes {
    /// Records node `id`, just spawned.
    pub(super) fn started(&mut self, id: u8, child: Child) {
        self.children.push(Running {
            id,
            child,
            since: Instant::now(),
        });
    }

    /// How many nodes run.
    pub(super) fn running(&self) -> usize {
        self.children.len()
    }

    /// A node that has exited, if any (it stays recorded).
    pub(super) fn try_exited(&mut self) -> Option<(u8, ExitStatus)> {
        self.children.iter_mut().find_map(|n| {
            n.child
                .try_wait()
                .ok()
                .flatten()
                .map(|status| (n.id, status))
        })
    }

    /// Resolves when a node exits, with how long it ran; it is no longer recorded.
    pub(super) async fn next_exit(&mut self) -> (u8, ExitStatus, Duration) {
        loop {
            let exited = self
                .children
                .iter_mut()
                .position(|n| n.child.try_wait().ok().flatten().is_some());
            if let Some(at) = exited {
                let mut node = self.children.remove(at);
                // Reaped above: `wait` returns the status at once.
                let status = node.child.wait();
                if let Ok(status) = status {
                    return (node.id, status, node.since.elapsed());
                }
            }
            tokio::time::sleep(EXIT_POLL).await;
        }
    }

    /// SIGTERM to every node (highest id first, so leadership settles on the survivors), then
    /// waits; a node still running after the patience is killed.
    // NB: the crate's only unsafe code: std can send SIGKILL to a child, not SIGTERM.
    #[allow(unsafe_code)]
    pub(super) fn stop_all(&mut self) {
        self.children.sort_by_key(|n| n.id);
        for Running { id, child, .. } in self.children.iter_mut().rev() {
            if child.try_wait().ok().flatten().is_some() {
                continue;
            }
            if let Ok(pid) = i32::try_from(child.id()) {
                // SAFETY: kill(2) with a pid we spawned and have not reaped.
                unsafe {
                    libc::kill(pid, libc::SIGTERM);
                }
            }
            let deadline = Instant::now() + STOP_PATIENCE;
            loop {
                match child.try_wait() {
                    Ok(Some(status)) => {
                        say!("  node {id} stopped ({status})");
                        break;
                    }
                    Ok(None) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(100));
                    }
                    _ => {
                        say!("  node {id} did not stop within {STOP_PATIENCE:?}; killing it");
                        let _ = child.kill();
                        let _ = child.wait();
                        break;
                    }
                }
            }
        }
    }
}

impl Drop for Nodes {
    fn drop(&mut self) {
        // Never leave orphans behind (e.g. after a panic).
        for Running { child, .. } in &mut self.children {
            if child.try_wait().ok().flatten().is_none() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// Restarts that are due, with a delay per node that doubles while the node keeps exiting
/// soon after it started (a node that cannot start is not restarted in a tight loop).
pub(super) struct Restarts {
    base: Duration,
    delay: BTreeMap<u8, Duration>,
    pending: Vec<(u8, Instant)>,
}

impl Restarts {
    pub(super) fn new(base: Duration) -> Self {
        Restarts {
            base,
            delay: BTreeMap::new(),
            pending: Vec::new(),
        }
    }

    /// Schedules a restart of node `id`, which ran for `ran_for`; returns the delay.
    pub(super) fn schedule(&mut self, id: u8, ran_for: Duration) -> Duration {
        let delay = match self.delay.get(&id) {
            Some(previous) if ran_for < STABLE_RUN => (*previous * 2).min(MAX_RESTART_DELAY),
            _ => self.base,
        };
        self.delay.insert(id, delay);
        self.pending.push((id, Instant::now() + delay));
        delay
    }

    /// When the next restart is due.
    pub(super) fn next_due(&self) -> Option<Instant> {
        self.pending.iter().map(|(_, at)| *at).min()
    }

    /// The nodes whose restart is due now.
    pub(super) fn take_due(&mut self) -> Vec<u8> {
        let now = Instant::now();
        let (due, later) = self.pending.iter().partition(|(_, at)| *at <= now);
        self.pending = later;
        due.into_iter().map(|(id, _)| id).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_that_keeps_exiting_waits_longer_each_time_and_a_stable_one_starts_over() {
        let mut restarts = Restarts::new(Duration::from_secs(2));
        assert_eq!(
            restarts.schedule(2, Duration::from_secs(1)),
            Duration::from_secs(2)
        );
        assert_eq!(
            restarts.schedule(2, Duration::from_secs(1)),
            Duration::from_secs(4)
        );
        assert_eq!(
            restarts.schedule(2, Duration::from_secs(1)),
            Duration::from_secs(8)
        );
        for _ in 0..10 {
            restarts.schedule(2, Duration::ZERO);
        }
        assert_eq!(
            restarts.schedule(2, Duration::ZERO),
            MAX_RESTART_DELAY,
            "capped"
        );
        assert_eq!(
            restarts.schedule(2, STABLE_RUN),
            Duration::from_secs(2),
            "ran a minute: back to the base delay"
        );
        // Another node has its own delay.
        assert_eq!(restarts.schedule(3, Duration::ZERO), Duration::from_secs(2));
    }

    #[test]
    fn only_due_restarts_are_taken() {
        let mut restarts = Restarts::new(Duration::ZERO);
        restarts.schedule(1, Duration::ZERO);
        restarts.base = Duration::from_secs(3600);
        restarts.schedule(3, STABLE_RUN);
        assert_eq!(restarts.take_due(), vec![1]);
        assert!(restarts.next_due().is_some_and(|at| at > Instant::now()));
        assert!(restarts.take_due().is_empty());
    }
}
