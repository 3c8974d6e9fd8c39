//! Property-based fuzzing of what kas and agentk decode from the other side
//! of the channel: protocol messages from arbitrary bytes (and the config
//! conversion of any that decode). Nothing may panic.
//! `TETHER_FUZZ_CASES` sets the cases.

use proptest::prelude::*;
use prost::Message as _;
use tether_proto::v1::{AgentConfiguration, AgentMessage, ServerMessage};

fn cases() -> u32 {
    std::env::var("TETHER_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(500)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn agent_messages_from_arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
        if let Ok(message) = AgentMessage::decode(bytes.as_slice()) {
            // What decodes re-encodes to something that decodes the same.
            let again = AgentMessage::decode(message.encode_to_vec().as_slice()).expect("round trip");
            prop_assert_eq!(again, message);
        }
    }

    #[test]
    fn server_messages_and_configs_from_arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
        let _ = ServerMessage::decode(bytes.as_slice());
        if let Ok(config) = AgentConfiguration::decode(bytes.as_slice()) {
            let _ = tether_proto::convert::from_proto(&config);
        }
    }
}
