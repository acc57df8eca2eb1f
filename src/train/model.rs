//! A trained model held in memory: what [`super::Trainer::train`] returns, to
//! predict without exporting a bundle. It computes what evaluation and the
//! served predictor compute (same featurizer, pooling and plain-f32 head).

use super::eval::{log_sum_exp, logits, Scratch};
use crate::data::{Featurizer, Labels};
use crate::model::{EmbeddingTable, HeadWeights, Pooling};

pub struct TrainedModel {
    featurizer: Featurizer,
    labels: Labels,
    /// Every row materialised: any text's rows can be read.
    table: EmbeddingTable,
    head: HeadWeights,
    pooling: Pooling,
}

impl TrainedModel {
    pub(crate) fn new(featurizer: Featurizer, labels: Labels, table: EmbeddingTable, head: HeadWeights, pooling: Pooling) -> Self {
        debug_assert!(table.is_materialized());
        TrainedModel { featurizer, labels, table, head, pooling }
    }

    /// Label names, in output order.
    pub fn labels(&self) -> &[String] {
        self.labels.names()
    }

    /// The raw logits of one text, one per label.
    pub fn logits(&self, text: &str) -> Vec<f32> {
        let ids = self.featurizer.features(text);
        logits(&self.table, &self.head, self.pooling, &ids, &mut Scratch::new(&self.head)).to_vec()
    }

    /// Probabilities of every label, in label order.
    pub fn probabilities(&self, text: &str) -> Vec<f32> {
        let z = self.logits(text);
        let lse = log_sum_exp(&z);
        z.iter().map(|&v| (v as f64 - lse).exp() as f32).collect()
    }

    /// The `top_k` most probable labels with their probabilities, highest
    /// first (ties in label order); `top_k` 0 gives every label.
    pub fn predict(&self, text: &str, top_k: usize) -> Vec<(String, f32)> {
        let p = self.probabilities(text);
        let mut order: Vec<usize> = (0..p.len()).collect();
        order.sort_by(|&a, &b| p[b].total_cmp(&p[a]).then(a.cmp(&b)));
        let k = if top_k == 0 { p.len() } else { top_k.min(p.len()) };
        order[..k].iter().map(|&i| (self.labels()[i].clone(), p[i])).collect()
    }

    pub fn table(&self) -> &EmbeddingTable {
        &self.table
    }

    pub fn head(&self) -> &HeadWeights {
        &self.head
    }
}
