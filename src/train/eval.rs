//! Evaluation: loss, accuracy and top-k accuracy on a dataset, computed with
//! the same pooling and plain-f32 head the predictor uses, so served
//! predictions equal evaluated ones.

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::data::dataset::UNKNOWN_LABEL;
use crate::data::Dataset;
use crate::model::{pool_one, EmbeddingTable, HeadWeights, Pooling};

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct EvalMetrics {
    pub loss: f64,
    pub accuracy: f64,
    pub top_k_accuracy: f64,
    pub k: usize,
    pub examples: usize,
    /// Examples whose label never appeared in training (counted as errors, left out of the loss).
    pub unknown_labels: u64,
}

/// Reusable per-thread buffers for one forward pass.
pub struct Scratch {
    pooled: Vec<f32>,
    a: Vec<f32>,
    b: Vec<f32>,
}

impl Scratch {
    pub fn new(head: &HeadWeights) -> Self {
        let w = head.max_width();
        Scratch { pooled: vec![0.0; head.input_dim()], a: vec![0.0; w], b: vec![0.0; w] }
    }
}

/// Logits of one bag of row ids.
pub fn logits<'s>(table: &EmbeddingTable, head: &HeadWeights, pooling: Pooling, ids: &[u32], s: &'s mut Scratch) -> &'s [f32] {
    pool_one(table.view(), table.dim(), ids, pooling, &mut s.pooled);
    head.logits_into(&s.pooled, &mut s.a, &mut s.b)
}

/// Numerically stable log-softmax normaliser: `log Σ exp(x)`.
pub fn log_sum_exp(x: &[f32]) -> f64 {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    max + x.iter().map(|&v| (v as f64 - max).exp()).sum::<f64>().ln()
}

/// Examples scored per chunk (whose ids are read from disk together when
/// `memory.examples = "disk"`): enough that the parallel scoring of a chunk
/// keeps every thread busy.
const EVAL_CHUNK_EXAMPLES: usize = 8192;

pub fn evaluate(table: &EmbeddingTable, head: &HeadWeights, pooling: Pooling, data: &Dataset, k: usize) -> EvalMetrics {
    let mut scores = Vec::with_capacity(data.len());
    // In chunks, so that ids on disk are read into memory one chunk at a time.
    for chunk in (0..data.len()).step_by(EVAL_CHUNK_EXAMPLES) {
        let n = EVAL_CHUNK_EXAMPLES.min(data.len() - chunk);
        let (ids, base) = (data.ids_of(chunk..chunk + n), data.offsets[chunk]);
        let example = |e: usize| &ids[data.offsets[e] - base..data.offsets[e + 1] - base];
        scores.extend(score_examples(table, head, pooling, k, n, |i| (example(chunk + i), data.labels[chunk + i])));
    }
    metrics_of(&scores, data, k)
}

/// One example's evaluation: its loss (0 for an unknown label), whether the
/// label is the top prediction, whether it is in the top k.
#[derive(Clone, Copy, Debug, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
#[repr(C)]
pub struct ExampleScore {
    pub loss: f64,
    pub correct: u32,
    pub in_top_k: u32,
}

/// Scores examples `0..n`, where `example(i)` gives example i's ids (rows
/// of `table`) and label, in parallel.
pub fn score_examples<'d>(
    table: &EmbeddingTable,
    head: &HeadWeights,
    pooling: Pooling,
    k: usize,
    n: usize,
    example: impl Fn(usize) -> (&'d [u32], u32) + Sync,
) -> Vec<ExampleScore> {
    (0..n)
        .into_par_iter()
        .map_init(
            || Scratch::new(head),
            |s, i| {
                let (ids, label) = example(i);
                let z = logits(table, head, pooling, ids, s);
                if label == UNKNOWN_LABEL {
                    return ExampleScore { loss: 0.0, correct: 0, in_top_k: 0 };
                }
                let target = z[label as usize];
                let higher = z.iter().filter(|&&v| v > target).count();
                ExampleScore { loss: log_sum_exp(z) - target as f64, correct: (higher == 0) as u32, in_top_k: (higher < k) as u32 }
            },
        )
        .collect()
}

/// The metrics of `data` from its examples' scores, in example order (summed
/// in that order, so however the scores were computed the result is the same).
pub fn metrics_of(scores: &[ExampleScore], data: &Dataset, k: usize) -> EvalMetrics {
    let n = data.len().max(1) as f64;
    let known = (data.len() as u64 - data.unknown_labels).max(1) as f64;
    EvalMetrics {
        loss: scores.iter().map(|e| e.loss).sum::<f64>() / known,
        accuracy: scores.iter().filter(|e| e.correct != 0).count() as f64 / n,
        top_k_accuracy: scores.iter().filter(|e| e.in_top_k != 0).count() as f64 / n,
        k,
        examples: data.len(),
        unknown_labels: data.unknown_labels,
    }
}
