//! The compute device, chosen at run time.

use std::{fmt, str::FromStr};

use crate::error::{KernelError, Result};

/// Where tensors live. Parse it from `cpu`, `cuda` or `cuda:N` (e.g. a CLI flag).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Device {
    /// The host CPU; always available.
    Cpu,
    /// CUDA device with this ordinal.
    Cuda(usize),
}

impl Device {
    /// Whether this process can run on the device (a CUDA build of LibTorch and a visible GPU).
    #[must_use]
    pub fn is_available(self) -> bool {
        match self {
            Self::Cpu => true,
            Self::Cuda(ordinal) => {
                tch::Cuda::is_available()
                    && usize::try_from(tch::Cuda::device_count()).is_ok_and(|n| ordinal < n)
            }
        }
    }

    /// The device if [`Device::is_available`], else [`KernelError::DeviceUnavailable`].
    pub fn check_available(self) -> Result<Self> {
        if self.is_available() {
            Ok(self)
        } else {
            Err(KernelError::DeviceUnavailable(self.to_string()))
        }
    }

    pub(crate) fn tch(self) -> tch::Device {
        match self {
            Self::Cpu => tch::Device::Cpu,
            Self::Cuda(ordinal) => tch::Device::Cuda(ordinal),
        }
    }
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Cpu => f.write_str("cpu"),
            Self::Cuda(ordinal) => write!(f, "cuda:{ordinal}"),
        }
    }
}

impl FromStr for Device {
    type Err = KernelError;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "cpu" => Ok(Self::Cpu),
            "cuda" => Ok(Self::Cuda(0)),
            _ => s
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .map(Self::Cuda)
                .ok_or_else(|| KernelError::UnknownDevice(s.to_owned())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_device_names() {
        assert_eq!("cpu".parse::<Device>().unwrap(), Device::Cpu);
        assert_eq!("cuda".parse::<Device>().unwrap(), Device::Cuda(0));
        assert_eq!("cuda:3".parse::<Device>().unwrap(), Device::Cuda(3));
        assert!("gpu".parse::<Device>().is_err());
        assert!(Device::Cpu.is_available());
    }
}
