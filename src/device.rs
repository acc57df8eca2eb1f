//! Where the dense head runs (`placement.dense`) and where the embedding table
//! lives (`placement.embedding`).

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

/// Where the embedding table and its optimizer state live (`placement.embedding`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TablePlacement {
    /// `"cpu"` (default): host memory, with the fused host bag and table optimizers.
    #[default]
    Host,
    /// `"burn-cpu"`: the device table (Burn tensors) on the head's CPU backend.
    /// Slower than `Host`; it runs the GPU path's code where there is no GPU (CI).
    BurnCpu,
    /// `"cuda:N"`: the device table on CUDA GPU N (needs `--features cuda`).
    Cuda(usize),
}

impl fmt::Display for TablePlacement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TablePlacement::Host => write!(f, "cpu"),
            TablePlacement::BurnCpu => write!(f, "burn-cpu"),
            TablePlacement::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

impl TablePlacement {
    /// TensorFlow-style name of the device holding the table's tensors.
    pub fn tf_name(&self) -> String {
        match self {
            TablePlacement::Host | TablePlacement::BurnCpu => TABLE_DEVICE.into(),
            TablePlacement::Cuda(n) => format!("/device:GPU:{n}"),
        }
    }

    /// The head device a device table needs: its pooled output and gradient
    /// are tensors of the head's own backend, so both live on one device.
    pub fn dense_device(&self) -> Option<DenseDevice> {
        match self {
            TablePlacement::Host => None,
            TablePlacement::BurnCpu => Some(DenseDevice::Cpu),
            TablePlacement::Cuda(n) => Some(DenseDevice::Cuda(*n)),
        }
    }
}

/// Parses `"cpu"`, `"burn-cpu"` or `"cuda:N"`; CUDA needs a build with `--features cuda`.
pub fn parse_table_placement(s: &str) -> Result<TablePlacement, String> {
    match s {
        "cpu" => Ok(TablePlacement::Host),
        "burn-cpu" => Ok(TablePlacement::BurnCpu),
        _ => match parse_dense_device(s) {
            Ok(DenseDevice::Cuda(n)) => Ok(TablePlacement::Cuda(n)),
            Ok(DenseDevice::Cpu) => unreachable!("\"cpu\" is matched above"),
            Err(e) if s.starts_with("cuda:") => Err(e),
            Err(_) => Err(format!("expected \"cpu\" (host memory), \"burn-cpu\" (Burn tensors on the CPU backend) or \"cuda:N\", got {s:?}")),
        },
    }
}

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
