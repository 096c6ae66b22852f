//! Smoke mode: runs the network layer alone. It publishes a small signed "hello" announcement
//! periodically and logs peers joining and leaving and the hellos it hears. It trains nothing;
//! it shows that a node can reach its mesh.

use std::time::Duration;

use actix::prelude::*;
use gradmesh_protocol::PeerId;
use serde::{Deserialize, Serialize};

use crate::net::{
    Keypair, NetConfig, NetError, NetEvent, NetInfo, Network, Publish, PublishFailure, StartError,
};

/// An encoded [`Hello`] is far below this; larger input is refused before decoding.
pub const HELLO_BYTES_MAX: usize = 128;

/// The smoke-mode announcement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// The announcing peer.
    pub peer: PeerId,
    /// How many hellos it has sent, starting at 1.
    pub counter: u64,
}

impl Hello {
    /// bincode 2, standard configuration.
    #[must_use]
    pub fn encode(&self) -> Vec<u8> {
        // Encoding a struct of fixed-size fields into a Vec cannot fail.
        bincode::serde::encode_to_vec(self, bincode::config::standard()).unwrap_or_default()
    }

    /// Decodes with a size limit; peer bytes never panic.
    pub fn decode(bytes: &[u8]) -> Result<Self, bincode::error::DecodeError> {
        let config = bincode::config::standard().with_limit::<HELLO_BYTES_MAX>();
        bincode::serde::decode_from_slice(bytes, config).map(|(hello, _)| hello)
    }
}

/// The smoke actor: subscriber of the network layer.
#[derive(Debug)]
pub struct Smoke {
    network: Addr<Network>,
    local: PeerId,
    counter: u64,
    period: Duration,
}

impl Smoke {
    /// Starts the network layer with this actor as its subscriber.
    pub async fn start(
        config: NetConfig,
        keypair: Keypair,
        period: Duration,
    ) -> Result<(Addr<Self>, NetInfo), StartError> {
        let ctx = Context::<Self>::new();
        let (network, info) = Network::start(config, keypair, ctx.address().recipient()).await?;
        let smoke = Self {
            network,
            local: info.local_peer,
            counter: 0,
            period,
        };
        Ok((ctx.run(smoke), info))
    }

    fn announce(&mut self, ctx: &mut Context<Self>) {
        self.counter += 1;
        let hello = Hello {
            peer: self.local,
            counter: self.counter,
        };
        let publish = Publish {
            bytes: hello.encode().into(),
        };
        // Spawned, not waited on: the network actor may be waiting for us to take an event.
        ctx.spawn(self.network.send(publish).into_actor(self).map(
            move |result, _, _| match result {
                Ok(Ok(())) => tracing::debug!(counter = hello.counter, "hello sent"),
                Ok(Err(NetError::Publish(PublishFailure::NoPeers))) => {
                    tracing::debug!("no peer on the announcement topic yet");
                }
                Ok(Err(error)) => tracing::warn!(%error, "hello not sent"),
                Err(_) => {
                    tracing::error!("network layer stopped");
                    System::current().stop_with_code(1);
                }
            },
        ));
    }
}

impl Actor for Smoke {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.run_interval(self.period, Self::announce);
    }
}

impl Handler<NetEvent> for Smoke {
    type Result = ();

    fn handle(&mut self, event: NetEvent, _: &mut Self::Context) {
        match event {
            NetEvent::PeerConnected { peer } => tracing::info!(%peer, "peer joined"),
            NetEvent::PeerDisconnected { peer } => tracing::info!(%peer, "peer left"),
            NetEvent::GossipReceived { from, bytes } => match Hello::decode(&bytes) {
                Ok(hello) if hello.peer == from => {
                    tracing::info!(%from, counter = hello.counter, "hello");
                }
                Ok(hello) => {
                    tracing::warn!(%from, claimed = %hello.peer, "hello names another peer")
                }
                Err(_) => tracing::debug!(%from, "announcement is not a hello"),
            },
            NetEvent::DialFailed { peer, failure } => {
                tracing::warn!(?peer, %failure, "dial failed");
            }
            NetEvent::ListeningOn { .. }
            | NetEvent::AnnouncementsJoined { .. }
            | NetEvent::FrameReceived { .. } => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hello_round_trips_and_garbage_is_an_error() {
        let hello = Hello {
            peer: PeerId::from_index(3),
            counter: 42,
        };
        let bytes = hello.encode();
        assert!(bytes.len() <= HELLO_BYTES_MAX);
        assert_eq!(Hello::decode(&bytes).expect("decode"), hello);
        assert!(Hello::decode(&[0xff; 3]).is_err());
        let _ = Hello::decode(&[0u8; 4096]);
    }
}
