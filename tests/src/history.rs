//! A client-side history of a run and the checker for the properties every cluster test
//! checks (P1–P8 of docs/testing.md).
//!
//! Every produce is recorded as invoke + complete with a monotonic timestamp and an outcome:
//! acknowledged with an offset, definitely failed (the server said nothing was written), or
//! indeterminate (a timeout or broken connection after the request was sent). Values are unique
//! (`"{client}-{seq}"`). After the run, the committed log is read back from every node and the
//! checker compares the history with what the nodes hold.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How a produce ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Acknowledged at this offset.
    Acked(u64),
    /// The cluster said it was not written.
    Failed,
    /// Unknown whether it was written.
    Indeterminate,
}

/// One produce of the history.
#[derive(Debug, Clone)]
pub struct Operation {
    pub client: u32,
    pub value: String,
    pub invoked: Duration,
    pub completed: Duration,
    pub outcome: Outcome,
}

/// The history of a run, shared by its clients.
pub struct History {
    start: Instant,
    operations: Mutex<Vec<Operation>>,
}

impl Default for History {
    fn default() -> Self {
        Self::new()
    }
}

impl History {
    pub fn new() -> Self {
        History {
            start: Instant::now(),
            operations: Mutex::new(Vec::new()),
        }
    }

    /// Time since the history started (the clock every operation uses).
    pub fn now(&self) -> Duration {
        self.start.elapsed()
    }

    /// Records a completed operation.
    pub fn record(&self, client: u32, value: String, invoked: Duration, outcome: Outcome) {
        let completed = self.now();
        let operation = Operation {
            client,
            value,
            invoked,
            completed,
            outcome,
        };
        match self.operations.lock() {
            Ok(mut operations) => operations.push(operation),
            Err(poisoned) => poisoned.into_inner().push(operation),
        }
    }

    /// Every operation so far.
    pub fn operations(&self) -> Vec<Operation> {
        match self.operations.lock() {
            Ok(operations) => operations.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Acknowledged operations completed in `[from, to)`.
    pub fn acked_between(&self, from: Duration, to: Duration) -> usize {
        self.operations()
            .iter()
            .filter(|op| {
                matches!(op.outcome, Outcome::Acked(_)) && op.completed >= from && op.completed < to
            })
            .count()
    }

    /// Acknowledged operations *invoked* at or after `since`. Unlike [`History::acked_between`],
    /// this never counts an answer that was already on its way when `since` came (e.g. from a
    /// leader killed at `since`): only servers alive after `since` can have answered these.
    pub fn acked_invoked_since(&self, since: Duration) -> usize {
        self.operations()
            .iter()
            .filter(|op| matches!(op.outcome, Outcome::Acked(_)) && op.invoked >= since)
            .count()
    }

    /// Waits until at least `count` produces have been acknowledged since `since` (bounded).
    pub async fn wait_for_acks(
        &self,
        since: Duration,
        count: usize,
        timeout: Duration,
    ) -> Result<(), String> {
        self.wait_until_counted(count, timeout, "produces acknowledged", |h| {
            h.acked_between(since, Duration::MAX)
        })
        .await
    }

    /// Waits until at least `count` produces *invoked* at or after `since` have been
    /// acknowledged (bounded): after a fault that ended at `since`, these were answered by a
    /// cluster that works again.
    pub async fn wait_for_acks_invoked_since(
        &self,
        since: Duration,
        count: usize,
        timeout: Duration,
    ) -> Result<(), String> {
        let what = format!("produces invoked since {since:?} acknowledged");
        self.wait_until_counted(count, timeout, &what, |h| h.acked_invoked_since(since))
            .await
    }

    async fn wait_until_counted(
        &self,
        count: usize,
        timeout: Duration,
        what: &str,
        counted: impl Fn(&History) -> usize,
    ) -> Result<(), String> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let n = counted(self);
            if n >= count {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                return Err(format!("only {n} of {count} {what} within {timeout:?}"));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// When the first operation invoked at or after `since` was acknowledged.
    pub fn first_ack_invoked_since(&self, since: Duration) -> Option<Duration> {
        self.operations()
            .iter()
            .filter(|op| matches!(op.outcome, Outcome::Acked(_)) && op.invoked >= since)
            .map(|op| op.completed)
            .min()
    }
}

/// The committed data records one node holds, in log order: (offset, value).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeLog {
    pub node: String,
    pub records: Vec<(u64, String)>,
}

/// A violated property, with what shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub property: &'static str,
    pub detail: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.property, self.detail)
    }
}

/// Counts of a checked history, for reports.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    pub acked: usize,
    pub failed: usize,
    pub indeterminate: usize,
    pub indeterminate_found: usize,
    pub records: usize,
}

