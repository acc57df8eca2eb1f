//! What a checkpoint restores, as comparable bytes (shared by the checkpoint tests).

use std::path::Path;

use sparseburn::optim::StateData;
use sparseburn::train::checkpoint::Checkpoint;

/// The newest valid checkpoint's full table and head as `model()` rebuilds
/// them, its trainer step, and the table optimizer's state loaded into a
/// fresh optimizer: everything a resumed run continues from.
pub fn restored(run: &Path) -> Vec<(String, Vec<u8>)> {
    let ckpt = Checkpoint::open_latest(run).unwrap_or_else(|e| panic!("{}: {e:#}", run.display()));
    let (table, head) = ckpt.model().unwrap();
    let mut out = vec![("step".to_string(), ckpt.state.step.to_le_bytes().to_vec()), ("table".to_string(), table.view().as_bytes().to_vec())];
    for (i, l) in head.layers.iter().enumerate() {
        out.push((format!("head.{i}.weight"), bytemuck::cast_slice(&l.weight).to_vec()));
        out.push((format!("head.{i}.bias"), bytemuck::cast_slice(&l.bias).to_vec()));
    }
    for (name, data) in ckpt.table_optimizer().unwrap().state() {
        let bytes = match data {
            StateData::F32(x) => bytemuck::cast_slice(x).to_vec(),
            StateData::U32(x) => bytemuck::cast_slice(x).to_vec(),
            StateData::F64(x) => bytemuck::cast_slice(x).to_vec(),
            StateData::U64(x) => bytemuck::cast_slice(x).to_vec(),
        };
        out.push((format!("optimizer.{name}"), bytes));
    }
    out
}
