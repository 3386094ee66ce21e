//! The debounced `callback` on document changes (y-partykit's `callback.handler`).
//!
//! As lodash's `debounce(handler, wait, { maxWait })` does: the handler runs once changes
//! have stopped for `wait`, and at the latest `max_wait` after the first change of a
//! burst. It runs on its own task, with a handle to the document, so the room is never
//! blocked by it. When the room's value is dropped, a pending call runs at once.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use tokio::sync::mpsc;
use tokio::time::{Instant, sleep_until};

use crate::Result;
use crate::tasks::Tasks;

type Handler = Arc<dyn Fn(yrs::Doc) -> BoxFuture<'static, Result<()>> + Send + Sync>;

/// A handler called, debounced, after the document changed: to save it elsewhere, index
/// it, notify someone. Errors are logged.
///
/// ```
/// use std::time::Duration;
/// use partykit_runtime::yjs::{yrs, Callback};
/// use yrs::{GetString, Transact};
///
/// let callback = Callback::new(|doc: yrs::Doc| async move {
///     let text = doc.get_or_insert_text("content");
///     let content = text.get_string(&doc.transact());
///     println!("the document is now {} bytes long", content.len());
///     Ok(())
/// })
/// .wait(Duration::from_millis(500))
/// .max_wait(Duration::from_secs(5));
/// # drop(callback);
/// ```
#[derive(Clone)]
pub struct Callback {
    handler: Handler,
    wait: Duration,
    max_wait: Duration,
}

impl Callback {
    /// y-partykit's default `debounceWait`.
    pub const DEFAULT_WAIT: Duration = Duration::from_millis(2000);
    /// y-partykit's default `debounceMaxWait`.
    pub const DEFAULT_MAX_WAIT: Duration = Duration::from_millis(10_000);

    /// Calls `handler` with the document after changes, 2 s after the last change and at
    /// most 10 s after the first one of a burst.
    pub fn new<F, Fut>(handler: F) -> Self
    where
        F: Fn(yrs::Doc) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<()>> + Send + 'static,
    {
        Self {
            handler: Arc::new(move |doc| Box::pin(handler(doc))),
            wait: Self::DEFAULT_WAIT,
            max_wait: Self::DEFAULT_MAX_WAIT,
        }
    }

    /// How long changes must pause before the handler runs (`debounceWait`).
    #[must_use]
    pub fn wait(mut self, wait: Duration) -> Self {
        self.wait = wait;
        self
    }

    /// The longest the handler waits after the first change of a burst
    /// (`debounceMaxWait`).
    #[must_use]
    pub fn max_wait(mut self, max_wait: Duration) -> Self {
        self.max_wait = max_wait;
        self
    }
}

impl fmt::Debug for Callback {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Callback")
            .field("wait", &self.wait)
            .field("max_wait", &self.max_wait)
            .finish_non_exhaustive()
    }
}

/// A running debouncer: tell it about changes with [`changed`](Self::changed).
pub(crate) struct Debouncer {
    callback: Callback,
    doc: yrs::Doc,
    tasks: Tasks,
    /// Started on the first change, so that building a document needs no runtime.
    changes: Option<mpsc::Sender<()>>,
}

impl Debouncer {
    pub(crate) fn new(callback: Callback, doc: yrs::Doc, tasks: Tasks) -> Self {
        Self {
            callback,
            doc,
            tasks,
            changes: None,
        }
    }

    /// The document changed.
    pub(crate) fn changed(&mut self) {
        let changes = self.changes.get_or_insert_with(|| {
            let (changes, received) = mpsc::channel(1);
            self.tasks
                .spawn(run(self.callback.clone(), self.doc.clone(), received));
            changes
        });
        // A full channel already holds a change that the task has yet to see.
        let _ = changes.try_send(());
    }
}

async fn run(callback: Callback, doc: yrs::Doc, mut changes: mpsc::Receiver<()>) {
    // Each turn is one burst: from its first change until the handler ran.
    while changes.recv().await.is_some() {
        let first = Instant::now();
        let mut last = first;
        let mut open = true;
        while open {
            let due = (last + callback.wait).min(first + callback.max_wait);
            tokio::select! {
                change = changes.recv() => match change {
                    Some(()) => last = Instant::now(),
                    // The document is gone: run now for the changes seen.
                    None => open = false,
                },
                () = sleep_until(due) => break,
            }
        }
        if let Err(error) = (callback.handler)(doc.clone()).await {
            tracing::error!(%error, "yjs callback failed");
        }
        if !open {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    fn counting() -> (Callback, Arc<AtomicUsize>) {
        let calls = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&calls);
        let callback = Callback::new(move |_doc| {
            let counter = Arc::clone(&counter);
            async move {
                counter.fetch_add(1, Ordering::SeqCst);
                Ok(())
            }
        })
        .wait(Duration::from_millis(100))
        .max_wait(Duration::from_millis(350));
        (callback, calls)
    }

    #[tokio::test(start_paused = true)]
    async fn bursts_are_debounced_with_a_max_wait() {
        let (callback, calls) = counting();
        let mut debouncer = Debouncer::new(callback, yrs::Doc::new(), Tasks::new());

        // Changes 50 ms apart never pause for 100 ms: max_wait fires at 350 ms.
        for _ in 0..6 {
            debouncer.changed();
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(calls.load(Ordering::SeqCst), 0);
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert_eq!(calls.load(Ordering::SeqCst), 1);

        // A single change runs after the pause.
        debouncer.changed();
        tokio::time::sleep(Duration::from_millis(90)).await;
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_pending_call_runs_when_the_document_is_dropped() {
        let (callback, calls) = counting();
        let mut debouncer = Debouncer::new(callback, yrs::Doc::new(), Tasks::new());
        debouncer.changed();
        tokio::task::yield_now().await;
        drop(debouncer);
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }
}
