//! Where the dense head runs. The embedding table always lives in host memory.

use std::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DenseDevice {
    Cpu,
    Cuda(usize),
}

impl fmt::Display for DenseDevice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DenseDevice::Cpu => write!(f, "cpu"),
            DenseDevice::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

impl DenseDevice {
    /// TensorFlow-style device name, as shown in TensorBoard's graph.
    pub fn tf_name(&self) -> String {
        match self {
            DenseDevice::Cpu => "/device:CPU:0".into(),
            DenseDevice::Cuda(n) => format!("/device:GPU:{n}"),
        }
    }
}

/// TF name of the host device the table lives on.
pub const TABLE_DEVICE: &str = "/device:CPU:0";

/// Parses `"cpu"` or `"cuda:N"`; CUDA needs a build with `--features cuda`.
pub fn parse_dense_device(s: &str) -> Result<DenseDevice, String> {
    if s == "cpu" {
        return Ok(DenseDevice::Cpu);
    }
    let Some(n) = s.strip_prefix("cuda:").and_then(|n| n.parse().ok()) else {
        return Err(format!("expected \"cpu\" or \"cuda:N\", got {s:?}"));
    };
    if cfg!(feature = "cuda") {
        Ok(DenseDevice::Cuda(n))
    } else {
        Err(format!("{s:?} needs CUDA support, which this build lacks: rebuild with `cargo build --release --features cuda`"))
    }
}
