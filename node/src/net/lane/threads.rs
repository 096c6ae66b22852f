//! The threads that move a lane's bytes. A lane is one TCP connection carrying frames one way:
//! the dialer's writer thread seals frames onto it and its ack thread reads the receiver's
//! sealed acknowledgements; the acceptor's reader thread opens frames, hands each to the swarm
//! loop and acknowledges it once the node has it. Blocking sockets on their own threads keep
//! the AEAD work off the swarm loop's thread and let sending and receiving use both cores.
//!
//! Every frame handed to a writer is reported back exactly once ([`LaneEvent::Delivered`]);
//! a broken lane reports [`LaneEvent::Closed`] and fails what it still holds.

use std::collections::VecDeque;
use std::net::{Shutdown, TcpStream};
use std::sync::mpsc as std_mpsc;
use std::thread;
use std::time::{Duration, Instant};

use gradmesh_protocol::PeerId;
use tokio::sync::{mpsc, oneshot};

use super::super::frame::{Frame, FrameCaps};
use super::super::messages::SendFailure;
use super::record::{self, AckReader, Cipher, Direction, KEY_BYTES, LaneError, RECORD_BYTES};

/// How often an ack thread wakes to check the oldest unacknowledged frame's age.
const ACK_POLL: Duration = Duration::from_millis(500);

/// Names one lane, so events of a replaced lane are told apart from its successor's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct LaneId(pub(crate) u64);

/// What lane threads and tasks report to the swarm loop.
#[derive(Debug)]
pub(crate) enum LaneEvent {
    /// A connection to our lane port presented `token`.
    Accepted {
        token: [u8; super::offer::TOKEN_BYTES],
        stream: TcpStream,
    },
    /// Our dial to `peer`'s lane port finished.
    Dialed {
        peer: PeerId,
        key: [u8; KEY_BYTES],
        stream: std::io::Result<TcpStream>,
    },
    /// A frame arrived on an inbound lane; send on `taken` once the node has it.
    Received {
        from: PeerId,
        frame: Frame,
        taken: oneshot::Sender<()>,
    },
    /// The outcome of a frame given to an outbound lane.
    Delivered {
        id: u64,
        outcome: Result<(), SendFailure>,
    },
    /// A lane to (`outbound`) or from `peer` is open. Made by [`Lanes::handle`](super::Lanes)
    /// itself, for the loop to announce.
    Opened { peer: PeerId, outbound: bool },
    /// A lane broke (or its peer closed it).
    Closed {
        peer: PeerId,
        lane: LaneId,
        error: String,
    },
}

/// A frame queued on an outbound lane.
#[derive(Debug)]
pub(crate) struct Job {
    pub(crate) id: u64,
    pub(crate) frame: Frame,
}

/// Settings every lane thread needs.
#[derive(Debug, Clone)]
pub(crate) struct LaneContext {
    pub(crate) events: mpsc::Sender<LaneEvent>,
    pub(crate) caps: FrameCaps,
    pub(crate) frame_timeout: Duration,
}

impl LaneContext {
    fn report(&self, event: LaneEvent) {
        // The loop is gone only when the node stops; nothing is left to tell then.
        let _ = self.events.blocking_send(event);
    }

    fn failed(&self, id: u64, reason: &SendFailure) {
        self.report(LaneEvent::Delivered {
            id,
            outcome: Err(reason.clone()),
        });
    }

    fn closed(&self, peer: PeerId, lane: LaneId, error: &LaneError) {
        self.report(LaneEvent::Closed {
            peer,
            lane,
            error: error.to_string(),
        });
    }
}

fn failure_of(error: &LaneError) -> SendFailure {
    match error {
        LaneError::Io(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) =>
        {
            SendFailure::Timeout
        }
        LaneError::Io(e) => SendFailure::Io(e.kind()),
        _ => SendFailure::ConnectionClosed,
    }
}

/// The swarm loop's handle on a lane: dropping it shuts the socket, which ends the threads.
#[derive(Debug)]
pub(crate) struct LaneHandle {
    pub(crate) id: LaneId,
    socket: TcpStream,
    /// Outbound lanes only: the writer's queue.
    jobs: Option<std_mpsc::Sender<Job>>,
}

impl LaneHandle {
    /// Queues a frame; gives it back when the writer has already stopped.
    pub(crate) fn send(&self, job: Job) -> Result<(), Job> {
        match &self.jobs {
            Some(jobs) => jobs.send(job).map_err(|e| e.0),
            None => Err(job),
        }
    }
}

