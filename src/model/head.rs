//! The dense head: `Linear → ReLU → … → Linear` in Burn, on the pooled bag.
//!
//! [`HeadWeights`] is the same head as plain f32 arrays: what exports store and
//! what the predictor runs, so serving needs no autodiff graph.

use burn::module::{Module, Param, ParamId};
use burn::nn::Linear;
use burn::tensor::activation::relu;
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Layer sizes of the head.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeadConfig {
    pub input: usize,
    /// Hidden layer widths; empty gives a linear classifier.
    pub hidden: Vec<usize>,
    pub classes: usize,
}

impl HeadConfig {
    /// `(in, out)` of every Linear layer.
    pub fn layer_shapes(&self) -> Vec<(usize, usize)> {
        let mut sizes = vec![self.input];
        sizes.extend(&self.hidden);
        sizes.push(self.classes);
        sizes.windows(2).map(|w| (w[0], w[1])).collect()
    }

    /// Weights drawn from `U(-1/√in, 1/√in)` (Burn's and torch's Linear default)
    /// with a seeded RNG of our own, so every A/B arm starts from identical weights.
    pub fn init_weights(&self, seed: u64) -> HeadWeights {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        rng.set_stream(u64::MAX); // distinct from the table's streams
        let layers = self
            .layer_shapes()
            .into_iter()
            .map(|(input, output)| {
                let k = 1.0 / (input as f32).sqrt();
                let mut draw = |n: usize| (0..n).map(|_| rng.random_range(-k..=k)).collect::<Vec<f32>>();
                let weight = draw(input * output);
                let bias = draw(output);
                DenseLayer { input, output, weight, bias }
            })
            .collect();
        HeadWeights { layers }
    }
}

/// One Linear layer as plain arrays; `weight` is `[input, output]` row-major (Burn's layout).
#[derive(Clone, Debug, PartialEq)]
pub struct DenseLayer {
    pub input: usize,
    pub output: usize,
    pub weight: Vec<f32>,
    pub bias: Vec<f32>,
}

/// How the head is stored in checkpoints and bundles (`head.safetensors`,
/// `model.safetensors`): layer `i` is `head.{i}.weight` with shape
/// `[input, output]`, row-major (Burn's layout, so `y = x·W + b`), and
/// `head.{i}.bias` with shape `[output]`, both F32.
impl DenseLayer {
    pub fn weight_name(i: usize) -> String {
        format!("head.{i}.weight")
    }
    pub fn bias_name(i: usize) -> String {
        format!("head.{i}.bias")
    }
    /// `[input, output]`.
    pub fn weight_shape(&self) -> Vec<usize> {
        vec![self.input, self.output]
    }
    pub fn bias_shape(&self) -> Vec<usize> {
        vec![self.output]
    }
}

/// The head's parameters, with ReLU between consecutive layers.
#[derive(Clone, Debug, PartialEq)]
pub struct HeadWeights {
    pub layers: Vec<DenseLayer>,
}

impl HeadWeights {
    pub fn input_dim(&self) -> usize {
        self.layers.first().map_or(0, |l| l.input)
    }
    pub fn classes(&self) -> usize {
        self.layers.last().map_or(0, |l| l.output)
    }
    /// The widest activation, for sizing scratch buffers once.
    pub fn max_width(&self) -> usize {
        self.layers.iter().map(|l| l.input.max(l.output)).max().unwrap_or(0)
    }

    /// Logits for one pooled vector, using two caller-owned scratch buffers of
    /// at least `max_width()` each, so a resident predictor allocates nothing per call.
    pub fn logits_into<'a>(&self, pooled: &[f32], a: &'a mut [f32], b: &'a mut [f32]) -> &'a [f32] {
        let (mut cur, mut next) = (a, b);
        cur[..pooled.len()].copy_from_slice(pooled);
        for (i, layer) in self.layers.iter().enumerate() {
            let out = &mut next[..layer.output];
            out.copy_from_slice(&layer.bias);
            for (x, w_row) in cur[..layer.input].iter().zip(layer.weight.chunks_exact(layer.output)) {
                for (o, w) in out.iter_mut().zip(w_row) {
                    *o += x * w;
                }
            }
            if i + 1 < self.layers.len() {
                out.iter_mut().for_each(|o| *o = o.max(0.0));
            }
            std::mem::swap(&mut cur, &mut next);
        }
        &cur[..self.classes()]
    }
}

/// The head as a Burn module, trained with Burn's autodiff and Adam.
#[derive(Module, Debug)]
pub struct Head<B: Backend> {
    layers: Vec<Linear<B>>,
}

impl<B: Backend> Head<B> {
    /// Parameter ids are fixed by position (not random), so a head rebuilt from a
    /// checkpoint matches the ids its saved optimizer state is keyed by.
    pub fn from_weights(weights: &HeadWeights, device: &B::Device) -> Self {
        let layers = weights
            .layers
            .iter()
            .enumerate()
            .map(|(i, l)| {
                let weight = Tensor::from_data(TensorData::new(l.weight.clone(), [l.input, l.output]), device);
                let bias = Tensor::from_data(TensorData::new(l.bias.clone(), [l.output]), device);
                Linear {
                    weight: Param::initialized(ParamId::from(2 * i as u64 + 1), weight.require_grad()),
                    bias: Some(Param::initialized(ParamId::from(2 * i as u64 + 2), bias.require_grad())),
                }
            })
            .collect();
        Head { layers }
    }

    pub fn forward(&self, pooled: Tensor<B, 2>) -> Tensor<B, 2> {
        let last = self.layers.len() - 1;
        self.layers.iter().enumerate().fold(pooled, |x, (i, layer)| {
            let y = layer.forward(x);
            if i < last {
                relu(y)
            } else {
                y
            }
        })
    }

    /// `(in, out)` of every layer, read from the parameters themselves.
    pub fn layer_shapes(&self) -> Vec<(usize, usize)> {
        self.layers
            .iter()
            .map(|l| {
                let [i, o] = l.weight.dims();
                (i, o)
            })
            .collect()
    }

    /// Copies the parameters out as plain arrays (for export and checks).
    pub fn weights(&self) -> HeadWeights {
        let layers = self
            .layers
            .iter()
            .map(|l| {
                let [input, output] = l.weight.dims();
                let weight = l.weight.val().into_data().to_vec::<f32>().expect("f32 weights");
                let bias = match &l.bias {
                    Some(b) => b.val().into_data().to_vec::<f32>().expect("f32 bias"),
                    None => vec![0.0; output],
                };
                DenseLayer { input, output, weight, bias }
            })
            .collect();
        HeadWeights { layers }
    }
}
