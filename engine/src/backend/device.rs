//! Where a model runs: `cpu` or `cuda[:N]`, as written on the command line and
//! in pipeline files.

use std::fmt;
use std::str::FromStr;

/// A compute device.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Device {
    /// The f32 reference backend on the host CPU.
    #[default]
    Cpu,
    /// The CUDA backend on the GPU with this ordinal.
    Cuda(usize),
}

/// A device name that is neither `cpu`, `cuda` nor `cuda:N`.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
#[error("unknown device `{0}`")]
#[diagnostic(
    code(device::unknown),
    help("use `cpu`, `cuda` (the first GPU) or `cuda:N`")
)]
pub struct UnknownDevice(pub String);

impl FromStr for Device {
    type Err = UnknownDevice;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "cpu" => Ok(Device::Cpu),
            "cuda" => Ok(Device::Cuda(0)),
            _ => text
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .map(Device::Cuda)
                .ok_or_else(|| UnknownDevice(text.to_string())),
        }
    }
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Device::Cpu => f.write_str("cpu"),
            Device::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_every_form() {
        for (text, device) in [
            ("cpu", Device::Cpu),
            ("cuda", Device::Cuda(0)),
            ("cuda:3", Device::Cuda(3)),
        ] {
            assert_eq!(text.parse::<Device>().ok(), Some(device));
        }
        assert_eq!(Device::Cuda(3).to_string(), "cuda:3");
        for bad in ["gpu", "cuda:", "cuda:x", "CPU", ""] {
            assert!(bad.parse::<Device>().is_err(), "{bad} should be rejected");
        }
    }
}
