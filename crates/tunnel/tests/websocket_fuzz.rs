//! Property-based fuzzing of the WebSocket adapter the agent channel and
//! tunnels may ride: fed arbitrary bytes as its raw socket, it may not
//! panic, hang, or grow past its message bound. `TETHER_FUZZ_CASES` sets
//! the cases.

use std::time::Duration;

use proptest::prelude::*;
use tether_tunnel::websocket::{self, Role, Ws, WsIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn cases() -> u32 {
    std::env::var("TETHER_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(500)
}

/// Feeds `bytes` to a server-side WebSocket as what the peer sent, then
/// closes; reads the byte stream to its end. Returns how much came through.
async fn through_websocket(bytes: Vec<u8>) -> usize {
    let (mut peer, ours) = tokio::io::duplex(64 * 1024);
    let writer = tokio::spawn(async move {
        let _ = peer.write_all(&bytes).await;
        let _ = peer.shutdown().await;
        // Keep reading what our side writes (pongs, close frames).
        let mut sink = Vec::new();
        let _ = peer.read_to_end(&mut sink).await;
    });
    let ws = Ws::from_raw_socket(ours, Role::Server, Some(websocket::config())).await;
    let mut io = WsIo::new(ws);
    let mut out = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), io.read_to_end(&mut out)).await;
    assert!(read.is_ok(), "the adapter hung on its input");
    drop(io);
    let _ = writer.await;
    assert!(out.len() <= websocket::MAX_MESSAGE_BYTES * 4);
    out.len()
}

/// Bytes shaped like WebSocket frames: valid and invalid headers, masked
/// or not, lengths that lie.
fn frames() -> impl Strategy<Value = Vec<u8>> {
    let frame = (
        any::<u8>(),
        0u8..=129,
        any::<bool>(),
        prop::collection::vec(any::<u8>(), 0..64),
    )
        .prop_map(|(first, len, masked, payload)| {
            let opcode = first & 0x8f;
            let mut bytes = vec![opcode, if masked { len | 0x80 } else { len }];
            if len == 126 {
                bytes.extend_from_slice(&(payload.len() as u16).to_be_bytes());
            } else if len == 127 {
                bytes.extend_from_slice(&u64::MAX.to_be_bytes());
            }
            if masked {
                bytes.extend_from_slice(&[1, 2, 3, 4]);
            }
            bytes.extend_from_slice(&payload);
            bytes
        });
    prop::collection::vec(frame, 0..20).prop_map(|frames| frames.concat())
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn the_websocket_adapter_survives_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..4096)) {
        runtime().block_on(through_websocket(bytes));
    }

    #[test]
    fn the_websocket_adapter_survives_frame_shaped_bytes(bytes in frames()) {
        runtime().block_on(through_websocket(bytes));
    }
}
