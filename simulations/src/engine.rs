//! The discrete-event engine: a `(time, seq)` priority queue, a clock that jumps to the next
//! event, and the driver that connects an [`Application`] to the [`Network`].
//!
//! The one interface between the network model and whatever runs on the peers: an application
//! asks for "a message of `bytes` bytes from `a` to `b`" with [`Outbox::send`], and gets it back
//! as one [`Application::handle_message`] call at the simulated instant it arrives. Timers are the
//! only other input. The protocol's sans-IO machines plug in behind an `Application` that
//! translates their `poll_*` outputs into sends and timers.

use crate::net::{Delivered, Network, PeerIdx, SendStatus};
use crate::time::SimTime;
use core::cmp::Reverse;
use std::collections::BinaryHeap;

/// Something that runs on the simulated peers.
pub trait Application {
    /// What a message carries (the bytes on the wire are given separately).
    type Payload;
    /// The application's timer kinds.
    type Timer;

    /// A message from the network has arrived at `msg.to`.
    fn handle_message(
        &mut self,
        now: SimTime,
        msg: Delivered<Self::Payload>,
        out: &mut Outbox<Self::Payload, Self::Timer>,
    );

    /// A timer set with [`Outbox::set_timer`] has fired.
    fn handle_timer(
        &mut self,
        now: SimTime,
        timer: Self::Timer,
        out: &mut Outbox<Self::Payload, Self::Timer>,
    );
}

/// A command from the application to the simulator.
#[derive(Debug)]
enum Command<P, T> {
    Send {
        from: PeerIdx,
        to: PeerIdx,
        bytes: u64,
        payload: P,
    },
    Timer {
        at: SimTime,
        timer: T,
    },
    PeerDown(PeerIdx),
    PeerUp(PeerIdx),
    Partition(Vec<u32>),
    Repair,
}

/// Where an application puts its commands; applied in order right after the call returns.
#[derive(Debug)]
pub struct Outbox<P, T> {
    commands: Vec<Command<P, T>>,
}

impl<P, T> Default for Outbox<P, T> {
    fn default() -> Self {
        Self {
            commands: Vec::new(),
        }
    }
}

impl<P, T> Outbox<P, T> {
    /// Sends `bytes` bytes from `from` to `to`, carrying `payload`.
    pub fn send(&mut self, from: PeerIdx, to: PeerIdx, bytes: u64, payload: P) {
        self.commands.push(Command::Send {
            from,
            to,
            bytes,
            payload,
        });
    }

    /// Fires `timer` at `at` (not before the current instant).
    pub fn set_timer(&mut self, at: SimTime, timer: T) {
        self.commands.push(Command::Timer { at, timer });
    }

    /// Crashes `peer`: its transfers die mid-flight (turmoil's `crash`).
    pub fn peer_down(&mut self, peer: PeerIdx) {
        self.commands.push(Command::PeerDown(peer));
    }

    /// Restarts `peer` with nothing in flight.
    pub fn peer_up(&mut self, peer: PeerIdx) {
        self.commands.push(Command::PeerUp(peer));
    }

    /// Splits the network into sides (`side_of[peer]`).
    pub fn partition(&mut self, side_of: Vec<u32>) {
        self.commands.push(Command::Partition(side_of));
    }

    /// Heals every partition.
    pub fn repair(&mut self) {
        self.commands.push(Command::Repair);
    }
}

/// One queued event; ordered by `(at, seq)` so equal times pop in scheduling order.
#[derive(Debug)]
struct Entry<E> {
    at: SimTime,
    seq: u64,
    event: E,
}

