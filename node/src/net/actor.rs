//! The `Network` actor: the node's only door to the swarm. It is an adapter: it forwards swarm
//! events to one subscriber and queues commands to the swarm loop; it holds no protocol rule.
//!
//! Delivery to the subscriber waits (`ctx.wait`) until the subscriber has handled each event, so
//! a slow subscriber slows the swarm loop instead of growing a queue. Consequently a subscriber
//! must not `ctx.wait` on a reply from this actor while handling a [`NetEvent`]; send commands
//! with `do_send`/`try_send` or await their replies in `ctx.spawn`ed futures.

use actix::prelude::*;
use libp2p::identity::Keypair;
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;

use super::config::NetConfig;
use super::messages::{
    Ban, Dial, FrameSent, NetError, NetEvent, Publish, SendFailure, SendFrame, SendFrameError,
};
use super::swarm_loop::{
    COMMAND_QUEUE_CAPACITY, Command, EVENT_QUEUE_CAPACITY, NetInfo, StartError, SwarmLoop,
};

/// The network actor. Start it with [`Network::start`].
#[derive(Debug)]
pub struct Network {
    commands: mpsc::Sender<Command>,
    subscriber: Recipient<NetEvent>,
    arbiter: ArbiterHandle,
}

impl Network {
    /// Starts the swarm loop on a dedicated arbiter and the actor on the current one. Events go
    /// to `subscriber`. Must be called inside a running actix `System`.
    pub async fn start(
        config: NetConfig,
        keypair: Keypair,
        subscriber: Recipient<NetEvent>,
    ) -> Result<(Addr<Self>, NetInfo), StartError> {
        let arbiter = Arbiter::new();
        let (command_tx, command_rx) = mpsc::channel(COMMAND_QUEUE_CAPACITY);
        let (event_tx, event_rx) = mpsc::channel(EVENT_QUEUE_CAPACITY);
        let (ready_tx, ready_rx) = oneshot::channel();
        let spawned = arbiter.spawn(async move {
            match SwarmLoop::start(config, keypair, command_rx, event_tx).await {
                Ok((swarm_loop, info)) => {
                    if ready_tx.send(Ok(info)).is_ok() {
                        swarm_loop.run().await;
                    }
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                }
            }
            Arbiter::current().stop();
        });
        if !spawned {
            return Err(StartError::Stopped);
        }
        let info = ready_rx.await.map_err(|_| StartError::Stopped)??;
        let handle = arbiter.handle();
        let addr = Self::create(move |ctx| {
            ctx.add_stream(ReceiverStream::new(event_rx));
            Self {
                commands: command_tx,
                subscriber,
                arbiter: handle,
            }
        });
        Ok((addr, info))
    }

    /// Queues a command without waiting: a full queue is the caller's signal to back off.
    fn queue(&self, command: Command) -> Result<(), NetError> {
        self.commands.try_send(command).map_err(|e| match e {
            TrySendError::Full(_) => NetError::QueueFull,
            TrySendError::Closed(_) => NetError::Stopped,
        })
    }

    /// Queues a command answered by a plain `Result<(), NetError>` and awaits its reply.
    fn queue_with_reply(
        &self,
        command: impl FnOnce(oneshot::Sender<Result<(), NetError>>) -> Command,
    ) -> ResponseFuture<Result<(), NetError>> {
        let (reply, result) = oneshot::channel();
        let queued = self.queue(command(reply));
        Box::pin(async move {
            queued?;
            result.await.unwrap_or(Err(NetError::Stopped))
        })
    }
}

impl Actor for Network {
    type Context = Context<Self>;

    fn stopped(&mut self, _: &mut Self::Context) {
        self.arbiter.stop();
    }
}

impl StreamHandler<NetEvent> for Network {
    fn handle(&mut self, event: NetEvent, ctx: &mut Self::Context) {
        let delivery = self.subscriber.send(event).into_actor(self);
        ctx.wait(delivery.map(|result, _, ctx| {
            if result.is_err() {
                tracing::warn!("network subscriber is gone; stopping the network layer");
                ctx.stop();
            }
        }));
    }
}

impl Handler<SendFrame> for Network {
    type Result = ResponseFuture<Result<FrameSent, SendFrameError>>;

    fn handle(&mut self, request: SendFrame, _: &mut Self::Context) -> Self::Result {
        let (id, to) = (request.id, request.to);
        let (reply, result) = oneshot::channel();
        let queued = self.queue(Command::SendFrame { request, reply });
        Box::pin(async move {
            let fail = |reason| SendFrameError { id, to, reason };
            queued.map_err(|e| {
                fail(match e {
                    NetError::QueueFull => SendFailure::QueueFull,
                    _ => SendFailure::Stopped,
                })
            })?;
            result.await.unwrap_or(Err(fail(SendFailure::Stopped)))
        })
    }
}

impl Handler<Publish> for Network {
    type Result = ResponseFuture<Result<(), NetError>>;

    fn handle(&mut self, publish: Publish, _: &mut Self::Context) -> Self::Result {
        self.queue_with_reply(|reply| Command::Publish {
            bytes: publish.bytes,
            reply,
        })
    }
}

impl Handler<Dial> for Network {
    type Result = ResponseFuture<Result<(), NetError>>;

    fn handle(&mut self, dial: Dial, _: &mut Self::Context) -> Self::Result {
        self.queue_with_reply(|reply| Command::Dial {
            addr: dial.addr,
            reply,
        })
    }
}

impl Handler<Ban> for Network {
    type Result = ();

    /// A full command queue drops the ban: the peer's next offence asks again.
    fn handle(&mut self, ban: Ban, _: &mut Self::Context) {
        let _ = self.queue(Command::Ban(ban));
    }
}