impl Drop for LaneHandle {
    fn drop(&mut self) {
        let _ = self.socket.shutdown(Shutdown::Both);
    }
}

fn spawn(name: &str, body: impl FnOnce() + Send + 'static) -> std::io::Result<()> {
    thread::Builder::new()
        .name(name.to_owned())
        .spawn(body)
        .map(|_| ())
}

/// Sets a lane socket up for either end (no Nagle delay; a write that stalls past the frame
/// timeout fails) and returns the clone [`LaneHandle`] shuts it down with.
fn prepare(stream: &TcpStream, ctx: &LaneContext) -> std::io::Result<TcpStream> {
    stream.set_nodelay(true)?;
    stream.set_write_timeout(Some(ctx.frame_timeout))?;
    stream.try_clone()
}

/// Starts the writer and ack threads of a lane we dialed to `peer`.
pub(crate) fn start_outbound(
    peer: PeerId,
    id: LaneId,
    stream: TcpStream,
    key: &[u8; KEY_BYTES],
    ctx: &LaneContext,
) -> std::io::Result<LaneHandle> {
    let socket = prepare(&stream, ctx)?;
    let acks_in = stream.try_clone()?;
    acks_in.set_read_timeout(Some(ACK_POLL))?;
    let cipher = Cipher::new(key, Direction::Frames).map_err(std::io::Error::other)?;
    let acks_cipher = Cipher::new(key, Direction::Acks).map_err(std::io::Error::other)?;
    let (jobs_tx, jobs) = std_mpsc::channel();
    let (written_tx, written) = std_mpsc::channel();
    let writer = Writer {
        peer,
        id,
        stream,
        cipher,
        ctx: ctx.clone(),
    };
    spawn("gm-lane-tx", move || writer.run(&jobs, &written_tx))?;
    let acks = Acks {
        peer,
        id,
        stream: acks_in,
        reader: AckReader::new(acks_cipher),
        ctx: ctx.clone(),
    };
    spawn("gm-lane-ack", move || acks.run(&written))?;
    Ok(LaneHandle {
        id,
        socket,
        jobs: Some(jobs_tx),
    })
}

/// Starts the reader thread of a lane `peer` dialed to us.
pub(crate) fn start_inbound(
    peer: PeerId,
    id: LaneId,
    stream: TcpStream,
    key: &[u8; KEY_BYTES],
    ctx: &LaneContext,
) -> std::io::Result<LaneHandle> {
    let socket = prepare(&stream, ctx)?;
    let reader = Reader {
        peer,
        id,
        stream,
        frames: Cipher::new(key, Direction::Frames).map_err(std::io::Error::other)?,
        acks: Cipher::new(key, Direction::Acks).map_err(std::io::Error::other)?,
        ctx: ctx.clone(),
    };
    spawn("gm-lane-rx", move || reader.run())?;
    Ok(LaneHandle {
        id,
        socket,
        jobs: None,
    })
}

struct Writer {
    peer: PeerId,
    id: LaneId,
    stream: TcpStream,
    cipher: Cipher,
    ctx: LaneContext,
}

impl Writer {
    /// Seals frames until the lane is dropped; after a failure it fails every frame still
    /// queued, so each is reported once.
    fn run(mut self, jobs: &std_mpsc::Receiver<Job>, written: &std_mpsc::Sender<u64>) {
        let mut scratch = Vec::with_capacity(RECORD_BYTES + 16);
        let mut broken = None;
        for job in jobs {
            if let Some(reason) = &broken {
                self.ctx.failed(job.id, reason);
                continue;
            }
            let sent = record::write_frame(
                &mut self.stream,
                &mut self.cipher,
                &job.frame,
                &self.ctx.caps,
                &mut scratch,
            );
            match sent {
                Ok(()) => {
                    let _ = written.send(job.id);
                }
                Err(e) => {
                    let _ = self.stream.shutdown(Shutdown::Both);
                    self.ctx.closed(self.peer, self.id, &e);
                    let reason = failure_of(&e);
                    self.ctx.failed(job.id, &reason);
                    broken = Some(reason);
                }
            }
        }
    }
}

struct Acks {
    peer: PeerId,
    id: LaneId,
    stream: TcpStream,
    reader: AckReader,
    ctx: LaneContext,
}

