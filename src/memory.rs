//! Memory planning: bytes each part of the model needs on each device,
//! estimated before anything is allocated and checked against the budgets in
//! `[memory]`, so a run that cannot fit stops with the numbers instead of
//! swapping or dying half-way.

use anyhow::bail;

use crate::config::Config;
use crate::device::{DenseDevice, TABLE_DEVICE};
use crate::model::HeadConfig;
use crate::sys::gb;

/// One allocation of the plan.
#[derive(Clone, Debug, PartialEq)]
pub struct MemoryItem {
    /// TF-style device name, e.g. `/device:CPU:0`.
    pub device: String,
    pub what: &'static str,
    pub bytes: u64,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct MemoryPlan {
    pub items: Vec<MemoryItem>,
}

const F32: u64 = 4;

pub use crate::config::TableStorage;
pub use crate::mem::size;

/// The plan's device name for arrays in a mapped table file: they take disk
/// space, and only the pages in use take (reclaimable) memory.
pub fn file_device(path: &std::path::Path) -> String {
    format!("{FILE_DEVICE_PREFIX}{}", path.display())
}

const FILE_DEVICE_PREFIX: &str = "file:";

impl MemoryPlan {
    /// The plan for a `rows`-row table, this head, and `dataset_ids` encoded ids in memory
    /// (0 when they are on disk).
    ///
    /// Sizes that overflow 64 bits (e.g. `model.dim = 2^62`) saturate at
    /// `u64::MAX`, so [`MemoryPlan::check`] refuses them with the numbers
    /// instead of an allocation panicking later.
    pub fn new(config: &Config, rows: usize, head: &HeadConfig, dataset_ids: u64, dense: DenseDevice) -> Self {
        let dim = config.model.dim as u64;
        let batch = config.train.batch_size as u64;
        let host = TABLE_DEVICE.to_string();
        let dense_name = dense.tf_name();
        let shapes = head.layer_shapes();
        let params = shapes.iter().fold(0u64, |sum, &(i, o)| sum.saturating_add(mul(&[i as u64, o as u64]).saturating_add(o as u64)));
        let widths = shapes.iter().fold(dim, |sum, &(_, o)| sum.saturating_add(o as u64));
        let table = mul(&[rows as u64, dim, config.model.table_dtype.size() as u64]);
        // The optimizer's own count wraps on such sizes; any table that large is refused anyway.
        let table_state = if table == u64::MAX { u64::MAX } else { config.optimizer.table.state_bytes(rows, config.model.dim) };
        // A device table (`placement.embedding` other than "cpu") holds the table, m and v
        // there, and the trainer keeps a host copy of both for checkpoints and evaluation.
        // A mapped table and its state are on disk: the host budget checks only what must be resident.
        let placement = crate::device::parse_table_placement(&config.placement.embedding).unwrap_or_default();
        let table_device = match (config.model.table_storage, &config.model.table_path) {
            (TableStorage::Mmap, Some(path)) => file_device(path),
            _ => placement.tf_name(),
        };
        let mut items = vec![
            MemoryItem { device: table_device.clone(), what: table_item(config.model.table_dtype), bytes: table },
            MemoryItem { device: table_device, what: "table optimizer state", bytes: table_state },
        ];
        if placement != crate::device::TablePlacement::Host {
            items.push(MemoryItem { device: host.clone(), what: "host copy of the table", bytes: table });
            items.push(MemoryItem { device: host.clone(), what: "host copy of the optimizer state", bytes: table_state });
        }
        // None with `memory.examples = "disk"`: they are read a batch at a time.
        if dataset_ids > 0 {
            items.push(MemoryItem { device: host.clone(), what: "encoded datasets", bytes: mul(&[dataset_ids, 4]) });
        }
        items.extend([
            // Pooled activations and their gradient, where the bag runs.
            MemoryItem { device: placement.tf_name(), what: "bag activations", bytes: mul(&[2, batch, dim, F32]) },
            // Weights, gradients, and Adam's two moments.
            MemoryItem { device: dense_name.clone(), what: "head parameters + grads + Adam state", bytes: mul(&[4, params, F32]) },
            // Every layer's output and its gradient for one batch.
            MemoryItem { device: dense_name, what: "head activations", bytes: mul(&[2, batch, widths, F32]) },
        ]);
        MemoryPlan { items }
    }

