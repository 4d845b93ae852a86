//! The engine's life cycle: one task tracker every task is spawned through, and one
//! cancellation token that stops them all.

use std::future::Future;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

/// Spawns tasks that stop together. Cheap to clone.
#[derive(Clone, Debug, Default)]
pub(crate) struct Life {
    cancel: CancellationToken,
    tasks: TaskTracker,
}

impl Life {
    /// Spawns `task` in the current span; it is waited for at shutdown.
    pub(crate) fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        self.tasks.spawn(task.in_current_span());
    }

    /// Spawns `task` in `span`.
    pub(crate) fn spawn_in(
        &self,
        span: tracing::Span,
        task: impl Future<Output = ()> + Send + 'static,
    ) {
        self.tasks.spawn(task.instrument(span));
    }

    /// Resolves once the engine stops.
    pub(crate) async fn cancelled(&self) {
        self.cancel.cancelled().await;
    }

    /// Stops everything.
    pub(crate) fn cancel(&self) {
        self.cancel.cancel();
    }

    /// A token cancelled with the engine (or on its own, for one folder).
    pub(crate) fn child_token(&self) -> CancellationToken {
        self.cancel.child_token()
    }

    /// Waits for every task to end, at most `limit`; returns whether they did.
    pub(crate) async fn wait(&self, limit: std::time::Duration) -> bool {
        self.tasks.close();
        tokio::time::timeout(limit, self.tasks.wait()).await.is_ok()
    }
}
