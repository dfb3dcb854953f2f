//! Standard output for what the commands print, where a reader that went away is a normal end.
//!
//! `logctl consume --from 0 | head -1` closes the pipe after one line; the next write fails with
//! `EPIPE` (Rust ignores `SIGPIPE`, so the process is not killed as a C tool would be). That is
//! how a pipeline says "enough", not a failure: writes through [`Output`] mark it as
//! [`StdoutClosed`], and `main` ends quietly with status 0 when [`is_stdout_closed`] says so.
//! Only writes to standard output are marked, so a broken pipe anywhere else (a socket, a child
//! process) still fails the command.

use std::io::{self, ErrorKind, Write};

/// The reader of standard output has gone away.
#[derive(Debug, thiserror::Error)]
#[error("standard output was closed by its reader")]
pub struct StdoutClosed;

/// A writer whose broken-pipe errors carry [`StdoutClosed`].
#[derive(Debug)]
pub struct Output<W> {
    inner: W,
}

/// Standard output, locked for the life of the command.
pub fn stdout() -> Output<io::StdoutLock<'static>> {
    Output::new(io::stdout().lock())
}

impl<W: Write> Output<W> {
    /// Wraps `inner` (standard output, or a pipe in tests).
    pub fn new(inner: W) -> Self {
        Output { inner }
    }
}

fn mark(error: io::Error) -> io::Error {
    if error.kind() == ErrorKind::BrokenPipe {
        io::Error::new(ErrorKind::BrokenPipe, StdoutClosed)
    } else {
        error
    }
}

impl<W: Write> Write for Output<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.inner.write(buf).map_err(mark)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush().map_err(mark)
    }
}

/// Whether the command failed only because its standard output was closed.
pub fn is_stdout_closed(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause.is::<StdoutClosed>()
            || cause
                .downcast_ref::<io::Error>()
                .and_then(io::Error::get_ref)
                .is_some_and(|inner| inner.is::<StdoutClosed>())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer whose reader is gone, or that fails otherwise.
    struct Failing(ErrorKind);

    impl Write for Failing {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::Error::from(self.0))
        }

        fn flush(&mut self) -> io::Result<()> {
            Err(io::Error::from(self.0))
        }
    }

    fn print_to(out: &mut impl Write) -> anyhow::Result<()> {
        writeln!(out, "0\thello")?;
        Ok(())
    }

    #[test]
    fn a_closed_reader_is_recognised_through_anyhow() {
        let error = print_to(&mut Output::new(Failing(ErrorKind::BrokenPipe)))
            .expect_err("the write fails");
        assert!(is_stdout_closed(&error), "{error:?}");
        let wrapped = error.context("printing records");
        assert!(is_stdout_closed(&wrapped), "{wrapped:?}");
    }

    #[test]
    fn other_write_errors_and_unmarked_broken_pipes_stay_failures() {
        let full = print_to(&mut Output::new(Failing(ErrorKind::StorageFull)))
            .expect_err("the write fails");
        assert!(!is_stdout_closed(&full), "{full:?}");
        // A broken pipe that did not come through `Output` (a socket, say) is a real failure.
        let socket = print_to(&mut Failing(ErrorKind::BrokenPipe)).expect_err("the write fails");
        assert!(!is_stdout_closed(&socket), "{socket:?}");
    }

    #[test]
    fn a_real_closed_pipe_is_reported_as_closed_stdout() {
        let (reader, writer) = io::pipe().expect("pipe");
        drop(reader);
        let error = print_to(&mut Output::new(writer)).expect_err("nobody reads");
        assert!(is_stdout_closed(&error), "{error:?}");
    }
}
