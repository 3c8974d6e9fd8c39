//! A raw agent: the channel protocol spoken directly, to do what agentk
//! never would (hold a session without pinging, send reports for projects
//! it was never given, open hundreds of sessions on one connection).

use std::time::Duration;

use tether_proto::PROTOCOL_VERSION;
use tether_proto::v1::agent_channel_client::AgentChannelClient;
use tether_proto::v1::{AgentMessage, Hello, PodIdentity, ServerMessage, agent_message};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

use super::Setup;

/// One connection to kas's agent endpoint, trusting its development CA.
pub async fn connect(setup: &Setup) -> Channel {
    let ca = std::fs::read(setup.dir.path().join("kas/agent-ca.crt")).expect("kas CA");
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca))
        .domain_name("localhost");
    Endpoint::from_shared(format!("https://{}", setup.agent_endpoint))
        .expect("endpoint")
        .tls_config(tls)
        .expect("tls")
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .expect("connects")
}

pub fn hello(pod: &str) -> AgentMessage {
    AgentMessage {
        message: Some(agent_message::Message::Hello(Hello {
            protocol_version: PROTOCOL_VERSION,
            agent_version: "raw-test".into(),
            pod: Some(PodIdentity {
                namespace: "raw".into(),
                name: pod.into(),
            }),
            cluster_version: "v1.35.4".into(),
            config_commit: String::new(),
            synced: Vec::new(),
            api_versions: Vec::new(),
        })),
    }
}

/// An open session: what to send, and what kas sent.
#[derive(Debug)]
pub struct Session {
    pub tx: mpsc::Sender<AgentMessage>,
    pub inbound: tonic::Streaming<ServerMessage>,
}

/// Opens a session with `token`, sending `first` (usually [`hello`]) if
/// given; kas answers once it has a Hello.
pub async fn session(
    channel: Channel,
    token: &str,
    first: Option<AgentMessage>,
) -> Result<Session, tonic::Status> {
    let (tx, rx) = mpsc::channel(64);
    if let Some(first) = first {
        tx.send(first).await.expect("queued");
    }
    let mut request = tonic::Request::new(ReceiverStream::new(rx));
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("header"),
    );
    let inbound = AgentChannelClient::new(channel)
        .session(request)
        .await?
        .into_inner();
    Ok(Session { tx, inbound })
}

/// A syntactically valid agent token that kas never issued.
pub fn bogus_token(i: usize) -> String {
    format!("tthr_agent_{:0>43}", i)
}
