//! Decoupled (AdamW-style) weight decay for lazy optimizers: every step
//! multiplies every row by `1 − lr·wd`; a row absent for some steps receives
//! the product of the factors it missed when it is next updated (or when
//! [`LazyDecay::apply_pending`] runs, e.g. before export), so lazy and dense
//! agree on decay even under an lr schedule. The product is kept as a running
//! sum of logs, with each row's mark the sum when it last caught up.

use rayon::prelude::*;

use super::rows::PerRowMut;
use crate::mem::AlignedVec;
use crate::model::EmbeddingTable;

/// The decay factor a row whose mark is `mark` has missed when the running
/// sum is `log_decay` (what every lazy optimizer, and export, multiplies it by).
#[inline(always)]
pub fn owed_factor(log_decay: f64, mark: f64) -> f32 {
    (log_decay - mark).exp() as f32
}

#[derive(Debug)]
pub(super) struct LazyDecay {
    weight_decay: f64,
    /// Σ ln(1 − lr·wd) over all steps so far (only with weight decay).
    log_decay: f64,
    /// Each row's `log_decay` when its decay was last applied (empty without weight decay).
    marks: AlignedVec<f64>,
}

impl LazyDecay {
    pub(super) fn new(weight_decay: f64, rows: usize) -> Self {
        LazyDecay { weight_decay, log_decay: 0.0, marks: AlignedVec::zeroed(if weight_decay != 0.0 { rows } else { 0 }) }
    }

    /// Adds this step to the running product; returns this step's factor
    /// (what a row present last step too receives, and what dense optimizers apply).
    pub(super) fn begin_step(&mut self, lr: f32) -> f32 {
        let decay = 1.0 - lr as f64 * self.weight_decay;
        if self.weight_decay != 0.0 {
            self.log_decay += decay.ln();
        }
        decay as f32
    }

    pub(super) fn log_decay(&self) -> f64 {
        self.log_decay
    }

    /// The rows' marks for [`super::rows::for_each_grad_row`] (`None` without weight decay).
    pub(super) fn marks(&mut self) -> Option<PerRowMut<'_, f64>> {
        PerRowMut::optional(&mut self.marks)
    }

    /// Every mark caught up to now (a dense step decays every row).
    pub(super) fn mark_all(&mut self) {
        let log_decay = self.log_decay;
        self.marks.iter_mut().for_each(|mark| *mark = log_decay);
    }

    /// The factor a row with `mark` has missed, this step's included; moves the mark to now.
    #[inline(always)]
    pub(super) fn catch_up(log_decay: f64, mark: &mut f64) -> f32 {
        let factor = owed_factor(log_decay, *mark);
        *mark = log_decay;
        factor
    }

    /// [`LazyDecay::catch_up`] for each of `rows`, one at a time (for a
    /// device table, whose per-row factors are computed on the host);
    /// `None` without weight decay.
    pub(super) fn catch_up_rows(&mut self, rows: impl Iterator<Item = usize>) -> Option<Vec<f32>> {
        if self.marks.is_empty() {
            return None;
        }
        let log_decay = self.log_decay;
        Some(rows.map(|r| Self::catch_up(log_decay, &mut self.marks[r])).collect())
    }

    /// Every row's missed decay factor, marks moved to now (`None` without weight decay).
    pub(super) fn catch_up_all(&mut self) -> Option<Vec<f32>> {
        let rows = self.marks.len();
        self.catch_up_rows(0..rows)
    }

    /// Applies every held row's missed decay, so the table holds the weights
    /// a dense optimizer would have (decay-wise) at this step. A lazy table's
    /// rows not materialised yet keep owing theirs (their marks stay), so a
    /// huge lazy table is not written whole; materialise them first to decay them too.
    pub(super) fn apply_pending(&mut self, table: &mut EmbeddingTable) {
        if self.marks.is_empty() {
            return;
        }
        assert_eq!(table.rows(), self.marks.len(), "table and decay marks differ in rows");
        let (log_decay, marks) = (self.log_decay, &self.marks);
        // Half rows are widened and rounded back by the table.
        table.update_held_rows(|r, w| {
            let factor = owed_factor(log_decay, marks[r]);
            w.iter_mut().for_each(|x| *x *= factor);
        });
        self.marks.par_iter_mut().enumerate().filter(|(r, _)| table.holds_row(*r)).for_each(|(_, mark)| *mark = log_decay);
    }

    /// The state arrays `log_decay`, `row_log_decay` (`None` without weight decay).
    pub(super) fn arrays(&self) -> Option<(&f64, &[f64])> {
        (!self.marks.is_empty()).then_some((&self.log_decay, &self.marks[..]))
    }

    pub(super) fn load(&mut self, source: &dyn super::StateSource) -> Result<(), super::StateError> {
        if !self.marks.is_empty() {
            source.read_f64("log_decay", std::slice::from_mut(&mut self.log_decay))?;
            source.read_f64("row_log_decay", &mut self.marks)?;
        }
        Ok(())
    }

    /// Bytes of state for `rows` rows: the marks and the running sum.
    pub(super) fn state_bytes(weight_decay: f64, rows: usize) -> u64 {
        if weight_decay != 0.0 {
            rows as u64 * 8 + 8
        } else {
            0
        }
    }
}

/// Adds the state arrays of `decay` (when enabled) to `state`.
pub(super) fn push_arrays<'a>(state: &mut Vec<(&'static str, super::StateData<'a>)>, decay: &'a LazyDecay) {
    if let Some((log_decay, marks)) = decay.arrays() {
        state.push(("log_decay", super::StateData::F64(std::slice::from_ref(log_decay))));
        state.push(("row_log_decay", super::StateData::F64(marks)));
    }
}