    pub fn bytes_on(&self, device: &str) -> u64 {
        self.items.iter().filter(|i| i.device == device).fold(0u64, |sum, i| sum.saturating_add(i.bytes))
    }

    /// Bytes of arrays in mapped table files (disk, not resident memory).
    pub fn disk_bytes(&self) -> u64 {
        self.items.iter().filter(|i| i.device.starts_with(FILE_DEVICE_PREFIX)).fold(0u64, |sum, i| sum.saturating_add(i.bytes))
    }

    /// Bytes on this file device, as [`crate::mem::mapped::file_bytes`] lays them out.
    pub fn table_file_bytes(&self) -> Option<u64> {
        let on_disk: Vec<u64> = self.items.iter().filter(|i| i.device.starts_with(FILE_DEVICE_PREFIX)).map(|i| i.bytes).collect();
        (!on_disk.is_empty()).then(|| crate::mem::mapped::file_bytes(&on_disk))
    }

    /// One line per device with its items, for the start-of-run log.
    pub fn describe(&self) -> String {
        let mut devices: Vec<&str> = Vec::new();
        for i in &self.items {
            if !devices.contains(&i.device.as_str()) {
                devices.push(&i.device);
            }
        }
        devices
            .iter()
            .map(|d| {
                let parts: Vec<String> = self.items.iter().filter(|i| i.device == *d).map(|i| format!("{} {}", i.what, size(i.bytes))).collect();
                match d.strip_prefix(FILE_DEVICE_PREFIX) {
                    Some(path) => format!("disk {path}: {} ({}; mapped, only the pages in use are resident)", size(self.bytes_on(d)), parts.join(", ")),
                    None => format!("{d}: {} ({})", size(self.bytes_on(d)), parts.join(", ")),
                }
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Refuses plans over a budget: `memory.host_max_gb`, the host's available
    /// memory, and on a GPU `memory.gpu_max_gb` / `memory.gpu_fraction`.
    pub fn check(&self, config: &Config, dense: DenseDevice) -> anyhow::Result<()> {
        let host = self.bytes_on(TABLE_DEVICE);
        let hint = "lower vocab.buckets or model.dim, use a smaller optimizer state (bias_correction, weight_decay; kind = \"rowwise_adagrad\"), or put the table on disk (model.table_storage = \"mmap\")";
        if let Some(item) = self.items.iter().find(|i| i.bytes == u64::MAX) {
            bail!(
                "memory plan: the {} on {} would need more than 2^64 bytes (model.dim = {}, model.hidden = {:?}, train.batch_size = {}): {}",
                item.what,
                item.device,
                config.model.dim,
                config.model.hidden,
                config.train.batch_size,
                self.describe()
            );
        }
        if let Some(max) = config.memory.host_max_gb
            && gb(host) > max
        {
            bail!("host memory plan {} is over memory.host_max_gb = {max}: {}; {hint}", size(host), self.describe());
        }
        if let Some(avail) = crate::sys::available_memory_bytes()
            && host > avail
        {
            bail!("host memory plan {} exceeds the {} available: {}; {hint}", size(host), size(avail), self.describe());
        }
        if let DenseDevice::Cuda(n) = dense {
            let need = self.bytes_on(&dense.tf_name());
            let mut limit = config.memory.gpu_max_gb.map(|g| (g, "memory.gpu_max_gb".to_string()));
            if let Some(f) = config.memory.gpu_fraction {
                let total = gpu_total_bytes(n)?;
                let by_fraction = gb(total) * f;
                if limit.as_ref().is_none_or(|(g, _)| by_fraction < *g) {
                    limit = Some((by_fraction, format!("memory.gpu_fraction = {f} of {:.1} GB", gb(total))));
                }
            }
            if let Some((max, name)) = limit
                && gb(need) > max
            {
                bail!("GPU memory plan {} for cuda:{n} is over {name} ({}): {}", size(need), size((max * 1e9) as u64), self.describe());
            }
        }
        Ok(())
    }
}

/// The product, or `u64::MAX` when it does not fit.
fn mul(factors: &[u64]) -> u64 {
    factors.iter().try_fold(1u64, |p, &f| p.checked_mul(f)).unwrap_or(u64::MAX)
}

/// The plan's name for the table, with its dtype when not f32.
fn table_item(dtype: crate::model::TableDtype) -> &'static str {
    match dtype {
        crate::model::TableDtype::F32 => "embedding table",
        crate::model::TableDtype::Bf16 => "embedding table (bf16)",
        crate::model::TableDtype::F16 => "embedding table (f16)",
    }
}

/// Total memory of CUDA device `n`, from the driver.
#[cfg(feature = "cuda")]
fn gpu_total_bytes(n: usize) -> anyhow::Result<u64> {
    use cudarc::driver::result;
    result::init().map_err(|e| anyhow::anyhow!("CUDA driver: {e:?}"))?;
    let dev = result::device::get(n as i32).map_err(|e| anyhow::anyhow!("CUDA device {n}: {e:?}"))?;
    // SAFETY: `dev` is a valid device handle from the initialised driver.
    let total = unsafe { result::device::total_mem(dev) }.map_err(|e| anyhow::anyhow!("CUDA device {n} memory: {e:?}"))?;
    Ok(total as u64)
}

#[cfg(not(feature = "cuda"))]
fn gpu_total_bytes(_n: usize) -> anyhow::Result<u64> {
    bail!("memory.gpu_fraction needs a CUDA build (cargo build --release --features cuda)")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A mapped table and its state count as disk bytes, not against the host
    /// budget; in memory the same config is refused by that budget.
    #[test]
    fn a_mapped_table_counts_on_disk_not_against_host_memory() {
        let mut config = Config::default();
        config.model.dim = 64;
        config.optimizer.table = crate::optim::TableOptimizerConfig::named("lazy_adam").unwrap();
        config.memory.host_max_gb = Some(1.0);
        let head = HeadConfig { input: 64, hidden: vec![], classes: 10 };
        let rows = 10_000_000;
        // m and v (2 × 64 f32 per row) and lazy_adam's global step count.
        let (table, state) = (rows as u64 * 64 * 4, rows as u64 * 64 * 4 * 2 + 8);

        let memory = MemoryPlan::new(&config, rows, &head, 1000, DenseDevice::Cpu);
        assert_eq!(memory.disk_bytes(), 0);
        assert!(memory.bytes_on(TABLE_DEVICE) >= table + state);
        let e = memory.check(&config, DenseDevice::Cpu).unwrap_err().to_string();
        assert!(e.contains("memory.host_max_gb = 1") && e.contains("model.table_storage = \"mmap\""), "{e}");

        config.model.table_storage = TableStorage::Mmap;
        config.model.table_path = Some("/data/t.table".into());
        let mapped = MemoryPlan::new(&config, rows, &head, 1000, DenseDevice::Cpu);
        assert_eq!(mapped.disk_bytes(), table + state);
        assert_eq!(mapped.bytes_on(TABLE_DEVICE), memory.bytes_on(TABLE_DEVICE) - table - state);
        assert_eq!(mapped.table_file_bytes(), Some(crate::mem::mapped::HEADER_BYTES + table + state.next_multiple_of(4096)));
        mapped.check(&config, DenseDevice::Cpu).unwrap();
        let text = mapped.describe();
        assert!(text.contains("disk /data/t.table: 7.680 GB (embedding table 2.560 GB, table optimizer state 5.120 GB; mapped"), "{text}");
    }
}
