//! The accept loop of the fake servers (`fake_graph.rs`, `fake_odoo.rs`; `src/bin/walua-fake-graph.rs`
//! includes this file by `#[path]` too, next to `fake_graph.rs`).

use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};

/// The HTTP versions a fake server speaks.
#[derive(Debug, Clone, Copy)]
pub enum Protocols {
    /// HTTP/1.1 only.
    Http1,
    /// HTTP/1.1, or HTTP/2 over cleartext (h2c) for a client that knows it speaks it.
    Http1AndH2c,
}

/// A running server; dropping it stops the accept loop and its HTTP/1.1 connections. (An
/// HTTP/2 request hyper runs in a task of its own, e.g. one the fake never answers, ends
/// with its client.)
pub struct Serving(JoinHandle<()>);

impl Drop for Serving {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Serves every connection `listener` accepts with `handle`, until the [`Serving`] is dropped.
/// An error from `handle` makes hyper close the connection without an answer.
pub fn spawn<H, F>(listener: TcpListener, protocols: Protocols, handle: H) -> Serving
where
    H: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Result<Response<Full<Bytes>>, std::io::Error>> + Send + 'static,
{
    Serving(tokio::spawn(async move {
        // Connections live in the JoinSet so aborting this task also ends them.
        let mut conns = JoinSet::new();
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            };
            while conns.try_join_next().is_some() {}
            let svc = hyper::service::service_fn(handle.clone());
            conns.spawn(async move {
                let builder = auto::Builder::new(TokioExecutor::new());
                let builder = match protocols {
                    Protocols::Http1 => builder.http1_only(),
                    Protocols::Http1AndH2c => builder,
                };
                let _ = builder.serve_connection(TokioIo::new(stream), svc).await;
            });
        }
    }))
}
