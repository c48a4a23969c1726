//! A writer's mailbox: the few messages a connection's reader hands the task that owns its
//! write half (WebSocket pongs and close replies; RTSP responses and PLAY/TEARDOWN), bounded.
//!
//! The writer checks it once per frame, and at a thousand viewers each check finds the
//! viewer's memory cold. A `tokio::sync::mpsc` channel's check reads its state, its block of
//! slots and its waker, several cache lines per viewer per frame (4.4 % of the hub's samples
//! at 1,000 WebSocket viewers); an empty mailbox is one atomic load, and a wait registers the
//! waker on that same line.
//!
//! One sender, one receiver. Capacity: `capacity` messages; a full mailbox makes `try_send`
//! fail (the caller's policy: a pong is dropped) and `send` wait (an RTSP reader stops reading
//! requests until its writer has caught up).

use std::collections::VecDeque;
use std::future::poll_fn;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Poll;

use futures_util::task::AtomicWaker;

struct Shared<T> {
    /// Messages queued; kept equal to `queue.len()` under its lock, read without it.
    queued: AtomicUsize,
    /// The sender is gone.
    sender_gone: AtomicBool,
    /// The receiver is gone.
    receiver_gone: AtomicBool,
    queue: Mutex<VecDeque<T>>,
    capacity: usize,
    /// The receiver's task, woken by a message or the sender leaving.
    rx_waker: AtomicWaker,
    /// The sender's task, waiting for room or for the receiver to leave.
    tx_waker: AtomicWaker,
}

impl<T> Shared<T> {
    // Every change under the lock is one push or pop with its count, so a panic elsewhere
    // leaves the queue consistent and a poisoned lock is still safe to use.
    fn queue(&self) -> MutexGuard<'_, VecDeque<T>> {
        self.queue.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The reader's end.
pub(crate) struct Sender<T>(Arc<Shared<T>>);

/// The writer's end.
pub(crate) struct Receiver<T>(Arc<Shared<T>>);

/// A mailbox that holds at most `capacity` (at least 1) messages.
pub(crate) fn mailbox<T>(capacity: usize) -> (Sender<T>, Receiver<T>) {
    let shared = Arc::new(Shared {
        queued: AtomicUsize::new(0),
        sender_gone: AtomicBool::new(false),
        receiver_gone: AtomicBool::new(false),
        queue: Mutex::new(VecDeque::new()),
        capacity: capacity.max(1),
        rx_waker: AtomicWaker::new(),
        tx_waker: AtomicWaker::new(),
    });
    (Sender(shared.clone()), Receiver(shared))
}

/// Why a message was not delivered; it is handed back.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum SendError<T> {
    /// The mailbox is full.
    Full(T),
    /// The receiver is gone.
    Closed(T),
}

impl<T> Sender<T> {
    /// Queues `msg` if there is room.
    pub(crate) fn try_send(&self, msg: T) -> Result<(), SendError<T>> {
        let s = &*self.0;
        {
            let mut q = s.queue();
            if s.receiver_gone.load(Ordering::Acquire) {
                return Err(SendError::Closed(msg));
            }
            if q.len() >= s.capacity {
                return Err(SendError::Full(msg));
            }
            q.push_back(msg);
            s.queued.store(q.len(), Ordering::Release);
        }
        s.rx_waker.wake();
        Ok(())
    }

    /// Queues `msg`, waiting for room; hands it back if the receiver is gone.
    pub(crate) async fn send(&self, msg: T) -> Result<(), T> {
        let mut msg = Some(msg);
        poll_fn(|cx| {
            let Some(m) = msg.take() else { return Poll::Ready(Ok(())) };
            let m = match self.try_send(m) {
                Ok(()) => return Poll::Ready(Ok(())),
                Err(SendError::Closed(m)) => return Poll::Ready(Err(m)),
                Err(SendError::Full(m)) => m,
            };
            self.0.tx_waker.register(cx.waker());
            // Room may have been made between the attempt and the registration.
            match self.try_send(m) {
                Ok(()) => Poll::Ready(Ok(())),
                Err(SendError::Closed(m)) => Poll::Ready(Err(m)),
                Err(SendError::Full(m)) => {
                    msg = Some(m);
                    Poll::Pending
                }
            }
        })
        .await
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        self.0.sender_gone.store(true, Ordering::Release);
        self.0.rx_waker.wake();
    }
}

