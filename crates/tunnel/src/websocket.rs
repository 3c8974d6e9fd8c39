//! The agent channel carried in a WebSocket, for networks where only
//! HTTP/1.1 passes proxies: after the upgrade, each binary message carries
//! the next bytes of an ordinary HTTP/2 (gRPC) connection. Both ends wrap
//! the WebSocket in [`WsIo`], a byte stream, and run the same gRPC code
//! over it as over TLS, so the two transports cannot drift apart.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes};
use futures_util::{Sink, Stream};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

pub use tokio_tungstenite::tungstenite::Error as WsError;
pub use tokio_tungstenite::tungstenite::client::IntoClientRequest;
pub use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
pub use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
pub use tokio_tungstenite::{WebSocketStream as Ws, client_async, client_async_with_config};

/// The subprotocol both ends name in `Sec-WebSocket-Protocol`.
pub const SUBPROTOCOL: &str = "tether-agent-v1";

/// Largest message either end accepts. HTTP/2 frames are at most 16 KiB by
/// default, and a write carries a few of them.
pub const MAX_MESSAGE_BYTES: usize = 4 << 20;

/// Settings for both ends: bounded messages.
pub fn config() -> WebSocketConfig {
    WebSocketConfig::default()
        .max_message_size(Some(MAX_MESSAGE_BYTES))
        .max_frame_size(Some(MAX_MESSAGE_BYTES))
}

/// A WebSocket as a byte stream.
#[derive(Debug)]
pub struct WsIo<S> {
    ws: WebSocketStream<S>,
    /// What is left of the last binary message read.
    pending: Bytes,
}

impl<S> WsIo<S> {
    pub fn new(ws: WebSocketStream<S>) -> Self {
        WsIo {
            ws,
            pending: Bytes::new(),
        }
    }
}

fn to_io(e: tokio_tungstenite::tungstenite::Error) -> io::Error {
    io::Error::other(e)
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for WsIo<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if !this.pending.is_empty() {
                let n = this.pending.len().min(buf.remaining());
                buf.put_slice(&this.pending[..n]);
                this.pending.advance(n);
                return Poll::Ready(Ok(()));
            }
            match ready!(Pin::new(&mut this.ws).poll_next(cx)) {
                // End of stream: a read of zero bytes.
                None | Some(Ok(Message::Close(_))) => return Poll::Ready(Ok(())),
                Some(Ok(Message::Binary(bytes))) => this.pending = bytes,
                // Pings are answered by tungstenite itself; text and other
                // frames carry nothing of the channel.
                Some(Ok(_)) => {}
                Some(Err(e)) => return Poll::Ready(Err(to_io(e))),
            }
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for WsIo<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(Pin::new(&mut this.ws).poll_ready(cx)).map_err(to_io)?;
        let n = buf.len().min(MAX_MESSAGE_BYTES);
        Pin::new(&mut this.ws)
            .start_send(Message::Binary(Bytes::copy_from_slice(&buf[..n])))
            .map_err(to_io)?;
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().ws)
            .poll_flush(cx)
            .map_err(to_io)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().ws)
            .poll_close(cx)
            .map_err(to_io)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[tokio::test]
    async fn bytes_cross_a_websocket_both_ways_and_close_is_eof() {
        let (a, b) = tokio::io::duplex(64 * 1024);
        let client = WebSocketStream::from_raw_socket(a, Role::Client, Some(config())).await;
        let server = WebSocketStream::from_raw_socket(b, Role::Server, Some(config())).await;
        let (mut client, mut server) = (WsIo::new(client), WsIo::new(server));

        let big: Vec<u8> = (0..200_000u32).map(|i| i as u8).collect();
        let writer = {
            let big = big.clone();
            tokio::spawn(async move {
                client.write_all(&big).await.expect("write");
                client.write_all(b"end").await.expect("write");
                client.flush().await.expect("flush");
                let mut reply = [0u8; 2];
                client.read_exact(&mut reply).await.expect("reply");
                client.shutdown().await.expect("close");
                reply
            })
        };
        let mut got = vec![0u8; big.len() + 3];
        server.read_exact(&mut got).await.expect("read");
        assert_eq!(&got[..big.len()], &big[..]);
        assert_eq!(&got[big.len()..], b"end");
        server.write_all(b"ok").await.expect("reply");
        server.flush().await.expect("flush");
        assert_eq!(&writer.await.expect("joins"), b"ok");
        let mut rest = Vec::new();
        server.read_to_end(&mut rest).await.expect("EOF");
        assert!(rest.is_empty());
    }
}
