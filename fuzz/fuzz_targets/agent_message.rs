//! What kas decodes from an agent, and agentk from kas.
#![no_main]

use prost::Message as _;
use tether_proto::v1::{AgentConfiguration, AgentMessage, ServerMessage};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = AgentMessage::decode(data);
    let _ = ServerMessage::decode(data);
    if let Ok(config) = AgentConfiguration::decode(data) {
        let _ = tether_proto::convert::from_proto(&config);
    }
});
