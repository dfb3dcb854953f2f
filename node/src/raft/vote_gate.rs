//! A node whose data directory is new must not vote until it has caught up (ARCHITECTURE
//! decision 4).
//!
//! Node ids are stable per StatefulSet ordinal, so a voter whose volume was lost comes back with
//! the same id and an empty log. Raft's vote rule ("grant if the candidate's log is at least as
//! up to date as mine") then lets it vote for *any* candidate — including one that lacks entries
//! the cluster committed with this node's help. With its vote such a candidate can win, and
//! committed records are lost. So a node that starts with no Raft state at all keeps a marker
//! file and refuses votes for candidates whose log holds anything beyond openraft's term-0
//! `initialize` entry, until it has received an append from a leader whose commit index its log
//! covers. The marker survives restarts, so a node that crashes half-way through catching up
//! still does not vote. Candidates whose log is only the `initialize` entry are a brand-new
//! cluster's first election: every member is new then, and refusing would elect nobody.
//! Initializing a cluster on this node (`--bootstrap`, admin `Initialize`) opens the gate: its
//! log is by definition the cluster's whole history.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use super::types::LogId;

/// File in the data directory that exists while the node has not caught up.
pub const MARKER: &str = "CATCHING_UP";

/// Whether this node may grant votes; see the module documentation.
#[derive(Debug)]
pub struct VoteGate {
    node_id: u64,
    open: AtomicBool,
    marker: PathBuf,
}

impl VoteGate {
    /// Opens the gate of a node starting on `data_dir`: closed when the node has no Raft state
    /// (`fresh`, a marker is written) or when an earlier run left the marker behind.
    pub fn load(node_id: u64, data_dir: &Path, fresh: bool) -> io::Result<Self> {
        let marker = data_dir.join(MARKER);
        if fresh && !marker.exists() {
            std::fs::write(
                &marker,
                b"this node has not caught up with its cluster yet\n",
            )?;
            std::fs::File::open(data_dir)?.sync_all()?;
        }
        let open = !marker.exists();
        if !open {
            tracing::info!(
                node_id,
                "new data directory: this node does not vote until it has caught up"
            );
        }
        Ok(VoteGate {
            node_id,
            open: AtomicBool::new(open),
            marker,
        })
    }

    /// Whether this node votes freely (it is not catching up).
    pub fn is_open(&self) -> bool {
        self.open.load(Ordering::Acquire)
    }

    /// Whether a vote request from a candidate whose last log id is `candidate_last` may be
    /// considered at all (Raft's own rules still apply after this).
    pub fn admits(&self, candidate_last: Option<&LogId>) -> bool {
        self.open.load(Ordering::Acquire) || candidate_last.is_none_or(|id| id.leader_id.term == 0)
    }

    /// After an append from the leader succeeded: opens the gate once this node's log reaches
    /// the commit index the leader sent.
    pub fn observe_append(&self, leader_commit: Option<u64>, last_log_index: Option<u64>) {
        if self.open.load(Ordering::Acquire) {
            return;
        }
        if let (Some(commit), Some(last)) = (leader_commit, last_log_index)
            && last >= commit
        {
            self.open("caught up with the leader's commit index");
        }
    }

    /// Opens the gate for good (the marker is removed).
    pub fn open(&self, why: &str) {
        if self.open.swap(true, Ordering::AcqRel) {
            return;
        }
        match std::fs::remove_file(&self.marker) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            // Still open for this run; the next start finds the marker and waits to catch up
            // again, which is safe.
            Err(e) => {
                tracing::warn!(error = %e, marker = %self.marker.display(), "cannot remove the catching-up marker")
            }
        }
        if let Some(dir) = self.marker.parent()
            && let Err(e) = std::fs::File::open(dir).and_then(|d| d.sync_all())
        {
            tracing::warn!(error = %e, "cannot sync the data directory");
        }
        tracing::info!(node_id = self.node_id, why, "this node now votes");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::types::log_id;

    #[test]
    fn a_new_node_votes_only_in_a_new_clusters_first_election_until_it_caught_up() {
        let dir = tempfile::tempdir().expect("tempdir");
        let gate = VoteGate::load(3, dir.path(), true).expect("gate");
        assert!(dir.path().join(MARKER).exists());
        assert!(
            gate.admits(Some(&log_id(0, 0))),
            "a new cluster's first election"
        );
        assert!(gate.admits(None));
        assert!(
            !gate.admits(Some(&log_id(2, 40))),
            "a candidate with history"
        );

        gate.observe_append(Some(100), Some(60));
        assert!(
            !gate.admits(Some(&log_id(2, 40))),
            "still behind the leader's commit"
        );
        gate.observe_append(None, Some(60));
        assert!(!gate.admits(Some(&log_id(2, 40))));
        gate.observe_append(Some(100), Some(100));
        assert!(gate.admits(Some(&log_id(2, 40))));
        assert!(!dir.path().join(MARKER).exists());
    }

    #[test]
    fn the_marker_keeps_a_restarted_node_from_voting_and_old_nodes_vote() {
        let dir = tempfile::tempdir().expect("tempdir");
        drop(VoteGate::load(3, dir.path(), true).expect("gate"));
        // Restarted half-way: it has some log now, but the marker remains.
        let again = VoteGate::load(3, dir.path(), false).expect("gate");
        assert!(!again.admits(Some(&log_id(2, 40))));
        again.open("initialized here");
        assert!(again.admits(Some(&log_id(2, 40))));

        let old = tempfile::tempdir().expect("tempdir");
        let gate = VoteGate::load(1, old.path(), false).expect("gate");
        assert!(gate.admits(Some(&log_id(7, 700))));
        assert!(!old.path().join(MARKER).exists());
    }
}
