//! Group commit for Raft appends: one `fdatasync` covers every append that is waiting for one.
//!
//! [`LogStore::append`](super::log_store::LogStore) writes entries with
//! [`Log::append_unsynced`] (they are readable at once) and hands openraft's completion callback
//! to the [`Syncer`]. The syncer's thread takes every callback queued so far, calls
//! [`Log::sync`] once — which covers everything appended before the call, hence every queued
//! append — and only then completes the callbacks. While it syncs, new appends keep being
//! written and queue up for the next sync, so the disk is never idle under load and the number
//! of syncs per second is bounded by the disk, not by the number of writers.
//!
//! A failed sync completes every waiting callback with the error (openraft then stops with a
//! fatal storage error) and sets [`Syncer::fatal`]: the node must exit and recover from disk. A
//! failed fsync is never retried (the kernel may have dropped the dirty pages).
//!
//! With `FsyncPolicy::Interval` or `Never` the log does not promise durability per append, so
//! callbacks are completed as soon as the write returns (`Syncer::complete_on_write`): the
//! documented, weaker mode.

use std::io;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Instant;

use openraft::storage::IOFlushed;
use parking_lot::Mutex;
use tokio::sync::watch;

use super::types::TypeConfig;
use crate::log::{Error as LogError, Log};
use crate::telemetry::metrics::Metrics;

/// A callback completion to run after the next sync.
pub type Callback = IOFlushed<TypeConfig>;

/// What the syncer makes durable: the commit log (or a fake in tests).
pub trait Durable: Send + 'static {
    /// Makes everything written so far durable.
    fn sync(&self) -> Result<(), LogError>;
}

impl Durable for Log {
    fn sync(&self) -> Result<(), LogError> {
        Log::sync(self).map(|_| ())
    }
}

enum Job {
    Sync(Callback),
    /// Test hook and shutdown barrier: answered after a sync covering everything before it.
    Barrier(std::sync::mpsc::Sender<io::Result<()>>),
}

/// The group-commit thread of one log.
pub struct Syncer {
    jobs: Mutex<Option<mpsc::Sender<Job>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
    fatal: watch::Receiver<Option<String>>,
    complete_on_write: bool,
}

impl std::fmt::Debug for Syncer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Syncer")
            .field("complete_on_write", &self.complete_on_write)
            .finish_non_exhaustive()
    }
}

impl Syncer {
    /// Starts the syncer thread for `log`. `sync_per_append` is true with `FsyncPolicy::Always`;
    /// otherwise callbacks complete right after the write.
    pub fn start(
        log: impl Durable,
        sync_per_append: bool,
        metrics: Option<Metrics>,
    ) -> io::Result<Syncer> {
        let (tx, rx) = mpsc::channel();
        let (fatal_tx, fatal) = watch::channel(None);
        let thread = std::thread::Builder::new()
            .name("raft-log-sync".into())
            .spawn(move || sync_loop(log, rx, fatal_tx, metrics))?;
        Ok(Syncer {
            jobs: Mutex::new(Some(tx)),
            thread: Mutex::new(Some(thread)),
            fatal,
            complete_on_write: !sync_per_append,
        })
    }

    /// Completes `callback` once everything written so far is durable.
    pub fn after_sync(&self, callback: Callback) {
        if self.complete_on_write {
            callback.io_completed(Ok(()));
            return;
        }
        if let Some(message) = self.fatal.borrow().clone() {
            callback.io_completed(Err(io::Error::other(message)));
            return;
        }
        let job = Job::Sync(callback);
        let unsent = match &*self.jobs.lock() {
            Some(jobs) => jobs.send(job).err().map(|e| e.0),
            None => Some(job),
        };
        if let Some(Job::Sync(callback)) = unsent {
            callback.io_completed(Err(io::Error::other("the log syncer has stopped")));
        }
    }

    /// Waits (blocking) until everything written before the call is durable.
    pub fn barrier(&self) -> io::Result<()> {
        let (tx, rx) = std::sync::mpsc::channel();
        {
            let jobs = self.jobs.lock();
            let Some(jobs) = &*jobs else {
                return Err(io::Error::other("the log syncer has stopped"));
            };
            jobs.send(Job::Barrier(tx))
                .map_err(|_| io::Error::other("the log syncer has stopped"))?;
        }
        rx.recv()
            .map_err(|_| io::Error::other("the log syncer has stopped"))?
    }

    /// `Some(reason)` once a sync has failed: the node must stop.
    pub fn fatal(&self) -> watch::Receiver<Option<String>> {
        self.fatal.clone()
    }

    /// Stops the thread after it has completed every queued callback.
    pub fn stop(&self) {
        drop(self.jobs.lock().take());
        if let Some(thread) = self.thread.lock().take()
            && thread.join().is_err()
        {
            tracing::error!("the log syncer thread panicked");
        }
    }
}

impl Drop for Syncer {
    fn drop(&mut self) {
        drop(self.jobs.lock().take());
    }
}

