//! The broker's shutdown, phase by phase: stop reading, cut readers that
//! overstay, drain writers, abort. Each phase is a token tasks wait on; the
//! trackers tell when every reader, then every writer, is done.

use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

#[derive(Default)]
pub(crate) struct Phases {
    /// Cancelled first: readers read what clients already sent, then stop;
    /// new waits for `/queue` room give up.
    pub stop_reading: CancellationToken,
    /// Cancelled when readers have had their share of the drain timeout:
    /// those still reading stop, and their clients get no end-of-stream.
    pub cut_reading: CancellationToken,
    /// Cancelled once readers are done: writers flush and say end-of-stream.
    pub drain: CancellationToken,
    /// Cancelled when the drain timeout passes: everything closes now.
    pub abort: CancellationToken,
    pub readers: TaskTracker,
    pub writers: TaskTracker,
}

impl Phases {
    /// Stops reading. Readers get half of `drain_timeout` to route what
    /// clients sent before the stop, and are cut after it.
    pub async fn stop_readers(&self, drain_timeout: Duration) {
        let deadline = Instant::now() + drain_timeout;
        self.stop_reading.cancel();
        self.readers.close();
        let read_by = Instant::now() + drain_timeout / 2;
        if tokio::time::timeout_at(read_by, self.readers.wait())
            .await
            .is_err()
        {
            self.cut_reading.cancel();
            let _ = tokio::time::timeout_at(deadline, self.readers.wait()).await;
        }
    }

    /// Lets writers flush what they owe and say end-of-stream until
    /// `deadline`, then closes what is left (two seconds for that). False
    /// when the deadline passed.
    pub async fn drain_writers(&self, deadline: Instant) -> bool {
        self.drain.cancel();
        self.writers.close();
        if tokio::time::timeout_at(deadline, self.writers.wait())
            .await
            .is_ok()
        {
            return true;
        }
        self.abort.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(2), self.writers.wait()).await;
        false
    }
}
