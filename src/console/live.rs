//! Live updates: every change the console shows (a message in or out, a status, a
//! handover) bumps one counter; each open console page holds a Server-Sent Events stream
//! that says "something changed" and the page fetches the part it shows again.
//!
//! One counter rather than typed events: a page re-reads what it displays from the store,
//! so it can never miss or misorder an update, and a burst of changes costs one refresh.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

/// How often an idle stream sends a comment, so that proxies and the server's idle rules
/// keep it open, and a dead client is noticed.
pub const HEARTBEAT: Duration = Duration::from_secs(15);

/// Changes closer together than this are sent as one.
pub const COALESCE: Duration = Duration::from_millis(150);

/// The change counter, shared by the processor, the outbox and the console.
#[derive(Clone)]
pub struct LiveChanges(Arc<watch::Sender<u64>>);

impl Default for LiveChanges {
    fn default() -> Self {
        LiveChanges(Arc::new(watch::channel(0).0))
    }
}

impl std::fmt::Debug for LiveChanges {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LiveChanges({})", *self.0.borrow())
    }
}

impl LiveChanges {
    /// Something the console shows changed.
    pub fn bump(&self) {
        self.0.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// A stream body of Server-Sent Events: `change` after every change (coalesced), a
    /// heartbeat comment every [`HEARTBEAT`]; it ends at `shutdown` or when the client goes.
    pub fn event_stream(&self, shutdown: CancellationToken) -> EventStream {
        let (tx, rx) = mpsc::channel::<Bytes>(8);
        let mut changes = self.0.subscribe();
        tokio::spawn(async move {
            if tx.send(Bytes::from_static(b"retry: 2000\n\n")).await.is_err() {
                return;
            }
            let mut beat = tokio::time::interval(HEARTBEAT);
            beat.tick().await;
            loop {
                tokio::select! {
                    changed = changes.changed() => {
                        if changed.is_err() {
                            return;
                        }
                        tokio::time::sleep(COALESCE).await;
                        let n = *changes.borrow_and_update();
                        if tx.send(Bytes::from(format!("event: change\ndata: {n}\n\n"))).await.is_err() {
                            return;
                        }
                    }
                    _ = beat.tick() => {
                        if tx.send(Bytes::from_static(b": ping\n\n")).await.is_err() {
                            return;
                        }
                    }
                    _ = shutdown.cancelled() => return,
                    _ = tx.closed() => return,
                }
            }
        });
        EventStream { rx }
    }
}

/// The body of an event stream (see [`LiveChanges::event_stream`]).
pub struct EventStream {
    rx: mpsc::Receiver<Bytes>,
}

impl Body for EventStream {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.rx.poll_recv(cx).map(|chunk| chunk.map(|b| Ok(Frame::data(b))))
    }
}