impl Acks {
    /// Matches acknowledgements to written frames in order; a frame unacknowledged past the
    /// frame timeout, a forged ack or a closed socket breaks the lane.
    fn run(mut self, written: &std_mpsc::Receiver<u64>) {
        let mut waiting: VecDeque<(u64, Instant)> = VecDeque::new();
        let error = loop {
            let result = self.reader.next(&mut self.stream);
            waiting.extend(written.try_iter().map(|id| (id, Instant::now())));
            match result {
                Ok(()) => {
                    let id = match waiting.pop_front() {
                        Some((id, _)) => id,
                        // The writer reports a frame as written just after its last byte.
                        None => match written.recv() {
                            Ok(id) => id,
                            Err(_) => break LaneError::BadAck,
                        },
                    };
                    self.ctx.report(LaneEvent::Delivered {
                        id,
                        outcome: Ok(()),
                    });
                }
                Err(e) if e.is_timeout() => {
                    if waiting
                        .front()
                        .is_some_and(|(_, at)| at.elapsed() > self.ctx.frame_timeout)
                    {
                        break e;
                    }
                }
                Err(e) => break e,
            }
        };
        let _ = self.stream.shutdown(Shutdown::Both);
        self.ctx.closed(self.peer, self.id, &error);
        let reason = failure_of(&error);
        let unacked = waiting.into_iter().map(|(id, _)| id).chain(written.iter());
        for id in unacked {
            self.ctx.failed(id, &reason);
        }
    }
}

struct Reader {
    peer: PeerId,
    id: LaneId,
    stream: TcpStream,
    frames: Cipher,
    acks: Cipher,
    ctx: LaneContext,
}

impl Reader {
    fn run(mut self) {
        let error = loop {
            match self.next_frame() {
                Ok(true) => {}
                Ok(false) => return,
                Err(e) => break e,
            }
        };
        let _ = self.stream.shutdown(Shutdown::Both);
        self.ctx.closed(self.peer, self.id, &error);
    }

    /// Reads one frame, hands it on, waits until the node has it and acknowledges it. `false`
    /// when the swarm loop is gone.
    fn next_frame(&mut self) -> Result<bool, LaneError> {
        // An idle lane waits for the next frame without limit; once a frame has begun, its
        // whole body must arrive within the frame timeout (not each read: a peer trickling a
        // byte at a time would hold the lane and the frame's buffer forever).
        self.stream.set_read_timeout(None)?;
        let lens = record::read_prefix(&mut self.stream, &mut self.frames, &self.ctx.caps)?;
        let mut body = Deadline {
            stream: &self.stream,
            at: Instant::now() + self.ctx.frame_timeout,
        };
        let frame = record::read_body(&mut body, &mut self.frames, lens)?;
        let (taken, has_it) = oneshot::channel();
        let received = LaneEvent::Received {
            from: self.peer,
            frame,
            taken,
        };
        if self.ctx.events.blocking_send(received).is_err() || has_it.blocking_recv().is_err() {
            return Ok(false);
        }
        record::write_ack(&mut self.stream, &mut self.acks)?;
        Ok(true)
    }
}

/// Reads from a socket until a deadline: each read waits at most the time left, and reads past
/// the deadline fail with [`std::io::ErrorKind::TimedOut`].
pub(super) struct Deadline<'a> {
    pub(super) stream: &'a TcpStream,
    pub(super) at: Instant,
}

impl std::io::Read for Deadline<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let left = self.at.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(std::io::ErrorKind::TimedOut.into());
        }
        self.stream.set_read_timeout(Some(left))?;
        std::io::Read::read(&mut self.stream, buf)
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::TcpListener;

    use super::*;

    /// A sender trickling bytes faster than any one read's timeout still runs into the
    /// deadline of the whole body.
    #[test]
    fn a_trickled_body_ends_at_its_deadline() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let writer = thread::spawn(move || {
            let mut out = TcpStream::connect(addr).expect("connect");
            for _ in 0..40 {
                if out.write_all(&[1]).is_err() {
                    break;
                }
                thread::sleep(Duration::from_millis(50));
            }
        });
        let (stream, _) = listener.accept().expect("accept");
        let start = Instant::now();
        let mut body = Deadline {
            stream: &stream,
            at: start + Duration::from_millis(400),
        };
        let mut buf = vec![0u8; 1 << 20];
        let error = body
            .read_exact(&mut buf)
            .expect_err("a trickle never fills 1 MiB");
        assert!(
            matches!(
                error.kind(),
                std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
            ),
            "{error}"
        );
        let took = start.elapsed();
        assert!(
            took >= Duration::from_millis(400) && took < Duration::from_millis(1500),
            "{took:?}"
        );
        drop(stream);
        writer.join().expect("writer");
    }
}
