//! How many trials run at a time: within the cores and the memory plan.
//!
//! `parallel = "auto"` takes the smallest of: the number of trials; the cores
//! divided by each run's worker threads (a run with `train.threads = 0` counts
//! as one and is then given its share of the cores); and the available host
//! memory divided by the largest trial's memory plan (the same plan a run
//! checks before it allocates: table, optimizer state, encoded data,
//! activations). A dense head on a GPU makes it 1: runs would share the device.

use std::collections::BTreeMap;

use super::spec::{Parallel, Plan};
use crate::device::{parse_dense_device, DenseDevice, TABLE_DEVICE};
use crate::memory::{size, MemoryPlan};
use crate::model::HeadConfig;

/// Runs at a time and the worker threads each gets.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    pub workers: usize,
    /// Set as `train.threads` of every trial that left it at 0 (all cores),
    /// so that parallel runs do not each start a thread per core.
    pub threads_per_run: Option<usize>,
    /// One line saying why, for the log.
    pub why: String,
}

/// The host bytes of each trial's memory plan, preparing each distinct data
/// setting (data, tokenizer, vocab) once to learn its rows and ids.
fn host_bytes(plan: &Plan) -> anyhow::Result<Vec<u64>> {
    let mut prepared: BTreeMap<String, (usize, u64, usize)> = BTreeMap::new();
    let mut out = Vec::new();
    for t in &plan.trials {
        let c = &t.config;
        let data_key = format!("{:?}{:?}{:?}", c.data, c.tokenizer, c.vocab);
        if !prepared.contains_key(&data_key) {
            let p = crate::train::prepare::prepare(c)?;
            let ids = (p.train.ids.len() + p.test.ids.len()) as u64;
            prepared.insert(data_key.clone(), (p.featurizer.rows(), ids, p.labels.len()));
        }
        let (rows, ids, classes) = prepared[&data_key];
        let head = HeadConfig { input: c.model.dim, hidden: c.model.hidden.clone(), classes };
        let dense = parse_dense_device(&c.placement.dense).unwrap_or(DenseDevice::Cpu);
        out.push(MemoryPlan::new(c, rows, &head, ids, dense).bytes_on(TABLE_DEVICE));
    }
    Ok(out)
}

/// Decides for `plan` on a machine with `cores` cores and `available` bytes of memory (None: unknown).
pub fn decide(plan: &Plan, cores: usize, available: Option<u64>) -> anyhow::Result<Decision> {
    let trials = plan.trials.len().max(1);
    let cores = cores.max(1);
    let fixed_threads = plan.trials.iter().map(|t| t.config.train.threads).max().unwrap_or(0);
    let (workers, why) = match plan.parallel {
        Parallel::Jobs(n) => (n.min(trials), format!("parallel = {n}")),
        Parallel::Auto if plan.trials.iter().any(|t| t.config.placement.dense != "cpu") => (1, "auto: the dense head is on a GPU, which runs would share".to_string()),
        Parallel::Auto => {
            let by_cores = cores / fixed_threads.max(1);
            let bytes = host_bytes(plan)?.into_iter().max().unwrap_or(0);
            let by_memory = match available {
                Some(avail) if bytes > 0 => (avail / bytes) as usize,
                _ => usize::MAX,
            };
            let workers = trials.min(by_cores).min(by_memory).max(1);
            let memory = match available {
                Some(avail) => format!("memory plan {} per run, {} available", size(bytes), size(avail)),
                None => format!("memory plan {} per run", size(bytes)),
            };
            (workers, format!("auto: {cores} cores, {memory}"))
        }
    };
    let threads_per_run = (workers > 1 && plan.trials.iter().any(|t| t.config.train.threads == 0)).then(|| (cores / workers).max(1));
    Ok(Decision { workers, threads_per_run, why })
}
