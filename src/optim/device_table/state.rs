//! The device table's optimizer state on the host, in the same named arrays as
//! the host `LazyAdam` (`step`, `m`, `v`, `row_steps`, `log_decay`,
//! `row_log_decay`), so checkpoints and the host optimizer can read either.

use crate::optim::{adam_state_arrays, StateData, StateError, StateSource};

/// A downloaded copy of a [`super::DeviceTable`]'s optimizer state.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DeviceTableState {
    pub step: u64,
    /// `rows × dim` first moments, row-major.
    pub m: Vec<f32>,
    /// `rows × dim` second moments, row-major.
    pub v: Vec<f32>,
    /// Per-row step counts (empty unless `BiasCorrection::PerRow`).
    pub row_steps: Vec<u32>,
    /// Σ ln(1 − lr·wd) over all steps (0 without weight decay).
    pub log_decay: f64,
    /// Each row's `log_decay` when it last received its decay (empty without weight decay).
    pub row_log_decay: Vec<f64>,
    /// Whether this state carries `log_decay`/`row_log_decay` (the table has weight decay).
    pub decays: bool,
}

impl DeviceTableState {
    /// Every array by name, in the order and with the names of `LazyAdam::state()`.
    pub fn arrays(&self) -> Vec<(&'static str, StateData<'_>)> {
        let decay = self.decays.then_some((&self.log_decay, &self.row_log_decay[..]));
        adam_state_arrays(&self.step, &self.m, &self.v, &self.row_steps, decay)
    }
}

impl StateSource for DeviceTableState {
    fn read_f32(&self, name: &str, into: &mut [f32]) -> Result<(), StateError> {
        StateArrays(&self.arrays()).read_f32(name, into)
    }
    fn read_u32(&self, name: &str, into: &mut [u32]) -> Result<(), StateError> {
        StateArrays(&self.arrays()).read_u32(name, into)
    }
    fn read_f64(&self, name: &str, into: &mut [f64]) -> Result<(), StateError> {
        StateArrays(&self.arrays()).read_f64(name, into)
    }
    fn read_u64(&self, name: &str, into: &mut [u64]) -> Result<(), StateError> {
        StateArrays(&self.arrays()).read_u64(name, into)
    }
}

/// A [`StateSource`] over borrowed named arrays, e.g. a host optimizer's
/// `TableOptimizer::state()`, to move its state onto the device.
pub struct StateArrays<'a, 'b>(pub &'a [(&'static str, StateData<'b>)]);

impl StateArrays<'_, '_> {
    fn find(&self, name: &str) -> Result<&StateData<'_>, StateError> {
        self.0.iter().find(|(n, _)| *n == name).map(|(_, d)| d).ok_or_else(|| StateError::Missing(name.to_string()))
    }
}

fn kind(d: &StateData<'_>) -> &'static str {
    match d {
        StateData::F32(_) => "f32",
        StateData::U32(_) => "u32",
        StateData::F64(_) => "f64",
        StateData::U64(_) => "u64",
    }
}

macro_rules! read_impl {
    ($fn:ident, $ty:ty, $variant:ident, $label:literal) => {
        fn $fn(&self, name: &str, into: &mut [$ty]) -> Result<(), StateError> {
            match self.find(name)? {
                StateData::$variant(x) if x.len() == into.len() => {
                    into.copy_from_slice(x);
                    Ok(())
                }
                StateData::$variant(x) => Err(StateError::WrongLength { name: name.to_string(), expected: into.len(), found: x.len() }),
                other => Err(StateError::WrongType { name: name.to_string(), expected: $label, found: kind(other).to_string() }),
            }
        }
    };
}

impl StateSource for StateArrays<'_, '_> {
    read_impl!(read_f32, f32, F32, "f32");
    read_impl!(read_u32, u32, U32, "u32");
    read_impl!(read_f64, f64, F64, "f64");
    read_impl!(read_u64, u64, U64, "u64");
}
