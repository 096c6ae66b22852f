//! Lanes: a direct TCP connection per peer and direction for large frames, sealed with
//! AES-256-GCM under a key the receiver sent over its libp2p connection.
//!
//! Why: libp2p's TCP stack moves a frame through yamux (16 KiB data frames), noise
//! (ChaCha20-Poly1305 in 64 KiB messages) and five user-space copies per byte, all on the
//! swarm loop's one thread; on the 2-core dev box one 64 MiB frame moves at ~470 MB/s, about a
//! third of what the cipher alone allows (docs/operator.md, "Measured throughput"). A lane seals
//! 256 KiB records in place (AES-GCM runs 3–4× faster than ChaCha20 on CPUs with AES
//! instructions), with one copy on the sending side and none on the receiving side, on threads
//! of its own: ~1 GB/s for the same frame.
//!
//! Trust comes entirely from the libp2p connection: when a peer connects, the node sends it a
//! [`LaneOffer`] over that connection — noise-encrypted, authenticated as this node, and behind
//! the mesh key when there is one — holding a fresh random token and key. The peer dials the
//! lane port, presents the token (used once), and seals every record with the key; records
//! carry counter nonces, so nothing can be replayed, reordered or cut unnoticed. A connection
//! that presents anything else is dropped. Frames below [`LANE_PAYLOAD_MIN`], frames to peers
//! without a lane, and everything when lanes are off (`--no-lanes`) use libp2p's frame protocol.

mod offer;
pub(super) mod record;
mod threads;

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::time::{Duration, Instant};

use gradmesh_protocol::PeerId;
use libp2p::Multiaddr;
use libp2p::multiaddr::Protocol;
use ring::rand::{SecureRandom, SystemRandom};
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};

use super::frame::{Frame, FrameCaps};

pub(crate) use offer::{LANE_PROTOCOL, LaneOffer, OfferAck, OfferCodec};
pub(crate) use threads::{Job, LaneEvent};
use threads::{LaneContext, LaneHandle, LaneId};

/// Frames with at least this many payload bytes go over a lane when the peer has one.
pub const LANE_PAYLOAD_MIN: usize = 64 * 1024;
/// A connection to the lane port must present its token within this time.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// Dialing a peer's lane port gives up after this time.
const DIAL_TIMEOUT: Duration = Duration::from_secs(5);
/// Unanswered offers are forgotten after this time.
const OFFER_TTL: Duration = Duration::from_secs(60);
/// Connections to the lane port that may be presenting their token at once.
const HANDSHAKES_MAX: usize = 64;
/// Of those, from one IP address.
const HANDSHAKES_PER_IP_MAX: usize = 16;
/// Events queued from lane threads to the swarm loop.
const EVENT_QUEUE_CAPACITY: usize = 64;

/// An offer awaiting its dialer.
#[derive(Debug)]
struct Offer {
    peer: PeerId,
    key: [u8; record::KEY_BYTES],
    made: Instant,
}

/// The swarm loop's lanes: offers made, lanes open in both directions, and each peer's address.
#[derive(Debug)]
pub(crate) struct Lanes {
    /// Our lane port; `None` when lanes are off.
    port: Option<u16>,
    offers: HashMap<[u8; offer::TOKEN_BYTES], Offer>,
    outbound: HashMap<PeerId, LaneHandle>,
    inbound: HashMap<PeerId, LaneHandle>,
    /// The address each connected peer's libp2p connection runs to: its lane is dialed there.
    ips: HashMap<PeerId, IpAddr>,
    ctx: LaneContext,
    next_id: u64,
    rng: SystemRandom,
}

