//! A connection's outbound queue: the connection's handles push, the socket's task pops.
//!
//! Unbounded here (the connection bounds it by bytes) and free while empty: an idle
//! connection's queue holds no allocation, where Tokio's unbounded channel keeps a block
//! of 32 slots (about 1.4 KiB per connection).

use std::collections::VecDeque;
use std::future::poll_fn;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};

use super::Outbound;

/// A queue that grew past this many slots gives the memory back once it is empty.
const SHRINK_ABOVE: usize = 1024;

/// Creates a queue: one sending half, one receiving half.
pub(super) fn queue() -> (Sender, Receiver) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            items: VecDeque::new(),
            waker: None,
            sender_gone: false,
            receiver_gone: false,
        }),
    });
    (
        Sender(Arc::clone(&shared)),
        Receiver {
            shared,
            more: false,
        },
    )
}

struct Shared {
    state: Mutex<State>,
}

struct State {
    items: VecDeque<Outbound>,
    /// The receiver's task, waiting for an item.
    waker: Option<Waker>,
    sender_gone: bool,
    receiver_gone: bool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Every update leaves the state consistent, so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The sending half; dropping it ends the queue once it is drained.
pub(super) struct Sender(Arc<Shared>);

impl Sender {
    /// Queues `item`; gives it back if the receiver is gone.
    pub(super) fn send(&self, item: Outbound) -> Result<(), Outbound> {
        let waker = {
            let mut state = self.0.lock();
            if state.receiver_gone {
                return Err(item);
            }
            state.items.push_back(item);
            state.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
        Ok(())
    }
}

impl Drop for Sender {
    fn drop(&mut self) {
        let waker = {
            let mut state = self.0.lock();
            state.sender_gone = true;
            state.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

/// The receiving half, owned by the socket's task.
pub(crate) struct Receiver {
    shared: Arc<Shared>,
    /// Items were left behind by the last pop: [`try_recv`](Self::try_recv) looks (and
    /// locks) only then. Items pushed since are found by the next `recv`.
    more: bool,
}

impl Receiver {
    /// The next item; `None` once the sender is gone and the queue is drained.
    /// Cancel-safe: dropping the future loses nothing.
    pub(crate) async fn recv(&mut self) -> Option<Outbound> {
        poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// The next item if the last pop left one behind. Does not see items pushed since
    /// (the next [`recv`](Self::recv) does): it saves the socket task a lock per frame
    /// when frames come one at a time.
    pub(crate) fn try_recv(&mut self) -> Option<Outbound> {
        if !self.more {
            return None;
        }
        let mut state = self.shared.lock();
        let item = pop(&mut state);
        self.more = !state.items.is_empty();
        item
    }

    fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<Outbound>> {
        let mut state = self.shared.lock();
        if let Some(item) = pop(&mut state) {
            self.more = !state.items.is_empty();
            return Poll::Ready(Some(item));
        }
        if state.sender_gone {
            return Poll::Ready(None);
        }
        match &mut state.waker {
            Some(waker) if waker.will_wake(cx.waker()) => {}
            slot => *slot = Some(cx.waker().clone()),
        }
        Poll::Pending
    }
}

fn pop(state: &mut State) -> Option<Outbound> {
    let item = state.items.pop_front();
    if state.items.is_empty() && state.items.capacity() > SHRINK_ABOVE {
        state.items = VecDeque::new();
    }
    item
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let items = {
            let mut state = self.shared.lock();
            state.receiver_gone = true;
            std::mem::take(&mut state.items)
        };
        drop(items);
    }
}

#[cfg(test)]
mod tests {
    use axum::extract::ws;
    use futures_util::FutureExt;

    use super::*;

    fn frame(text: &str) -> Outbound {
        Outbound::Frame(ws::Message::Text(text.into()))
    }

    fn text(outbound: Option<Outbound>) -> String {
        match outbound {
            Some(Outbound::Frame(ws::Message::Text(text))) => text.to_string(),
            _ => panic!("expected a text frame"),
        }
    }

    #[tokio::test]
    async fn items_come_out_in_order_and_the_end_is_seen() {
        let (sender, mut receiver) = queue();
        for n in 0..3 {
            assert!(sender.send(frame(&n.to_string())).is_ok());
        }
        assert_eq!(text(receiver.recv().await), "0");
        assert_eq!(text(receiver.try_recv()), "1");
        assert_eq!(text(receiver.try_recv()), "2");
        assert!(receiver.try_recv().is_none());
        // Pushed after the queue was seen empty: `recv` finds it, `try_recv` does not look.
        assert!(sender.send(frame("3")).is_ok());
        assert!(receiver.try_recv().is_none());
        assert_eq!(text(receiver.recv().await), "3");
        let waiting = tokio::spawn(async move { receiver.recv().await.is_none() });
        tokio::task::yield_now().await;
        drop(sender);
        assert!(waiting.await.unwrap());
    }

    #[tokio::test]
    async fn a_waiting_receiver_is_woken() {
        let (sender, mut receiver) = queue();
        let waiting = tokio::spawn(async move { text(receiver.recv().await) });
        tokio::task::yield_now().await;
        assert!(sender.send(frame("hi")).is_ok());
        assert_eq!(waiting.await.unwrap(), "hi");
    }

    #[test]
    fn sending_after_the_receiver_is_gone_fails() {
        let (sender, receiver) = queue();
        drop(receiver);
        assert!(sender.send(frame("x")).is_err());
    }

    #[test]
    fn a_drained_large_queue_gives_its_memory_back() {
        let (sender, mut receiver) = queue();
        for _ in 0..=SHRINK_ABOVE {
            assert!(sender.send(frame("x")).is_ok());
        }
        while receiver.recv().now_or_never().flatten().is_some() {}
        assert_eq!(receiver.shared.lock().items.capacity(), 0);
    }
}
