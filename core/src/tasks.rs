//! The node's background tasks, all owned by one [`Tasks`] that the node stops and awaits
//! when it shuts down (see [`crate::node`] for the rule on what must be spawned here).

use std::{future::Future, time::Duration};

use tokio::task::AbortHandle;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

/// Owner of a node's background tasks. Cheap to clone; clones share the same tasks.
///
/// A task spawned with [`Tasks::spawn`] is dropped at its next await point once the node
/// stops; one spawned after that never runs. [`Tasks::stop`] waits until every task has
/// ended, so what the tasks held (the database, streams, sockets) is released by then.
#[derive(Clone, Default)]
pub struct Tasks {
    tracker: TaskTracker,
    stop: CancellationToken,
}

impl Tasks {
    /// Runs `task` until it ends or the node stops, whichever comes first.
    pub fn spawn<F>(&self, task: F) -> AbortHandle
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let stop = self.stop.clone();
        self.tracker
            .spawn(async move {
                // Cancellation first: a task spawned while the node stops never starts.
                tokio::select! {
                    biased;
                    _ = stop.cancelled() => {}
                    _ = task => {}
                }
            })
            .abort_handle()
    }

    /// Runs `task` to its end, even once the node is stopping: for a task that ends by itself
    /// when the node stops (it watches [`Tasks::stopping`], or what feeds it is dropped by
    /// the stopped tasks), so it can finish cleanly and what was queued is not lost.
    /// [`Tasks::stop`] waits for it too.
    pub fn spawn_draining<F>(&self, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.tracker.spawn(task);
    }

    /// Completes when the node starts stopping.
    pub async fn stopping(&self) {
        self.stop.cancelled().await
    }

    /// Tells every task to stop, without waiting.
    pub fn cancel(&self) {
        self.stop.cancel();
        self.tracker.close();
    }

    /// Tells every task to stop and waits, at most `within`, until all have ended. Returns
    /// how many were still running when the time was up (0: all ended).
    pub async fn stop(&self, within: Duration) -> usize {
        self.cancel();
        match tokio::time::timeout(within, self.tracker.wait()).await {
            Ok(()) => 0,
            Err(_) => self.tracker.len(),
        }
    }

    /// How many tasks are running.
    pub fn len(&self) -> usize {
        self.tracker.len()
    }

    /// Whether no task is running.
    pub fn is_empty(&self) -> bool {
        self.tracker.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn stop_cancels_and_awaits_every_task() {
        let tasks = Tasks::default();
        let (held_tx, mut held_rx) = tokio::sync::mpsc::channel::<()>(1);
        for _ in 0..3 {
            let held = held_tx.clone();
            tasks.spawn(async move {
                let _held = held;
                std::future::pending::<()>().await;
            });
        }
        drop(held_tx);
        assert_eq!(tasks.len(), 3);
        assert_eq!(tasks.stop(Duration::from_secs(5)).await, 0);
        // Every task dropped what it held.
        assert!(held_rx.recv().await.is_none());
        // A task spawned once stopping never runs its body.
        let (ran_tx, ran_rx) = tokio::sync::oneshot::channel::<()>();
        tasks.spawn(async move {
            let _ = ran_tx.send(());
        });
        assert_eq!(tasks.stop(Duration::from_secs(5)).await, 0);
        assert!(ran_rx.await.is_err());
    }

    #[tokio::test]
    async fn draining_tasks_run_to_their_end() {
        let tasks = Tasks::default();
        let (tx, mut rx) = tokio::sync::mpsc::channel::<u32>(4);
        let (done_tx, done_rx) = tokio::sync::oneshot::channel::<u32>();
        tasks.spawn_draining(async move {
            let mut sum = 0;
            while let Some(n) = rx.recv().await {
                sum += n;
            }
            let _ = done_tx.send(sum);
        });
        tx.send(1).await.unwrap();
        tx.send(2).await.unwrap();
        tasks.cancel();
        drop(tx);
        assert_eq!(tasks.stop(Duration::from_secs(5)).await, 0);
        assert_eq!(done_rx.await.unwrap(), 3);
    }
}