impl Lanes {
    /// Binds the lane port on the first listen address's IP (when `enabled`) and starts
    /// accepting. Returns the lanes, where they listen, and the events the loop must feed to
    /// [`Lanes::handle`].
    pub(crate) async fn start(
        enabled: bool,
        port: u16,
        listen: &[Multiaddr],
        caps: FrameCaps,
        frame_timeout: Duration,
    ) -> std::io::Result<(Self, Option<SocketAddr>, mpsc::Receiver<LaneEvent>)> {
        let (events, events_rx) = mpsc::channel(EVENT_QUEUE_CAPACITY);
        let ip = listen.iter().find_map(ip_of);
        let bound = match (enabled, ip) {
            (true, Some(ip)) => {
                let listener = TcpListener::bind((ip, port)).await?;
                let addr = listener.local_addr()?;
                actix::spawn(accept(listener, events.clone()));
                Some(addr)
            }
            _ => None,
        };
        let lanes = Self {
            port: bound.map(|a| a.port()),
            offers: HashMap::new(),
            outbound: HashMap::new(),
            inbound: HashMap::new(),
            ips: HashMap::new(),
            ctx: LaneContext {
                events,
                caps,
                frame_timeout,
            },
            next_id: 0,
            rng: SystemRandom::new(),
        };
        Ok((lanes, bound, events_rx))
    }

    /// A peer connected through `remote`: remembers its IP and returns the offer to send it,
    /// when lanes are on.
    pub(crate) fn connected(&mut self, peer: PeerId, remote: &Multiaddr) -> Option<LaneOffer> {
        if let Some(ip) = ip_of(remote) {
            self.ips.insert(peer, ip);
        }
        let port = self.port?;
        let mut secret = [0u8; offer::TOKEN_BYTES + record::KEY_BYTES];
        self.rng.fill(&mut secret).ok()?;
        let (token, key) = secret.split_at(offer::TOKEN_BYTES);
        let token: [u8; offer::TOKEN_BYTES] = token.try_into().ok()?;
        let key: [u8; record::KEY_BYTES] = key.try_into().ok()?;
        self.offers
            .retain(|_, o| o.made.elapsed() < OFFER_TTL && o.peer != peer);
        self.offers.insert(
            token,
            Offer {
                peer,
                key,
                made: Instant::now(),
            },
        );
        Some(LaneOffer { port, token, key })
    }

    /// A peer's last connection closed: its lanes close with it.
    pub(crate) fn disconnected(&mut self, peer: &PeerId) {
        self.ips.remove(peer);
        self.outbound.remove(peer);
        self.inbound.remove(peer);
        self.offers.retain(|_, o| o.peer != *peer);
    }

