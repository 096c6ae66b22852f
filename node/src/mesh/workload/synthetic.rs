//! The synthetic workload: a vector with a fixed pseudo-gradient, so that a benchmark measures
//! the all-reduce alone.

use std::sync::Arc;

use super::{Computed, WorkloadError};

/// Earlier state buffers the synthetic workload tracks for reuse (the protocol retains 3
/// snapshots).
const STATE_POOL_MAX: usize = 6;

/// The synthetic workload: parameters and a fixed direction, built once so that computing a
/// "gradient" costs nothing and a benchmark measures the all-reduce alone.
#[derive(Debug)]
pub struct Synthetic {
    /// The newest state (little-endian f32 bytes, as snapshots take them).
    newest: Arc<[u8]>,
    /// Earlier states' buffers, written again once the node has let go of them; more than
    /// [`STATE_POOL_MAX`] and the ones still held are dropped from the list.
    spare: Vec<Arc<[u8]>>,
    floats: usize,
    direction: Arc<[f32]>,
}

impl Synthetic {
    pub(super) fn new(floats: usize) -> Self {
        #[allow(clippy::cast_precision_loss)] // Values only need to vary, not be exact.
        let direction = (0..floats)
            .map(|k| ((k % 1024) as f32 * 0.01).sin())
            .collect();
        Self {
            newest: Arc::from(vec![0u8; floats * 4]),
            spare: Vec::new(),
            floats,
            direction,
        }
    }

    pub(super) fn compute(&self) -> Computed {
        Computed {
            weight: 1,
            gradient: Arc::clone(&self.direction),
            loss: 0.0,
            inner_steps: 0,
            seconds: 0.0,
        }
    }

    pub(super) fn state(&self) -> &Arc<[u8]> {
        &self.newest
    }

    /// One SGD step (rate 0.01) from the newest state into an earlier state's buffer the node
    /// no longer holds (the protocol keeps the last few snapshots), so that in steady state a
    /// round allocates nothing: a fresh 64 MiB buffer per round costs its page faults and
    /// zeroing every time.
    pub(super) fn apply(&mut self, average: &[f32]) -> Result<Arc<[u8]>, WorkloadError> {
        if average.len() != self.floats {
            return Err(WorkloadError::WrongSize {
                what: "committed average",
                expected: self.floats,
                got: average.len(),
            });
        }
        let mut next = match self.spare.iter().position(|s| Arc::strong_count(s) == 1) {
            Some(i) => self.spare.swap_remove(i),
            None => std::iter::repeat_n(0, self.floats * 4).collect(),
        };
        let out = Arc::get_mut(&mut next)
            .map(|b| &mut b[..])
            .unwrap_or_default();
        sgd_step(&self.newest, out, average);
        self.spare.push(std::mem::replace(&mut self.newest, next));
        if self.spare.len() > STATE_POOL_MAX {
            // Buffers held elsewhere are the holders' to free: stop tracking them.
            self.spare.retain(|s| Arc::strong_count(s) == 1);
        }
        Ok(Arc::clone(&self.newest))
    }

    pub(super) fn load(&mut self, bytes: &[u8]) -> Result<(), WorkloadError> {
        if bytes.len() != self.floats * 4 {
            return Err(WorkloadError::WrongSize {
                what: "synced state",
                expected: self.floats * 4,
                got: bytes.len(),
            });
        }
        self.newest = Arc::from(bytes);
        Ok(())
    }
}

/// `out = prev − 0.01 · average` over little-endian `f32` bytes: as floats in place where the
/// machine is little-endian and both buffers are 4-aligned (`Arc` buffers are), else bytewise.
fn sgd_step(prev: &[u8], out: &mut [u8], average: &[f32]) {
    let aligned = |b: &[u8]| bytemuck::try_cast_slice::<u8, f32>(b).is_ok();
    if cfg!(target_endian = "little") && aligned(prev) && aligned(out) {
        let prev: &[f32] = bytemuck::cast_slice(prev);
        let out: &mut [f32] = bytemuck::cast_slice_mut(out);
        for ((o, p), g) in out.iter_mut().zip(prev).zip(average) {
            *o = p - 0.01 * g;
        }
        return;
    }
    for ((o, p), g) in out
        .chunks_exact_mut(4)
        .zip(prev.chunks_exact(4))
        .zip(average)
    {
        let p = f32::from_le_bytes([p[0], p[1], p[2], p[3]]);
        o.copy_from_slice(&(p - 0.01 * g).to_le_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn floats(bytes: &[u8]) -> Vec<f32> {
        bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()
    }

    #[test]
    fn synthetic_steps_reuse_the_released_buffer_and_keep_held_states_intact() {
        let mut w = Synthetic::new(3);
        let first = w.apply(&[1.0, 2.0, -4.0]).expect("right size");
        assert_eq!(floats(&first), [-0.01, -0.02, 0.04]);
        // `first` is still held (a snapshot): the next step must not write into it.
        let second = w.apply(&[1.0, 0.0, 0.0]).expect("right size");
        assert_eq!(floats(&first), [-0.01, -0.02, 0.04]);
        assert_eq!(floats(&second), [-0.02, -0.02, 0.04]);
        drop(first);
        let before = Arc::as_ptr(w.state());
        let third = w.apply(&[0.0, 0.0, 1.0]).expect("right size");
        assert_eq!(floats(&third), [-0.02, -0.02, 0.03]);
        assert_ne!(Arc::as_ptr(&third), before, "written into the other buffer");
        assert!(w.apply(&[1.0]).is_err());
        w.load(&second).expect("right size");
        assert_eq!(floats(w.state()), [-0.02, -0.02, 0.04]);
    }
}
