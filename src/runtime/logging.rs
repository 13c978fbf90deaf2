//! Logs go to stderr through `tracing`, so stdout stays for data.
//!
//! Lines are handed to a writer thread through a bounded buffer: a stderr that
//! stops taking lines (a full pipe, a stuck log collector) must never stop a
//! broker from accepting and routing. When the buffer is full, lines are
//! dropped and counted; the count is said at exit.

use tracing_appender::non_blocking::{ErrorCounter, NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::EnvFilter;

/// Lines waiting for stderr at most; past it they are dropped and counted.
const BUFFERED_LINES: usize = 16_384;

/// Keeps the log writer running; dropping it flushes what is buffered.
pub struct Logging {
    dropped: ErrorCounter,
    _guard: WorkerGuard,
}

impl Logging {
    /// Lines dropped because stderr did not keep up.
    pub fn dropped_lines(&self) -> usize {
        self.dropped.dropped_lines()
    }
}

/// `verbosity` is the number of `-v` minus the number of `-q`. `RUST_LOG`, when
/// set, wins.
pub fn init(verbosity: i8) -> Logging {
    let level = match verbosity {
        i8::MIN..=-2 => "error",
        -1 => "warn",
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    // lapin (the bench's AMQP client) logs at ERROR every connection the
    // crash scenarios cut, though each reaches the bench as a Result.
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(format!("aioq={level},lapin=off,warn")));
    let ansi = super::output::Stream::Stderr.styled();
    let (writer, guard) = NonBlockingBuilder::default()
        .lossy(true)
        .buffered_lines_limit(BUFFERED_LINES)
        .thread_name("aioq-log")
        .finish(std::io::stderr());
    let dropped = writer.error_counter();
    let fmt = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(ansi)
        .with_target(false);
    // Under journald, which stamps every line itself: no second timestamp.
    let _ = if super::systemd::stderr_is_journal() {
        fmt.without_time().try_init()
    } else {
        fmt.try_init()
    };
    Logging {
        dropped,
        _guard: guard,
    }
}
