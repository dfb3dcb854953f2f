//! Storage I/O off the async runtime: the log store, the state machine and the node all run
//! their file and sled work on tokio's blocking pool through this one helper.

use std::io;

/// Runs blocking I/O on tokio's blocking pool.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| io::Error::other(format!("blocking storage task failed: {e}")))?
}