    /// `peer` offered us a lane: dial it (in a task; the result comes back as an event). A node
    /// with lanes off sends everything over libp2p and declines.
    pub(crate) fn offered(&self, peer: PeerId, offer: LaneOffer) {
        if self.port.is_none() {
            return;
        }
        let Some(ip) = self.ips.get(&peer).copied() else {
            tracing::debug!(%peer, "lane offer from a peer without an IP address; ignored");
            return;
        };
        let events = self.ctx.events.clone();
        actix::spawn(async move {
            let dial = async {
                let mut stream = TcpStream::connect((ip, offer.port)).await?;
                tokio::io::AsyncWriteExt::write_all(&mut stream, &offer.token).await?;
                let stream = stream.into_std()?;
                stream.set_nonblocking(false)?;
                Ok(stream)
            };
            let stream = tokio::time::timeout(DIAL_TIMEOUT, dial)
                .await
                .unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into()));
            let _ = events
                .send(LaneEvent::Dialed {
                    peer,
                    key: offer.key,
                    stream,
                })
                .await;
        });
    }

    /// Queues `frame` on the lane to `to` under `id`; gives it back when it should go over
    /// libp2p instead (small, or no lane).
    pub(crate) fn send(&self, to: &PeerId, id: u64, frame: Frame) -> Result<(), Frame> {
        match self.outbound.get(to) {
            Some(lane) if frame.payload.len() >= LANE_PAYLOAD_MIN => {
                lane.send(Job { id, frame }).map_err(|job| job.frame)
            }
            _ => Err(frame),
        }
    }

    /// Takes the lane-management events; returns the ones the loop must act on itself
    /// ([`LaneEvent::Received`], [`LaneEvent::Delivered`] and [`LaneEvent::Opened`]).
    pub(crate) fn handle(&mut self, event: LaneEvent) -> Option<LaneEvent> {
        match event {
            LaneEvent::Accepted { token, stream } => {
                let offer = self
                    .offers
                    .remove(&token)
                    .filter(|o| o.made.elapsed() < OFFER_TTL);
                let Some(offer) = offer else {
                    tracing::debug!("lane connection with an unknown token; dropped");
                    return None;
                };
                let id = self.next_lane_id();
                match threads::start_inbound(offer.peer, id, stream, &offer.key, &self.ctx) {
                    Ok(lane) => {
                        tracing::debug!(peer = %offer.peer, "inbound lane open");
                        self.inbound.insert(offer.peer, lane);
                        Some(LaneEvent::Opened {
                            peer: offer.peer,
                            outbound: false,
                        })
                    }
                    Err(error) => {
                        tracing::warn!(peer = %offer.peer, %error, "inbound lane");
                        None
                    }
                }
            }
            LaneEvent::Dialed { peer, key, stream } => {
                let id = self.next_lane_id();
                let started =
                    stream.and_then(|s| threads::start_outbound(peer, id, s, &key, &self.ctx));
                match started {
                    Ok(lane) if self.ips.contains_key(&peer) => {
                        tracing::debug!(%peer, "outbound lane open");
                        self.outbound.insert(peer, lane);
                        return Some(LaneEvent::Opened {
                            peer,
                            outbound: true,
                        });
                    }
                    Ok(_) => {} // disconnected meanwhile: dropping the handle closes it
                    Err(error) => {
                        tracing::warn!(%peer, %error, "cannot open a lane; frames use libp2p");
                    }
                }
                None
            }
            LaneEvent::Closed { peer, lane, error } => {
                tracing::info!(%peer, %error, "lane closed; frames to and from it use libp2p");
                for lanes in [&mut self.outbound, &mut self.inbound] {
                    if lanes.get(&peer).is_some_and(|l| l.id == lane) {
                        lanes.remove(&peer);
                    }
                }
                None
            }
            other @ (LaneEvent::Received { .. }
            | LaneEvent::Delivered { .. }
            | LaneEvent::Opened { .. }) => Some(other),
        }
    }

    fn next_lane_id(&mut self) -> LaneId {
        self.next_id += 1;
        LaneId(self.next_id)
    }
}

/// The IP of an address's first `/ip4` or `/ip6` component.
pub(crate) fn ip_of(addr: &Multiaddr) -> Option<IpAddr> {
    addr.iter().find_map(|p| match p {
        Protocol::Ip4(ip) => Some(IpAddr::V4(ip)),
        Protocol::Ip6(ip) => Some(IpAddr::V6(ip)),
        _ => None,
    })
}

