//! Ending a forwarded exchange from outside. A watch, a `logs -f` or an
//! exec session can outlive the credential that opened it; when kas revokes
//! that credential it flips the exchange's [`Stop`], and the response body
//! ends with an error (or the spliced upgrade closes) at once.

use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::Frame;
use http_body_util::BodyExt;
use tokio::sync::watch;

use crate::{Body, BoxError};

type Stopped = Pin<Box<dyn Future<Output = ()> + Send>>;

/// A signal that ends one forwarded exchange, and whatever the caller wants
/// kept alive exactly as long as the exchange (a registration that removes
/// itself on drop).
pub struct Stop {
    stopped: Mutex<Stopped>,
    _held: Box<dyn Send + Sync>,
}

impl std::fmt::Debug for Stop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stop").finish_non_exhaustive()
    }
}

impl Stop {
    /// Stops when `signal` becomes true (or its sender is dropped, which
    /// means nobody can stop it any more: then it never stops). `held` is
    /// dropped when the exchange ends.
    pub fn new(mut signal: watch::Receiver<bool>, held: impl Send + Sync + 'static) -> Self {
        let stopped: Stopped = Box::pin(async move {
            if signal.wait_for(|stop| *stop).await.is_err() {
                std::future::pending::<()>().await;
            }
        });
        Stop {
            stopped: Mutex::new(stopped),
            _held: Box::new(held),
        }
    }

    /// An exchange nothing can stop.
    pub fn never() -> Self {
        Stop {
            stopped: Mutex::new(Box::pin(std::future::pending())),
            _held: Box::new(()),
        }
    }

    fn poll_stopped(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let stopped = self.stopped.get_mut().unwrap_or_else(|p| p.into_inner());
        stopped.as_mut().poll(cx)
    }

    /// Resolves when the exchange must end.
    pub async fn stopped(&mut self) {
        std::future::poll_fn(|cx| self.poll_stopped(cx)).await;
    }
}

/// `body`, ending with an error as soon as `stop` fires.
pub fn stoppable(body: Body, stop: Stop) -> Body {
    StopBody { inner: body, stop }.boxed()
}

struct StopBody {
    inner: Body,
    stop: Stop,
}

impl http_body::Body for StopBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if self.stop.poll_stopped(cx).is_ready() {
            return Poll::Ready(Some(Err(
                "the exchange was ended by kas: its credential is no longer valid".into(),
            )));
        }
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// `body`, ending cleanly (as if the server had finished it) once `done`
/// completes: for a watch when kas drains, so that the client re-watches
/// from its last resourceVersion, through another replica, instead of
/// seeing a broken stream.
pub fn ends_when(body: Body, done: impl Future<Output = ()> + Send + 'static) -> Body {
    EndBody {
        inner: body,
        done: Mutex::new(Box::pin(done)),
    }
    .boxed()
}

struct EndBody {
    inner: Body,
    // In a mutex only to be Sync; polled through get_mut, never locked.
    done: Mutex<Stopped>,
}

impl http_body::Body for EndBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Pending => {}
            ready => return ready,
        }
        let done = self.done.get_mut().unwrap_or_else(|p| p.into_inner());
        match done.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_body_ends_cleanly_when_asked_and_not_before() {
        let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
        let (body_tx, body) = channel_body();
        let mut body = ends_when(body, async move {
            let _ = done_rx.await;
        });
        body_tx
            .send(Bytes::from_static(b"event\n"))
            .await
            .expect("sent");
        let frame = body.frame().await.expect("a frame").expect("ok");
        assert_eq!(
            frame.into_data().expect("data"),
            Bytes::from_static(b"event\n")
        );
        done_tx.send(()).expect("done");
        assert!(body.frame().await.is_none(), "ends cleanly, no error");
        drop(body_tx);
    }

    /// A body fed from a channel.
    fn channel_body() -> (tokio::sync::mpsc::Sender<Bytes>, Body) {
        let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(4);
        struct Rx(tokio::sync::mpsc::Receiver<Bytes>);
        impl http_body::Body for Rx {
            type Data = Bytes;
            type Error = BoxError;
            fn poll_frame(
                mut self: Pin<&mut Self>,
                cx: &mut Context<'_>,
            ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
                self.0.poll_recv(cx).map(|b| b.map(|b| Ok(Frame::data(b))))
            }
        }
        (tx, Rx(rx).boxed())
    }

    #[tokio::test]
    async fn a_stopped_body_ends_with_an_error_and_drops_what_it_held() {
        let (tx, rx) = watch::channel(false);
        let held = std::sync::Arc::new(());
        let (body_tx, body_rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, BoxError>>(1);
        let inner = http_body_util::StreamBody::new(tokio_stream_from(body_rx)).boxed();
        let mut body = stoppable(inner, Stop::new(rx, held.clone()));
        body_tx
            .send(Ok(Frame::data(Bytes::from_static(b"event"))))
            .await
            .expect("send");
        let first = body.frame().await.expect("frame").expect("data");
        assert_eq!(first.into_data().ok(), Some(Bytes::from_static(b"event")));
        tx.send(true).expect("stop");
        assert!(body.frame().await.expect("a frame").is_err());
        drop(body);
        assert_eq!(
            std::sync::Arc::strong_count(&held),
            1,
            "released with the body"
        );
    }

    fn tokio_stream_from<T: Send + 'static>(
        mut rx: tokio::sync::mpsc::Receiver<T>,
    ) -> impl futures_lite::Stream<Item = T> + Send + Sync + Unpin {
        Box::pin(futures_lite::stream::poll_fn(move |cx| rx.poll_recv(cx)))
    }
}
