//! The "counts may have changed" signal: the store keeps the counts themselves (its
//! counters change with the entries), so this only wakes the task that announces them.
//!
//! Who wakes me: whatever changes counts (`notify_one`: scans, index batches, pull rounds).
//! Whom I wake: the summary task.

use tokio::sync::Notify;
use tokio::sync::futures::Notified;

/// Wakes the summary task when a folder's counts may have changed.
#[derive(Debug, Default)]
pub(crate) struct CountsChanged {
    notify: Notify,
}

impl CountsChanged {
    /// Counts may have changed: wakes the summary task (once, however often called before
    /// it looks).
    pub(crate) fn notify_one(&self) {
        self.notify.notify_one();
    }

    /// Waits for the next change (the summary task).
    pub(crate) fn notified(&self) -> Notified<'_> {
        self.notify.notified()
    }
}
