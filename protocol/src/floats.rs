//! [`Floats`]: shared, immutable `f32`s that spans travel in without being copied.
//!
//! A contributor's span is a range of its gradient, and a received span is the payload bytes
//! the transport filled; both are reference-counted buffers that many messages and spans point
//! into. Copying them instead costs one pass over the vector per hop (a 64 MiB vector is about
//! 10 ms of memory traffic each time on the dev box; docs/benchmarks.md).

use std::fmt;
use std::ops::{Deref, Range};
use std::sync::Arc;

use bytes::Bytes;

/// A range of a shared `f32` buffer. Dereferences to `[f32]`; clones share the buffer.
#[derive(Clone)]
pub struct Floats {
    owner: Owner,
    /// In floats, within the owner.
    range: Range<usize>,
}

#[derive(Clone)]
enum Owner {
    Floats(Arc<[f32]>),
    /// A vector moved in whole (no copy).
    Vec(Arc<Vec<f32>>),
    /// Little-endian `f32` bytes, 4-aligned; only on little-endian machines.
    Bytes(Bytes),
}

impl Floats {
    /// The floats `range` of `buffer`, shared; an out-of-bounds range gives the empty slice's
    /// worth of it that exists.
    #[must_use]
    pub fn slice(buffer: &Arc<[f32]>, range: Range<usize>) -> Self {
        let end = range.end.min(buffer.len());
        Self {
            owner: Owner::Floats(Arc::clone(buffer)),
            range: range.start.min(end)..end,
        }
    }

    /// The floats of little-endian `bytes` (a length that is a multiple of 4): shared when the
    /// machine is little-endian and the bytes are 4-aligned (a received payload is), else
    /// decoded into a new buffer. `None` for a length that is not a multiple of 4.
    #[must_use]
    pub fn from_le_bytes(bytes: Bytes) -> Option<Self> {
        if !bytes.len().is_multiple_of(4) {
            return None;
        }
        let floats = bytes.len() / 4;
        if cfg!(target_endian = "little") && bytemuck::try_cast_slice::<u8, f32>(&bytes).is_ok() {
            return Some(Self {
                owner: Owner::Bytes(bytes),
                range: 0..floats,
            });
        }
        let decoded: Arc<[f32]> = bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        Some(decoded.into())
    }

    /// The whole buffer as an `Arc`: shared when this is a whole `Arc` buffer, else copied.
    #[must_use]
    pub fn to_arc(&self) -> Arc<[f32]> {
        match &self.owner {
            Owner::Floats(arc) if self.range == (0..arc.len()) => Arc::clone(arc),
            _ => Arc::from(&self[..]),
        }
    }
}

impl Deref for Floats {
    type Target = [f32];

    fn deref(&self) -> &[f32] {
        let all: &[f32] = match &self.owner {
            Owner::Floats(arc) => arc,
            Owner::Vec(vec) => vec,
            // Checked 4-aligned with a length multiple of 4 when built; never fails after.
            Owner::Bytes(bytes) => bytemuck::try_cast_slice(bytes).unwrap_or_default(),
        };
        all.get(self.range.clone()).unwrap_or_default()
    }
}

impl AsRef<[f32]> for Floats {
    fn as_ref(&self) -> &[f32] {
        self
    }
}

impl From<Arc<[f32]>> for Floats {
    fn from(buffer: Arc<[f32]>) -> Self {
        let range = 0..buffer.len();
        Self {
            owner: Owner::Floats(buffer),
            range,
        }
    }
}

impl From<Vec<f32>> for Floats {
    /// Takes the vector as it is: no copy.
    fn from(values: Vec<f32>) -> Self {
        let range = 0..values.len();
        Self {
            owner: Owner::Vec(Arc::new(values)),
            range,
        }
    }
}

impl Default for Floats {
    fn default() -> Self {
        Vec::new().into()
    }
}

impl PartialEq for Floats {
    fn eq(&self, other: &Self) -> bool {
        self[..] == other[..]
    }
}

impl fmt::Debug for Floats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.len() <= 8 {
            f.debug_list().entries(self.iter()).finish()
        } else {
            write!(f, "Floats({} values)", self.len())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slices_share_and_bytes_are_read_in_place() {
        let buffer: Arc<[f32]> = Arc::from(vec![1.0, 2.0, 3.0, 4.0]);
        let middle = Floats::slice(&buffer, 1..3);
        assert_eq!(&middle[..], &[2.0, 3.0]);
        assert_eq!(Arc::strong_count(&buffer), 2);
        assert_eq!(&Floats::slice(&buffer, 3..9)[..], &[4.0]);
        assert!(Floats::slice(&buffer, 7..9).is_empty());
        assert!(Arc::ptr_eq(&Floats::from(buffer.clone()).to_arc(), &buffer));

        let bytes: Vec<u8> = [0.5f32, -1.0]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let floats = Floats::from_le_bytes(Bytes::from(bytes)).expect("multiple of 4");
        assert_eq!(floats, Floats::from(vec![0.5, -1.0]));
        // Misaligned bytes are decoded into a buffer of their own.
        let mut odd = vec![0u8; 9];
        odd[1..5].copy_from_slice(&2.5f32.to_le_bytes());
        let shifted = Bytes::from(odd).slice(1..9);
        let floats = Floats::from_le_bytes(shifted).expect("multiple of 4");
        assert_eq!(&floats[..], &[2.5, 0.0]);
        assert!(Floats::from_le_bytes(Bytes::from_static(&[1, 2, 3])).is_none());
        assert_eq!(format!("{floats:?}"), "[2.5, 0.0]");
    }
}