/// Checks P1–P7 of a history against the logs read back from every node after healing, plus
/// the order a live consumer saw (P6). Returns every violation, not just the first.
pub fn check(
    operations: &[Operation],
    nodes: &[NodeLog],
    consumer_seen: Option<&[(u64, String)]>,
) -> Result<Summary, Vec<Violation>> {
    let mut violations = Vec::new();
    let mut violation = |property: &'static str, detail: String| {
        if violations.len() < 50 {
            violations.push(Violation { property, detail });
        }
    };

    // P6 (per node): offsets strictly increase in log order.
    for node in nodes {
        for pair in node.records.windows(2) {
            if pair[1].0 <= pair[0].0 {
                violation(
                    "P6",
                    format!("{}: offset {} follows {}", node.node, pair[1].0, pair[0].0),
                );
            }
        }
    }

    // P7: replicas converge.
    if let Some(first) = nodes.first() {
        for node in &nodes[1..] {
            if node.records != first.records {
                let diverge = first
                    .records
                    .iter()
                    .zip(&node.records)
                    .position(|(a, b)| a != b)
                    .unwrap_or(first.records.len().min(node.records.len()));
                violation(
                    "P7",
                    format!(
                        "{} ({} records) and {} ({} records) differ from position {diverge}",
                        first.node,
                        first.records.len(),
                        node.node,
                        node.records.len()
                    ),
                );
            }
        }
    }

    // P2 and P3 over everything any node holds.
    let mut value_at: BTreeMap<u64, String> = BTreeMap::new();
    for node in nodes {
        let mut seen_here: HashSet<&str> = HashSet::new();
        for (offset, value) in &node.records {
            if let Some(other) = value_at.insert(*offset, value.clone())
                && &other != value
            {
                violation(
                    "P2",
                    format!("offset {offset} holds {other:?} and {value:?}"),
                );
            }
            if !seen_here.insert(value.as_str()) {
                violation(
                    "P3",
                    format!("{}: value {value:?} appears more than once", node.node),
                );
            }
        }
    }
    let offset_of: HashMap<&str, u64> = value_at.iter().map(|(o, v)| (v.as_str(), *o)).collect();

    let mut summary = Summary {
        records: value_at.len(),
        ..Summary::default()
    };
    for op in operations {
        match op.outcome {
            Outcome::Acked(offset) => {
                summary.acked += 1;
                // P2: the ack and the log agree.
                match value_at.get(&offset) {
                    Some(value) if value == &op.value => {}
                    Some(value) => violation(
                        "P2",
                        format!(
                            "{:?} was acked at offset {offset}, which holds {value:?}",
                            op.value
                        ),
                    ),
                    None => {}
                }
                // P1: every node holds it at that offset.
                for node in nodes {
                    if node
                        .records
                        .binary_search_by_key(&offset, |(o, _)| *o)
                        .is_err()
                    {
                        violation(
                            "P1",
                            format!(
                                "{:?} acked at offset {offset} is missing on {}",
                                op.value, node.node
                            ),
                        );
                    }
                }
            }
            Outcome::Failed => {
                summary.failed += 1;
                // P4: no aborted reads.
                if let Some(offset) = offset_of.get(op.value.as_str()) {
                    violation(
                        "P4",
                        format!("{:?} definitely failed but is at offset {offset}", op.value),
                    );
                }
            }
            Outcome::Indeterminate => {
                summary.indeterminate += 1;
                if offset_of.contains_key(op.value.as_str()) {
                    summary.indeterminate_found += 1;
                }
            }
        }
    }

    // P5: real-time order of acknowledged produces.
    let mut acked: Vec<(&Operation, u64)> = operations
        .iter()
        .filter_map(|op| match op.outcome {
            Outcome::Acked(offset) => Some((op, offset)),
            _ => None,
        })
        .collect();
    acked.sort_by_key(|(op, _)| op.completed);
    // For each op B, every op A that completed before B was invoked must have a smaller offset:
    // compare B with the largest offset among ops completed before B's invocation.
    let mut by_invocation: Vec<(&Operation, u64)> = acked.clone();
    by_invocation.sort_by_key(|(op, _)| op.invoked);
    let mut max_before: Option<(u64, &str)> = None;
    let mut next = 0;
    for (b, b_offset) in by_invocation {
        while next < acked.len() && acked[next].0.completed < b.invoked {
            let (a, a_offset) = acked[next];
            if max_before.is_none_or(|(m, _)| a_offset > m) {
                max_before = Some((a_offset, a.value.as_str()));
            }
            next += 1;
        }
        if let Some((a_offset, a_value)) = max_before
            && a_offset >= b_offset
        {
            violation(
                "P5",
                format!(
                    "{a_value:?} (offset {a_offset}) completed before {:?} started, but {:?} got offset {b_offset}",
                    b.value, b.value
                ),
            );
        }
    }

    // P6 (consumer): a live consumer saw data records in log order without skipping any.
    if let (Some(seen), Some(reference)) = (consumer_seen, nodes.first()) {
        let expected: Vec<&(u64, String)> = reference
            .records
            .iter()
            .skip_while(|(offset, _)| seen.first().is_some_and(|(first, _)| offset < first))
            .take(seen.len())
            .collect();
        for (i, (got, want)) in seen.iter().zip(expected.iter()).enumerate() {
            if got != *want {
                violation(
                    "P6",
                    format!("the consumer's record {i} was {got:?}, the log has {want:?} there"),
                );
                break;
            }
        }
        if expected.len() < seen.len() {
            violation(
                "P6",
                format!(
                    "the consumer saw {} records, the log holds {} from there",
                    seen.len(),
                    expected.len()
                ),
            );
        }
    }

    if violations.is_empty() {
        Ok(summary)
    } else {
        Err(violations)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(value: &str, invoked: u64, completed: u64, outcome: Outcome) -> Operation {
        Operation {
            client: 0,
            value: value.into(),
            invoked: Duration::from_millis(invoked),
            completed: Duration::from_millis(completed),
            outcome,
        }
    }

    fn node(name: &str, records: &[(u64, &str)]) -> NodeLog {
        NodeLog {
            node: name.into(),
            records: records.iter().map(|(o, v)| (*o, v.to_string())).collect(),
        }
    }

    fn properties(result: Result<Summary, Vec<Violation>>) -> Vec<&'static str> {
        match result {
            Ok(_) => vec![],
            Err(violations) => violations.iter().map(|v| v.property).collect(),
        }
    }

    #[test]
    fn a_clean_history_passes_with_gaps_and_indeterminate_operations() {
        let ops = [
            op("a", 0, 1, Outcome::Acked(1)),
            op("b", 2, 3, Outcome::Acked(3)), // offset 2 is a Raft-internal entry
            op("c", 2, 9, Outcome::Indeterminate),
            op("d", 4, 5, Outcome::Failed),
        ];
        let logs = [
            node("n1", &[(1, "a"), (3, "b"), (4, "c")]),
            node("n2", &[(1, "a"), (3, "b"), (4, "c")]),
        ];
        let summary = check(&ops, &logs, Some(&[(3, "b".into()), (4, "c".into())])).expect("clean");
        assert_eq!(summary.acked, 2);
        assert_eq!(summary.indeterminate_found, 1);
    }

    #[test]
    fn a_lost_acknowledged_write_violates_p1() {
        let ops = [op("a", 0, 1, Outcome::Acked(0))];
        let logs = [node("n1", &[(0, "a")]), node("n2", &[])];
        let found = properties(check(&ops, &logs, None));
        assert!(found.contains(&"P1") && found.contains(&"P7"), "{found:?}");
    }

    #[test]
    fn two_values_at_one_offset_violate_p2() {
        let ops = [op("a", 0, 1, Outcome::Acked(0))];
        let logs = [node("n1", &[(0, "b")])];
        assert!(properties(check(&ops, &logs, None)).contains(&"P2"));
        let logs = [node("n1", &[(0, "a")]), node("n2", &[(0, "x")])];
        assert!(properties(check(&ops, &logs, None)).contains(&"P2"));
    }

    #[test]
    fn a_duplicated_value_violates_p3() {
        let logs = [node("n1", &[(0, "a"), (1, "a")])];
        assert_eq!(properties(check(&[], &logs, None)), vec!["P3"]);
    }

    #[test]
    fn reading_a_failed_write_violates_p4() {
        let ops = [op("a", 0, 1, Outcome::Failed)];
        let logs = [node("n1", &[(0, "a")])];
        assert_eq!(properties(check(&ops, &logs, None)), vec!["P4"]);
    }

    #[test]
    fn an_earlier_completed_write_with_a_later_offset_violates_p5() {
        let ops = [
            op("a", 0, 1, Outcome::Acked(5)),
            op("b", 2, 3, Outcome::Acked(4)),
        ];
        let logs = [node("n1", &[(4, "b"), (5, "a")])];
        assert_eq!(properties(check(&ops, &logs, None)), vec!["P5"]);
        // Concurrent operations may be ordered either way.
        let ops = [
            op("a", 0, 3, Outcome::Acked(5)),
            op("b", 1, 2, Outcome::Acked(4)),
        ];
        assert!(properties(check(&ops, &logs, None)).is_empty());
    }

    #[test]
    fn out_of_order_logs_and_skipping_consumers_violate_p6() {
        let logs = [node("n1", &[(2, "a"), (1, "b")])];
        assert!(properties(check(&[], &logs, None)).contains(&"P6"));
        let logs = [node("n1", &[(1, "a"), (2, "b"), (3, "c")])];
        let skipped = [(1, "a".to_string()), (3, "c".to_string())];
        assert_eq!(properties(check(&[], &logs, Some(&skipped))), vec!["P6"]);
    }

    #[test]
    fn diverged_replicas_violate_p7() {
        let logs = [node("n1", &[(1, "a")]), node("n2", &[(1, "a"), (2, "b")])];
        assert_eq!(properties(check(&[], &logs, None)), vec!["P7"]);
    }

    #[test]
    fn progress_is_counted_per_window() {
        let history = History::new();
        history.record(0, "a".into(), Duration::ZERO, Outcome::Acked(0));
        history.record(0, "b".into(), Duration::ZERO, Outcome::Failed);
        assert_eq!(
            history.acked_between(Duration::ZERO, Duration::from_secs(3600)),
            1
        );
    }
}