fn sync_loop(
    log: impl Durable,
    jobs: mpsc::Receiver<Job>,
    fatal: watch::Sender<Option<String>>,
    metrics: Option<Metrics>,
) {
    let mut failure: Option<String> = None;
    // Blocks until work arrives; ends when the Syncer is stopped or dropped.
    while let Ok(first) = jobs.recv() {
        let mut batch = vec![first];
        batch.extend(jobs.try_iter());
        let result = match &failure {
            Some(message) => Err(message.clone()),
            None => {
                let started = Instant::now();
                // The first failure is sticky (fsyncgate: after a failed fsync the pages may be
                // gone), so it is kept as its message and repeated to every later sync.
                let result = log.sync().map_err(|e| e.to_string());
                if let Some(metrics) = &metrics {
                    metrics.observe_fsync(started.elapsed());
                }
                result
            }
        };
        if let Err(message) = &result
            && failure.is_none()
        {
            tracing::error!(error = %message, "syncing the Raft log failed; the node must restart");
            failure = Some(message.clone());
            fatal.send_replace(Some(format!("syncing the commit log failed: {message}")));
        }
        for job in batch {
            let outcome = result.clone().map_err(io::Error::other);
            match job {
                Job::Sync(callback) => callback.io_completed(outcome),
                Job::Barrier(reply) => {
                    let _ = reply.send(outcome);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use openraft::type_config::TypeConfigExt;
    use tokio::sync::oneshot;

    use super::*;

    /// A fake disk whose syncs wait for the test to release them, and may fail.
    #[derive(Clone)]
    struct Gate {
        release: Arc<parking_lot::Mutex<mpsc::Receiver<Result<(), LogError>>>>,
        syncs: Arc<AtomicUsize>,
    }

    impl Durable for Gate {
        fn sync(&self) -> Result<(), LogError> {
            self.syncs.fetch_add(1, Ordering::SeqCst);
            self.release.lock().recv().unwrap_or(Err(LogError::Closed))
        }
    }

    fn gate() -> (Gate, mpsc::Sender<Result<(), LogError>>) {
        let (tx, rx) = mpsc::channel();
        let gate = Gate {
            release: Arc::new(parking_lot::Mutex::new(rx)),
            syncs: Arc::new(AtomicUsize::new(0)),
        };
        (gate, tx)
    }

    fn callback() -> (Callback, oneshot::Receiver<Result<(), io::Error>>) {
        let (tx, rx) = TypeConfig::oneshot();
        (IOFlushed::signal(tx), rx)
    }

    #[tokio::test]
    async fn callbacks_fire_only_after_the_sync_that_covers_them() {
        let (disk, release) = gate();
        let syncer = Syncer::start(disk.clone(), true, None).expect("start");
        let (first, mut first_rx) = callback();
        syncer.after_sync(first);
        // The first sync is running (blocked on the gate); queue two more appends meanwhile.
        while disk.syncs.load(Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
        let (second, mut second_rx) = callback();
        let (third, third_rx) = callback();
        syncer.after_sync(second);
        syncer.after_sync(third);
        assert!(
            first_rx.try_recv().is_err(),
            "completed before its sync finished"
        );
        release.send(Ok(())).expect("release first sync");
        first_rx.await.expect("first").expect("first durable");
        assert!(
            second_rx.try_recv().is_err(),
            "completed before its sync finished"
        );
        // One sync covers both queued appends (group commit).
        release.send(Ok(())).expect("release second sync");
        second_rx.await.expect("second").expect("second durable");
        third_rx.await.expect("third").expect("third durable");
        assert_eq!(disk.syncs.load(Ordering::SeqCst), 2);
        syncer.stop();
    }

    #[tokio::test]
    async fn a_failed_sync_fails_every_waiting_callback_and_is_fatal() {
        let (disk, release) = gate();
        let syncer = Syncer::start(disk.clone(), true, None).expect("start");
        let mut fatal = syncer.fatal();
        let (first, first_rx) = callback();
        syncer.after_sync(first);
        release
            .send(Err(LogError::Io {
                op: "fdatasync",
                path: "store".into(),
                source: io::Error::other("EIO"),
            }))
            .expect("fail sync");
        let err = first_rx.await.expect("first").expect_err("must fail");
        assert!(err.to_string().contains("EIO"), "{err}");
        fatal.wait_for(Option::is_some).await.expect("fatal set");
        // Later appends fail at once and the disk is never synced again (no retry after EIO).
        let (later, later_rx) = callback();
        syncer.after_sync(later);
        assert!(later_rx.await.expect("later").is_err());
        assert_eq!(disk.syncs.load(Ordering::SeqCst), 1);
        drop(release);
        syncer.stop();
    }

    #[tokio::test]
    async fn without_per_append_sync_callbacks_complete_on_write() {
        let (disk, _release) = gate();
        let syncer = Syncer::start(disk.clone(), false, None).expect("start");
        let (cb, rx) = callback();
        syncer.after_sync(cb);
        rx.await.expect("cb").expect("completed");
        assert_eq!(disk.syncs.load(Ordering::SeqCst), 0);
    }
}
