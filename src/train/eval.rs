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

pub fn evaluate(table: &EmbeddingTable, head: &HeadWeights, pooling: Pooling, data: &Dataset, k: usize) -> EvalMetrics {
    // (loss, correct, in top k) per example; summed in order afterwards so the result is deterministic.
    let per_example: Vec<(f64, bool, bool)> = (0..data.len())
        .into_par_iter()
        .map_init(
            || Scratch::new(head),
            |s, i| {
                let label = data.labels[i];
                let z = logits(table, head, pooling, data.example(i), s);
                if label == UNKNOWN_LABEL {
                    return (0.0, false, false);
                }
                let target = z[label as usize];
                let higher = z.iter().filter(|&&v| v > target).count();
                (log_sum_exp(z) - target as f64, higher == 0, higher < k)
            },
        )
        .collect();
    let n = data.len().max(1) as f64;
    let known = (data.len() as u64 - data.unknown_labels).max(1) as f64;
    EvalMetrics {
        loss: per_example.iter().map(|e| e.0).sum::<f64>() / known,
        accuracy: per_example.iter().filter(|e| e.1).count() as f64 / n,
        top_k_accuracy: per_example.iter().filter(|e| e.2).count() as f64 / n,
        k,
        examples: data.len(),
        unknown_labels: data.unknown_labels,
    }
}