impl<E> PartialEq for Entry<E> {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl<E> Eq for Entry<E> {}
impl<E> PartialOrd for Entry<E> {
    fn partial_cmp(&self, other: &Self) -> Option<core::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl<E> Ord for Entry<E> {
    fn cmp(&self, other: &Self) -> core::cmp::Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

/// A min-priority queue of events keyed by `(time, seq)`.
#[derive(Debug)]
pub struct EventQueue<E> {
    heap: BinaryHeap<Reverse<Entry<E>>>,
    seq: u64,
}

impl<E> Default for EventQueue<E> {
    fn default() -> Self {
        Self {
            heap: BinaryHeap::new(),
            seq: 0,
        }
    }
}

impl<E> EventQueue<E> {
    /// Queues `event` at `at`.
    pub fn schedule(&mut self, at: SimTime, event: E) {
        self.seq += 1;
        let seq = self.seq;
        self.heap.push(Reverse(Entry { at, seq, event }));
    }

    /// The time of the earliest event.
    #[must_use]
    pub fn peek_time(&self) -> Option<SimTime> {
        self.heap.peek().map(|Reverse(e)| e.at)
    }

    /// Removes the earliest event.
    pub fn pop(&mut self) -> Option<(SimTime, E)> {
        self.heap.pop().map(|Reverse(e)| (e.at, e.event))
    }

    /// Events queued.
    #[must_use]
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    /// Whether nothing is queued.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }
}

/// Why [`Simulation::run_until`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum RunOutcome {
    /// The predicate held.
    Reached,
    /// Nothing is left to happen.
    Idle,
    /// The event bound was hit first.
    EventLimit,
}

/// An application on a network, driven by simulated time.
#[derive(Debug)]
pub struct Simulation<A: Application> {
    app: A,
    net: Network<A::Payload>,
    queue: EventQueue<A::Timer>,
    outbox: Outbox<A::Payload, A::Timer>,
    now: SimTime,
    events: u64,
    refused_sends: u64,
}

impl<A: Application> Simulation<A> {
    /// A simulation at time zero.
    #[must_use]
    pub fn new(app: A, net: Network<A::Payload>) -> Self {
        Self {
            app,
            net,
            queue: EventQueue::default(),
            outbox: Outbox::default(),
            now: SimTime::ZERO,
            events: 0,
            refused_sends: 0,
        }
    }

    /// The current simulated time.
    #[must_use]
    pub const fn now(&self) -> SimTime {
        self.now
    }

    /// Events (deliveries and timers) processed so far.
    #[must_use]
    pub const fn events(&self) -> u64 {
        self.events
    }

    /// Sends refused because a peer was down or partitioned away.
    #[must_use]
    pub const fn refused_sends(&self) -> u64 {
        self.refused_sends
    }

    /// The application.
    #[must_use]
    pub const fn app(&self) -> &A {
        &self.app
    }

    /// The application, mutably (to inject commands between runs).
    pub const fn app_mut(&mut self) -> &mut A {
        &mut self.app
    }

    /// The network.
    #[must_use]
    pub const fn net(&self) -> &Network<A::Payload> {
        &self.net
    }

    /// Gives back the application.
    pub fn into_app(self) -> A {
        self.app
    }

    /// Fires `timer` at `at` (kick-off from outside the application).
    pub fn schedule(&mut self, at: SimTime, timer: A::Timer) {
        assert!(at >= self.now, "timer in the past: {at} < {}", self.now);
        self.queue.schedule(at, timer);
    }

    /// Processes events until `done(app, now)` holds (checked before each instant), nothing is
    /// left, or `max_events` events have run in this call.
    pub fn run_until(
        &mut self,
        mut done: impl FnMut(&A, SimTime) -> bool,
        max_events: u64,
    ) -> RunOutcome {
        let start = self.events;
        loop {
            if done(&self.app, self.now) {
                return RunOutcome::Reached;
            }
            if self.events - start >= max_events {
                return RunOutcome::EventLimit;
            }
            if !self.step() {
                return RunOutcome::Idle;
            }
        }
    }

    /// Runs the earliest instant's network work or one timer. Returns `false` when idle. On a tie
    /// the network goes first: a message arriving at `t` is seen by a timer firing at `t`.
    pub fn step(&mut self) -> bool {
        let net_at = self.net.poll_timeout();
        let timer_at = self.queue.peek_time();
        match (net_at, timer_at) {
            (None, None) => false,
            (Some(n), t) if t.is_none_or(|t| n <= t) => {
                self.now = n;
                self.net.handle_timeout(n);
                while let Some(msg) = self.net.poll_delivery() {
                    self.events += 1;
                    self.app.handle_message(n, msg, &mut self.outbox);
                    self.apply_commands();
                }
                true
            }
            _ => {
                let (at, timer) = self.queue.pop().expect("peeked above");
                self.now = at;
                self.events += 1;
                self.app.handle_timer(at, timer, &mut self.outbox);
                self.apply_commands();
                true
            }
        }
    }

