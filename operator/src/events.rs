//! Publishing Events without losing their notes.
//!
//! kube's [`Recorder`] folds a repeated Event into the first one (a `series` count) by type,
//! reason, action and the objects involved — not by note. The operator's notes carry the detail
//! (`remove node 3 from the voters`, `StatefulSet demo replicas 4 → 5`), so with one `Recorder`
//! a scale-down from 5 to 3 showed a single `NodeRemoved` Event "remove node 4 from the voters"
//! with a count of 2, and node 3's removal was never reported. [`EventPublisher`] keeps one
//! `Recorder` per distinct (type, reason, action, note): an identical repeat still becomes a
//! series, a different note becomes its own Event. Recorders unused for longer than kube's own
//! cache lifetime are dropped, so the map stays small.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};

/// How long an idle per-note recorder is kept (kube caches an Event for 6 minutes).
const IDLE: Duration = Duration::from_secs(6 * 60);

/// Publishes Events; see the module documentation.
pub struct EventPublisher {
    client: kube::Client,
    reporter: Reporter,
    recorders: Mutex<HashMap<String, (Recorder, Instant)>>,
}

/// Events with the same key are one Event with a count; any difference makes a new one.
fn dedup_key(event: &Event) -> String {
    let type_ = match event.type_ {
        EventType::Normal => "Normal",
        EventType::Warning => "Warning",
    };
    format!(
        "{type_}\n{}\n{}\n{}",
        event.reason,
        event.action,
        event.note.as_deref().unwrap_or_default()
    )
}

impl EventPublisher {
    /// A publisher reporting as `reporter`.
    pub fn new(client: kube::Client, reporter: Reporter) -> Self {
        EventPublisher {
            client,
            reporter,
            recorders: Mutex::default(),
        }
    }

    /// Publishes `event` about `regarding`.
    pub async fn publish(
        &self,
        event: &Event,
        regarding: &ObjectReference,
    ) -> Result<(), kube::Error> {
        let recorder = {
            let mut recorders = self.recorders.lock().unwrap_or_else(|e| e.into_inner());
            let now = Instant::now();
            recorders.retain(|_, (_, used)| now.duration_since(*used) < IDLE);
            let entry = recorders.entry(dedup_key(event)).or_insert_with(|| {
                (
                    Recorder::new(self.client.clone(), self.reporter.clone()),
                    now,
                )
            });
            entry.1 = now;
            entry.0.clone()
        };
        recorder.publish(event, regarding).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(reason: &str, note: &str) -> Event {
        Event {
            type_: EventType::Normal,
            reason: reason.to_owned(),
            note: Some(note.to_owned()),
            action: "Scale".to_owned(),
            secondary: None,
        }
    }

    #[test]
    fn only_identical_events_share_a_key() {
        let remove_4 = event("NodeRemoved", "remove node 4 from the voters");
        let remove_3 = event("NodeRemoved", "remove node 3 from the voters");
        assert_eq!(
            dedup_key(&remove_4),
            dedup_key(&event("NodeRemoved", "remove node 4 from the voters"))
        );
        assert_ne!(dedup_key(&remove_4), dedup_key(&remove_3));
        assert_ne!(
            dedup_key(&remove_4),
            dedup_key(&event("NodeAdded", "remove node 4 from the voters"))
        );
        let mut warning = event("NodeRemoved", "remove node 4 from the voters");
        warning.type_ = EventType::Warning;
        assert_ne!(dedup_key(&remove_4), dedup_key(&warning));
        let mut no_note = event("NodeRemoved", "");
        no_note.note = None;
        assert_eq!(dedup_key(&no_note), dedup_key(&event("NodeRemoved", "")));
    }
}
