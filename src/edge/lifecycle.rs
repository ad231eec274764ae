//! One way to stop: a `CancellationToken` that every background task and long-poll watches,
//! and a `TaskTracker` that shutdown waits on (see [`crate::edge::server`]).

use std::future::Future;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The shutdown signal and the background tasks that must end with the server.
#[derive(Debug, Clone, Default)]
pub struct Lifecycle {
    token: CancellationToken,
    tasks: TaskTracker,
}

impl Lifecycle {
    pub fn new() -> Self {
        Self::default()
    }

    /// Runs `task` until it finishes or shutdown begins, whichever is first; shutdown waits
    /// for it.
    pub fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        let token = self.token.clone();
        self.tasks.spawn(async move {
            tokio::select! {
                () = token.cancelled() => {}
                () = task => {}
            }
        });
    }

    /// Runs `task`, which watches [`Lifecycle::stopping`] itself (to stop only at points where
    /// stopping is safe); shutdown waits for it.
    pub fn track(&self, task: impl Future<Output = ()> + Send + 'static) {
        self.tasks.spawn(task);
    }

    /// Resolves when shutdown begins.
    pub async fn stopping(&self) {
        self.token.cancelled().await;
    }

    pub fn is_stopping(&self) -> bool {
        self.token.is_cancelled()
    }

    /// Begins shutdown: long-polls return, background tasks stop.
    pub fn stop(&self) {
        self.token.cancel();
    }

    /// Waits (at most `limit`) for every task spawned through [`Lifecycle::spawn`].
    pub async fn wait(&self, limit: Duration) {
        self.tasks.close();
        if tokio::time::timeout(limit, self.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                seconds = limit.as_secs(),
                "background tasks did not stop in time"
            );
        }
    }
}