/// Accepts lane connections; each must present a token within [`HANDSHAKE_TIMEOUT`]. At most
/// [`HANDSHAKES_MAX`] may be presenting at once, and at most [`HANDSHAKES_PER_IP_MAX`] from one
/// address; above either limit the *oldest* such handshake is dropped for the new one, so idle
/// connections cannot lock out a peer whose token arrives within moments of its connect.
/// Runs until the arbiter stops.
async fn accept(listener: TcpListener, events: mpsc::Sender<LaneEvent>) {
    let pending = Rc::new(RefCell::new(Handshakes::default()));
    loop {
        let Ok((mut stream, from)) = listener.accept().await else {
            // Out of descriptors, typically: wait instead of spinning.
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let (id, mut cancelled) = pending.borrow_mut().admit(from.ip());
        let events = events.clone();
        let pending = Rc::clone(&pending);
        actix::spawn(async move {
            let mut token = [0u8; offer::TOKEN_BYTES];
            let read = tokio::time::timeout(HANDSHAKE_TIMEOUT, stream.read_exact(&mut token));
            let read = tokio::select! {
                read = read => matches!(read, Ok(Ok(_))),
                _ = &mut cancelled => false,
            };
            pending.borrow_mut().finish(id);
            if !read {
                tracing::debug!(%from, "lane connection without a token; dropped");
                return;
            }
            let Ok(stream) = stream.into_std() else {
                return;
            };
            if stream.set_nonblocking(false).is_ok() {
                let _ = events.send(LaneEvent::Accepted { token, stream }).await;
            }
        });
    }
}

/// Lane connections presenting their token, oldest first.
#[derive(Debug, Default)]
struct Handshakes {
    next: u64,
    /// `(id, source, cancel)`: dropping `cancel` ends that handshake.
    open: VecDeque<(u64, IpAddr, oneshot::Sender<()>)>,
}

impl Handshakes {
    /// Makes room for a handshake from `ip` (dropping the oldest from `ip`, or the oldest of
    /// all, when a limit is reached) and returns its id and cancellation.
    fn admit(&mut self, ip: IpAddr) -> (u64, oneshot::Receiver<()>) {
        let from_ip = self.open.iter().filter(|(_, at, _)| *at == ip).count();
        let evict = if from_ip >= HANDSHAKES_PER_IP_MAX {
            self.open.iter().position(|(_, at, _)| *at == ip)
        } else if self.open.len() >= HANDSHAKES_MAX {
            Some(0)
        } else {
            None
        };
        if let Some(oldest) = evict.and_then(|i| self.open.remove(i)) {
            tracing::debug!(from = %oldest.1, "lane handshakes full; dropping the oldest");
        }
        let (cancel, cancelled) = oneshot::channel();
        self.next += 1;
        self.open.push_back((self.next, ip, cancel));
        (self.next, cancelled)
    }

    fn finish(&mut self, id: u64) {
        self.open.retain(|(open, _, _)| *open != id);
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use tokio::io::AsyncWriteExt;

    use super::*;

    #[test]
    fn full_handshakes_drop_the_oldest_per_address_then_overall() {
        let mut h = Handshakes::default();
        let a = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
        let mut from_a: Vec<_> = (0..HANDSHAKES_PER_IP_MAX).map(|_| h.admit(a)).collect();
        // One more from `a` cancels a's oldest, not anyone else's.
        let _newest = h.admit(a);
        assert!(
            from_a[0]
                .1
                .try_recv()
                .is_err_and(|e| e == oneshot::error::TryRecvError::Closed)
        );
        assert!(
            from_a[1]
                .1
                .try_recv()
                .is_err_and(|e| e == oneshot::error::TryRecvError::Empty)
        );
        // Many addresses: the oldest of all goes.
        let others: Vec<_> = (0..HANDSHAKES_MAX)
            .map(|i| h.admit(IpAddr::V4(Ipv4Addr::new(10, 1, 0, i as u8))))
            .collect();
        assert_eq!(h.open.len(), HANDSHAKES_MAX);
        assert!(
            from_a[1]
                .1
                .try_recv()
                .is_err_and(|e| e == oneshot::error::TryRecvError::Closed)
        );
        h.finish(others[HANDSHAKES_MAX - 1].0);
        assert_eq!(h.open.len(), HANDSHAKES_MAX - 1);
    }

    /// Row 8 of the hostile-peer table: 64 idle connections used to fill every handshake slot
    /// and a peer presenting its token meanwhile was dropped.
    #[test]
    fn idle_connections_do_not_lock_out_a_token() {
        actix::System::new().block_on(async {
            let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            let addr = listener.local_addr().expect("addr");
            let (events, mut accepted) = mpsc::channel(4);
            actix::spawn(accept(listener, events));
            let mut idle = Vec::new();
            for _ in 0..2 * HANDSHAKES_MAX {
                idle.push(TcpStream::connect(addr).await.expect("idle connect"));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            let mut honest = TcpStream::connect(addr).await.expect("connect");
            honest.write_all(&[9u8; offer::TOKEN_BYTES]).await.expect("token");
            let event = tokio::time::timeout(Duration::from_secs(2), accepted.recv())
                .await
                .expect("the token was taken while idle connections were open")
                .expect("an event");
            assert!(matches!(event, LaneEvent::Accepted { token, .. } if token == [9; offer::TOKEN_BYTES]));
            drop(idle);
        });
    }
}