impl<T> Receiver<T> {
    /// Whether the sender is gone (messages it queued may still be waiting).
    pub(crate) fn is_closed(&self) -> bool {
        self.0.sender_gone.load(Ordering::Acquire)
    }

    /// The oldest queued message, if any.
    pub(crate) fn try_recv(&mut self) -> Option<T> {
        let s = &*self.0;
        if s.queued.load(Ordering::Acquire) == 0 {
            return None;
        }
        let msg = {
            let mut q = s.queue();
            let msg = q.pop_front();
            s.queued.store(q.len(), Ordering::Release);
            msg
        };
        s.tx_waker.wake();
        msg
    }

    /// The oldest message, waiting for one; `None` once the sender is gone and nothing is left.
    pub(crate) async fn recv(&mut self) -> Option<T> {
        poll_fn(|cx| {
            if let Some(m) = self.try_recv() {
                return Poll::Ready(Some(m));
            }
            // Registered before anything is looked at again, so a message or a leaving sender
            // after this wakes the task; and `gone` is read before the queue, so a message
            // sent before the sender left is still found below.
            self.0.rx_waker.register(cx.waker());
            let gone = self.is_closed();
            match self.try_recv() {
                Some(m) => Poll::Ready(Some(m)),
                None if gone => Poll::Ready(None),
                None => Poll::Pending,
            }
        })
        .await
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        self.0.receiver_gone.store(true, Ordering::Release);
        self.0.tx_waker.wake();
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn messages_arrive_in_order_and_a_full_mailbox_refuses_or_waits() {
        let (tx, mut rx) = mailbox::<u32>(2);
        assert_eq!(rx.try_recv(), None);
        tx.try_send(1).unwrap();
        tx.try_send(2).unwrap();
        assert_eq!(tx.try_send(3), Err(SendError::Full(3)));
        // `send` waits for room, which the receiver makes.
        let waiting = tokio::spawn(async move {
            tx.send(3).await.unwrap();
            tx
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiting.is_finished(), "no room yet");
        assert_eq!(rx.recv().await, Some(1));
        let tx = tokio::time::timeout(Duration::from_secs(5), waiting).await.unwrap().unwrap();
        assert_eq!(rx.recv().await, Some(2));
        assert_eq!(rx.recv().await, Some(3));
        drop(tx);
        assert_eq!(rx.recv().await, None);
    }

    #[tokio::test]
    async fn a_waiting_receiver_wakes_for_a_message_and_for_the_sender_leaving() {
        let (tx, mut rx) = mailbox::<u32>(4);
        let waiting = tokio::spawn(async move { (rx.recv().await, rx) });
        tokio::time::sleep(Duration::from_millis(20)).await;
        tx.try_send(7).unwrap();
        let (got, mut rx) = tokio::time::timeout(Duration::from_secs(5), waiting).await.unwrap().unwrap();
        assert_eq!(got, Some(7));
        // Queued before the sender left: still delivered, then the end.
        tx.try_send(8).unwrap();
        drop(tx);
        assert!(rx.is_closed());
        assert_eq!(rx.recv().await, Some(8));
        assert_eq!(rx.recv().await, None);
    }

    #[tokio::test]
    async fn a_sender_learns_the_receiver_is_gone() {
        let (tx, rx) = mailbox::<u32>(1);
        tx.try_send(1).unwrap();
        let waiting = tokio::spawn(async move { tx.send(2).await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(rx);
        let r = tokio::time::timeout(Duration::from_secs(5), waiting).await.unwrap().unwrap();
        assert_eq!(r, Err(2));
    }
}
