//! Polling a set of files for changes, for hot reload of TLS material and policies.
//!
//! Kubernetes updates Secret and ConfigMap volumes by writing a new timestamped directory and
//! swapping the `..data` symlink, and a file's mtime can survive a copy; so a change is detected
//! by comparing the files' full contents (they are a few kilobytes), never by mtime alone.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Weak;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;

use super::error::AuthError;

/// Reads a fixed list of files and remembers what it saw last.
#[derive(Debug)]
pub(crate) struct WatchedFiles {
    paths: Vec<PathBuf>,
    /// Contents of the last read that was handed to a reload attempt (successful or not), so a
    /// broken file is reported once, not on every poll.
    last_seen: Option<Vec<Vec<u8>>>,
}

impl WatchedFiles {
    pub(crate) fn new(paths: Vec<PathBuf>, initial: Vec<Vec<u8>>) -> Self {
        WatchedFiles {
            paths,
            last_seen: Some(initial),
        }
    }

    /// Reads every file synchronously (start-up).
    pub(crate) fn read_all_blocking(paths: &[PathBuf]) -> Result<Vec<Vec<u8>>, AuthError> {
        paths
            .iter()
            .map(|p| std::fs::read(p).map_err(|e| AuthError::io(p, e)))
            .collect()
    }

    /// Reads every file; returns `Some(contents)` when they differ from the last read handed out.
    pub(crate) async fn changed(&mut self) -> Result<Option<Vec<Vec<u8>>>, AuthError> {
        let mut contents = Vec::with_capacity(self.paths.len());
        for path in &self.paths {
            contents.push(
                tokio::fs::read(path)
                    .await
                    .map_err(|e| AuthError::io(path, e))?,
            );
        }
        if self.last_seen.as_ref() == Some(&contents) {
            return Ok(None);
        }
        self.last_seen = Some(contents.clone());
        Ok(Some(contents))
    }
}

/// Something that can re-read its files and swap in new state.
pub(crate) trait Reload: Send + Sync + 'static {
    /// What is being reloaded, for logs ("TLS material", "casbin policy").
    const WHAT: &'static str;

    /// Re-reads the files; `Ok(true)` when new state was swapped in.
    fn reload(&self) -> impl Future<Output = Result<bool, AuthError>> + Send;
}

/// Polls `target` every `every` until the target is dropped (the task holds only a weak
/// reference, so dropping the last handle ends the task).
pub(crate) fn spawn_poller<T: Reload>(target: Weak<T>, every: Duration) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(every);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        ticker.tick().await; // the first tick is immediate; the state was just loaded
        let mut last_error: Option<String> = None;
        loop {
            ticker.tick().await;
            let Some(target) = target.upgrade() else {
                break;
            };
            match target.reload().await {
                Ok(_) => last_error = None,
                Err(e) => {
                    let message = e.to_string();
                    // A file that stays unreadable would otherwise log on every poll.
                    if last_error.as_deref() != Some(message.as_str()) {
                        tracing::error!(
                            what = T::WHAT,
                            error = %message,
                            "reload failed; keeping the previous version"
                        );
                        last_error = Some(message);
                    }
                }
            }
        }
    })
}
