//! A harness started once per test binary and stopped when the process exits.
//!
//! Statics are never dropped, so the stop runs from an `atexit(3)` hook; the children's
//! parent-death signal covers a crash. The start's error is kept as text so that every test
//! which asks after a failed start gets the same message instead of starting again.

use std::sync::OnceLock;

use super::{Error, Result};

pub(super) struct SharedOnce<T: 'static>(OnceLock<std::result::Result<T, String>>);

impl<T: Sync + 'static> SharedOnce<T> {
    pub(super) const fn new() -> Self {
        Self(OnceLock::new())
    }

    /// Starts the harness on first use. `at_exit` must call [`SharedOnce::stop`] on this same
    /// static: atexit(3) only takes a plain function.
    pub(super) fn get_or_start(
        &'static self,
        start: impl FnOnce() -> Result<T>,
        at_exit: extern "C" fn(),
    ) -> Result<&'static T> {
        self.0
            .get_or_init(|| {
                let started = start().map_err(|e| e.to_string());
                if started.is_ok() {
                    // SAFETY: registers a plain `extern "C" fn` with no arguments; atexit(3)
                    // has no other precondition.
                    unsafe {
                        libc::atexit(at_exit);
                    }
                }
                started
            })
            .as_ref()
            .map_err(|e| Error::Shared(e.clone()))
    }

    /// Stops a started harness; called from the `atexit` hook.
    pub(super) fn stop(&self, stop: impl Fn(&T)) {
        // Unwinding out of an `extern "C"` function aborts: contain any panic here.
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            if let Some(Ok(harness)) = self.0.get() {
                stop(harness);
            }
        }));
    }
}
