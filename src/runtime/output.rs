//! The one place that decides how output looks: whether a stream is a
//! terminal, whether colour is wanted (`NO_COLOR`), whether live progress is
//! drawn. Logs, tables, the bench's progress bars and the metrics table all ask
//! here, so that they agree.

use std::io::IsTerminal;

/// One of the process's output streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    /// A person is looking at it.
    pub fn is_terminal(self) -> bool {
        match self {
            Stream::Stdout => std::io::stdout().is_terminal(),
            Stream::Stderr => std::io::stderr().is_terminal(),
        }
    }

    /// Colour and other terminal styling are wanted: a terminal, and no
    /// `NO_COLOR` (<https://no-color.org>).
    pub fn styled(self) -> bool {
        self.is_terminal() && std::env::var_os("NO_COLOR").is_none()
    }

    /// Live progress (bars, redrawn lines) may be drawn: only on a terminal,
    /// and only when the data itself is not going to it as machine output.
    pub fn live(self, machine_output: bool) -> bool {
        !machine_output && self.is_terminal()
    }
}
