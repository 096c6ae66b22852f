//! The lane offer: a receiver's invitation to send it frames over a lane, carried by a small
//! request-response protocol on the libp2p connection (so it is noise-encrypted, authenticated
//! as the offering peer, and behind the mesh key when there is one).

use std::io;

use bincode::{Decode, Encode};
use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::StreamProtocol;

use super::record::KEY_BYTES;

/// The request-response protocol name of lane offers.
pub(crate) const LANE_PROTOCOL: StreamProtocol = StreamProtocol::new("/gradmesh/lane/1.0.0");
/// Length of the token a dialer presents first on a lane.
pub(crate) const TOKEN_BYTES: usize = 32;
/// Encoded size of an offer: port, token, key.
const OFFER_BYTES: usize = 2 + TOKEN_BYTES + KEY_BYTES;
/// The one-byte answer to an offer.
const OFFER_ACK: u8 = 0x5A;

/// A lane offer. The token names the lane when the dialer connects; the key seals its records.
/// Both are fresh per offer and used once.
#[derive(Clone, Copy, PartialEq, Eq, Encode, Decode)]
pub(crate) struct LaneOffer {
    /// The offering peer's lane port, on the address its libp2p connection comes from.
    pub(crate) port: u16,
    pub(crate) token: [u8; TOKEN_BYTES],
    pub(crate) key: [u8; KEY_BYTES],
}

impl std::fmt::Debug for LaneOffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LaneOffer")
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

/// The acknowledgement of an offer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct OfferAck;

fn offer_config() -> impl bincode::config::Config {
    bincode::config::standard()
        .with_little_endian()
        .with_fixed_int_encoding()
        .with_limit::<OFFER_BYTES>()
}

/// The request-response codec of lane offers: fixed-size, so nothing is allocated for input.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct OfferCodec;

impl libp2p::request_response::Codec for OfferCodec {
    type Protocol = StreamProtocol;
    type Request = LaneOffer;
    type Response = OfferAck;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<LaneOffer>
    where
        T: AsyncRead + Unpin + Send,
    {
        let mut bytes = [0u8; OFFER_BYTES];
        io.read_exact(&mut bytes).await?;
        bincode::decode_from_slice(&bytes, offer_config())
            .map(|(offer, _)| offer)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "malformed lane offer"))
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<OfferAck>
    where
        T: AsyncRead + Unpin + Send,
    {
        let mut ack = [0u8; 1];
        io.read_exact(&mut ack).await?;
        if ack[0] == OFFER_ACK {
            Ok(OfferAck)
        } else {
            Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "bad lane offer ack",
            ))
        }
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        offer: LaneOffer,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        let mut bytes = [0u8; OFFER_BYTES];
        bincode::encode_into_slice(offer, &mut bytes, offer_config())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "lane offer encoding"))?;
        io.write_all(&bytes).await?;
        io.flush().await
    }

    async fn write_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        _: OfferAck,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        io.write_all(&[OFFER_ACK]).await?;
        io.flush().await
    }
}

#[cfg(test)]
mod tests {
    use libp2p::request_response::Codec;

    use super::*;

    #[test]
    fn offers_round_trip_and_hostile_bytes_are_refused() {
        futures::executor::block_on(async {
            let offer = LaneOffer {
                port: 40_123,
                token: [3; TOKEN_BYTES],
                key: [9; KEY_BYTES],
            };
            let mut wire = Vec::new();
            let mut codec = OfferCodec;
            codec
                .write_request(&LANE_PROTOCOL, &mut wire, offer)
                .await
                .expect("written");
            assert_eq!(wire.len(), OFFER_BYTES);
            let read = codec.read_request(&LANE_PROTOCOL, &mut &wire[..]).await;
            assert_eq!(read.expect("read"), offer);
            let short = codec
                .read_request(&LANE_PROTOCOL, &mut &wire[..OFFER_BYTES - 1])
                .await;
            assert!(short.is_err());
            assert!(!format!("{offer:?}").contains('9'), "the key never prints");
        });
    }
}