    fn apply_commands(&mut self) {
        let now = self.now;
        for command in self.outbox.commands.drain(..) {
            match command {
                Command::Send {
                    from,
                    to,
                    bytes,
                    payload,
                } => {
                    if self.net.handle_send(now, from, to, bytes, payload) != SendStatus::Started {
                        self.refused_sends += 1;
                    }
                }
                Command::Timer { at, timer } => {
                    assert!(at >= now, "timer in the past: {at} < {now}");
                    self.queue.schedule(at, timer);
                }
                Command::PeerDown(p) => self.net.handle_peer_down(now, p),
                Command::PeerUp(p) => self.net.handle_peer_up(now, p),
                Command::Partition(sides) => self.net.partition(now, &sides),
                Command::Repair => self.net.repair(now),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::NetConfig;
    use crate::rng::SeedTree;

    /// Peers 0 and 1 bounce one 1 kB message forever; counts arrivals.
    #[derive(Debug, Default)]
    struct PingPong {
        arrivals: Vec<(SimTime, PeerIdx)>,
    }

    impl Application for PingPong {
        type Payload = u32;
        type Timer = ();

        fn handle_message(&mut self, now: SimTime, msg: Delivered<u32>, out: &mut Outbox<u32, ()>) {
            self.arrivals.push((now, msg.to));
            out.send(msg.to, msg.from, msg.bytes, msg.payload + 1);
        }

        fn handle_timer(&mut self, _now: SimTime, (): (), out: &mut Outbox<u32, ()>) {
            out.send(PeerIdx(0), PeerIdx(1), 1_000, 0);
        }
    }

    fn ping_pong() -> Simulation<PingPong> {
        // 1 MB/s and 500 µs per endpoint: each hop is 1 ms of transfer + 1 ms of latency.
        let config = NetConfig::homogeneous(2, 1e6, 500).unwrap();
        let mut sim = Simulation::new(PingPong::default(), Network::new(config, SeedTree::new(0)));
        sim.schedule(SimTime::ZERO, ());
        sim
    }

    #[test]
    fn run_until_stops_on_predicate_or_event_bound_and_time_jumps_per_hop() {
        let mut sim = ping_pong();
        let outcome = sim.run_until(|app, _| app.arrivals.len() == 3, 1_000);
        assert_eq!(outcome, RunOutcome::Reached);
        let times: Vec<u64> = sim
            .app()
            .arrivals
            .iter()
            .map(|(t, _)| t.as_micros())
            .collect();
        assert_eq!(times, [2_000, 4_000, 6_000]);
        assert_eq!(sim.app().arrivals[1].1, PeerIdx(0));
        assert_eq!(sim.run_until(|_, _| false, 10), RunOutcome::EventLimit);
        assert_eq!(sim.app().arrivals.len(), 13);
    }

    #[test]
    fn crashed_receiver_never_gets_the_message_and_the_run_goes_idle() {
        let mut sim = ping_pong();
        let _ = sim.run_until(|app, _| app.arrivals.len() == 1, 1_000);
        sim.net.handle_peer_down(sim.now(), PeerIdx(0));
        assert_eq!(sim.run_until(|_, _| false, 1_000), RunOutcome::Idle);
        assert_eq!(sim.app().arrivals.len(), 1);
    }

    #[test]
    fn queue_pops_by_time_then_insertion_order() {
        let mut q = EventQueue::default();
        q.schedule(SimTime::from_micros(5), "b");
        q.schedule(SimTime::from_micros(1), "a");
        q.schedule(SimTime::from_micros(5), "c");
        let order: Vec<_> = core::iter::from_fn(|| q.pop()).map(|(_, e)| e).collect();
        assert_eq!(order, ["a", "b", "c"]);
    }
}
