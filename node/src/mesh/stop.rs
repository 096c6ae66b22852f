//! When a node stops, and how: the limits an operator sets (`--max-rounds`, `--max-steps`,
//! `--max-time`, `--target-loss`) and the signals that end a run early. Either way the node
//! stops the same graceful way (see `PeerActor::begin_stop`): it ends its inner phase at the
//! next step, waits for the state it is applying, writes a final checkpoint of the state it
//! holds, tells the mesh it is leaving, prints a summary and exits 0.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use actix::Message;

/// The limits after which a node stops by itself; all off by default (it trains until
/// stopped).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct StopRule {
    /// Stop once the node holds the state of this round.
    pub max_rounds: Option<u64>,
    /// Stop once the node has taken this many local optimizer steps (inner steps under local
    /// steps; one per committed round when synchronous).
    pub max_steps: Option<u64>,
    /// Stop this long after start.
    pub max_time: Option<Duration>,
    /// Stop once the held-out loss after a commit is at most this.
    pub target_loss: Option<f64>,
}

/// Why a node stopped.
#[derive(Debug, Clone, PartialEq)]
pub enum StopReason {
    /// `--max-rounds` reached.
    MaxRounds(u64),
    /// `--max-steps` reached.
    MaxSteps(u64),
    /// `--max-time` spent.
    MaxTime(Duration),
    /// `--target-loss` reached: the target and the held-out loss.
    TargetLoss {
        /// The target.
        target: f64,
        /// The held-out loss that met it.
        reached: f64,
    },
    /// A signal (`SIGINT`, `SIGTERM`).
    Signal(&'static str),
}

impl fmt::Display for StopReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::MaxRounds(n) => write!(f, "--max-rounds {n} reached"),
            Self::MaxSteps(n) => write!(f, "--max-steps {n} reached"),
            Self::MaxTime(t) => write!(f, "--max-time {} s spent", t.as_secs_f64()),
            Self::TargetLoss { target, reached } => {
                write!(
                    f,
                    "--target-loss {target} reached (held-out loss {reached:.4})"
                )
            }
            Self::Signal(name) => write!(f, "{name} received"),
        }
    }
}

impl StopRule {
    /// The limit a node that holds the state of `round` after `steps` local steps has reached,
    /// if any.
    #[must_use]
    pub fn reached(&self, round: u64, steps: u64) -> Option<StopReason> {
        if let Some(max) = self.max_rounds.filter(|max| round >= *max) {
            return Some(StopReason::MaxRounds(max));
        }
        self.max_steps
            .filter(|max| steps >= *max)
            .map(StopReason::MaxSteps)
    }

    /// Whether a held-out loss meets `--target-loss`.
    #[must_use]
    pub fn loss_reached(&self, loss: f64) -> Option<StopReason> {
        self.target_loss
            .filter(|target| loss <= *target)
            .map(|target| StopReason::TargetLoss {
                target,
                reached: loss,
            })
    }
}

/// Ask the node to stop gracefully. A second request while it stops is ignored (the signal
/// handler exits at once on a second signal).
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Stop(pub StopReason);

/// A flag the trainer reads between inner steps: once raised, the inner phase under way ends
/// at its next step (after at least one), so a stopping node need not wait out minutes of
/// local steps before its final checkpoint.
#[derive(Debug, Clone, Default)]
pub struct Interrupt(Arc<AtomicBool>);

impl Interrupt {
    /// Raises the flag.
    pub fn raise(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    /// Whether it is raised.
    #[must_use]
    pub fn raised(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_are_reached_at_and_past_their_value_and_never_when_unset() {
        let rule = StopRule {
            max_rounds: Some(20),
            max_steps: Some(500),
            target_loss: Some(1.5),
            ..StopRule::default()
        };
        assert_eq!(rule.reached(19, 499), None);
        assert_eq!(rule.reached(20, 0), Some(StopReason::MaxRounds(20)));
        assert_eq!(rule.reached(25, 0), Some(StopReason::MaxRounds(20)));
        assert_eq!(rule.reached(3, 500), Some(StopReason::MaxSteps(500)));
        assert_eq!(rule.loss_reached(1.6), None);
        assert_eq!(
            rule.loss_reached(1.5),
            Some(StopReason::TargetLoss {
                target: 1.5,
                reached: 1.5
            })
        );
        let off = StopRule::default();
        assert_eq!(off.reached(u64::MAX, u64::MAX), None);
        assert_eq!(off.loss_reached(0.0), None);
    }

    #[test]
    fn reasons_read_as_the_flag_that_set_them() {
        assert_eq!(
            StopReason::MaxRounds(20).to_string(),
            "--max-rounds 20 reached"
        );
        assert_eq!(
            StopReason::MaxTime(Duration::from_secs(90)).to_string(),
            "--max-time 90 s spent"
        );
        assert_eq!(
            StopReason::Signal("SIGTERM").to_string(),
            "SIGTERM received"
        );
    }

    #[test]
    fn an_interrupt_is_seen_by_its_clones() {
        let flag = Interrupt::default();
        let seen_by_trainer = flag.clone();
        assert!(!seen_by_trainer.raised());
        flag.raise();
        assert!(seen_by_trainer.raised());
    }
}
