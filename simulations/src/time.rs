//! Simulated time: integer microseconds since the start of the run.

use core::time::Duration;
use gradmesh_protocol::Timestamp;

/// A point in simulated time, in microseconds since the run started (t = 0).
///
/// Integer microseconds keep event ordering exact and platform-independent; the network model
/// rounds each flow's completion up to the next microsecond, so a chain of `k` dependent
/// transfers is late by at most `k` µs (documented in `docs/simulator.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct SimTime(u64);

impl SimTime {
    /// The start of every run.
    pub const ZERO: Self = Self(0);
    /// The far end of simulated time, used as an explicit "never" only inside bounded loops.
    pub const MAX: Self = Self(u64::MAX);

    /// `micros` microseconds after the start.
    #[must_use]
    pub const fn from_micros(micros: u64) -> Self {
        Self(micros)
    }

    /// Seconds (non-negative, finite) converted to microseconds, rounded up.
    #[must_use]
    pub fn from_secs_f64(secs: f64) -> Self {
        Self(secs_to_micros_ceil(secs))
    }

    /// Microseconds since the start.
    #[must_use]
    pub const fn as_micros(self) -> u64 {
        self.0
    }

    /// Seconds since the start.
    #[must_use]
    pub fn as_secs_f64(self) -> f64 {
        self.0 as f64 / 1e6
    }

    /// `self + micros`, saturating.
    #[must_use]
    pub const fn plus_micros(self, micros: u64) -> Self {
        Self(self.0.saturating_add(micros))
    }

    /// `self + d`, saturating.
    #[must_use]
    pub fn plus(self, d: Duration) -> Self {
        self.plus_micros(u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
    }

    /// Time from `earlier` to `self`, zero if `earlier` is later.
    #[must_use]
    pub const fn micros_since(self, earlier: Self) -> u64 {
        self.0.saturating_sub(earlier.0)
    }
}

/// Seconds to whole microseconds, rounded up; negative or NaN inputs give 0, huge ones saturate.
#[must_use]
pub fn secs_to_micros_ceil(secs: f64) -> u64 {
    let micros = (secs * 1e6).ceil();
    if micros.is_nan() || micros <= 0.0 {
        0
    } else if micros >= u64::MAX as f64 {
        u64::MAX
    } else {
        // Checked above: finite, positive and below u64::MAX.
        micros as u64
    }
}

impl From<SimTime> for Timestamp {
    fn from(t: SimTime) -> Self {
        Self::from_micros(t.0)
    }
}

impl From<Timestamp> for SimTime {
    fn from(t: Timestamp) -> Self {
        Self(t.as_micros())
    }
}

impl core::fmt::Display for SimTime {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{}.{:06}s", self.0 / 1_000_000, self.0 % 1_000_000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_to_protocol_timestamp_and_back() {
        let t = SimTime::from_micros(1_234_567);
        let ts: Timestamp = t.into();
        assert_eq!(ts.as_micros(), 1_234_567);
        assert_eq!(SimTime::from(ts), t);
        assert_eq!(t.to_string(), "1.234567s");
    }

    #[test]
    fn seconds_round_up_to_micros() {
        assert_eq!(SimTime::from_secs_f64(0.000_000_1).as_micros(), 1);
        assert_eq!(SimTime::from_secs_f64(-1.0).as_micros(), 0);
        assert_eq!(SimTime::from_secs_f64(2.5).as_micros(), 2_500_000);
    }
}
