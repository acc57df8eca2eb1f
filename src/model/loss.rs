//! The training loss: softmax cross-entropy over the head's logits, with
//! optional label smoothing (Szegedy et al. 2016): the target distribution is
//! `q = (1 - ε)·onehot(y) + ε/K` over `K` classes, the loss per example is
//! `-Σ_k q_k log softmax(z)_k`, averaged over the batch, and its gradient with
//! respect to the logits is `(softmax(z) - q) / batch`. ε = 0 is plain
//! cross-entropy.

use burn::nn::loss::{CrossEntropyLoss, CrossEntropyLossConfig};
use burn::tensor::backend::Backend;

/// Burn's cross-entropy with `train.label_smoothing` = `epsilon` (already validated to be in [0, 1)).
pub fn training_loss<B: Backend>(epsilon: f64, device: &B::Device) -> CrossEntropyLoss<B> {
    let config = CrossEntropyLossConfig::new();
    let config = if epsilon > 0.0 { config.with_smoothing(Some(epsilon as f32)) } else { config };
    config.init(device)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Int, Tensor, TensorData};
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    type B = burn::backend::Autodiff<burn::backend::Flex>;

    /// The smoothed loss of one batch, in f64, straight from the formula.
    fn loss_f64(z: &[f64], targets: &[usize], classes: usize, eps: f64) -> f64 {
        let mut total = 0.0;
        for (row, &y) in z.chunks(classes).zip(targets) {
            let max = row.iter().cloned().fold(f64::MIN, f64::max);
            let lse = max + row.iter().map(|v| (v - max).exp()).sum::<f64>().ln();
            for (k, v) in row.iter().enumerate() {
                let q = if k == y { 1.0 - eps } else { 0.0 } + eps / classes as f64;
                total -= q * (v - lse);
            }
        }
        total / targets.len() as f64
    }

    /// `(softmax(z) - q) / batch`, in f64.
    fn grad_f64(z: &[f64], targets: &[usize], classes: usize, eps: f64) -> Vec<f64> {
        let mut out = Vec::new();
        for (row, &y) in z.chunks(classes).zip(targets) {
            let max = row.iter().cloned().fold(f64::MIN, f64::max);
            let sum: f64 = row.iter().map(|v| (v - max).exp()).sum();
            for (k, v) in row.iter().enumerate() {
                let q = if k == y { 1.0 - eps } else { 0.0 } + eps / classes as f64;
                out.push(((v - max).exp() / sum - q) / targets.len() as f64);
            }
        }
        out
    }

    fn burn_loss_and_grad(z: &[f64], targets: &[usize], classes: usize, eps: f64) -> (f64, Vec<f64>) {
        let device = Default::default();
        let n = targets.len();
        let logits = Tensor::<B, 2>::from_data(TensorData::new(z.iter().map(|&v| v as f32).collect::<Vec<_>>(), [n, classes]), &device).require_grad();
        let t = Tensor::<B, 1, Int>::from_data(TensorData::new(targets.iter().map(|&y| y as i64).collect::<Vec<_>>(), [n]), &device);
        let loss = training_loss::<B>(eps, &device).forward(logits.clone(), t);
        let grads = loss.backward();
        let value = loss.into_data().convert::<f32>().to_vec::<f32>().unwrap()[0] as f64;
        let grad = logits.grad(&grads).unwrap().into_data().to_vec::<f32>().unwrap();
        (value, grad.into_iter().map(f64::from).collect())
    }

    #[test]
    fn the_reference_gradient_is_the_derivative_of_the_reference_loss() {
        // Central finite differences of the f64 loss check the closed form used below.
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let (classes, targets) = (5, [0usize, 4, 2]);
        let z: Vec<f64> = (0..classes * targets.len()).map(|_| rng.random_range(-3.0..3.0)).collect();
        for eps in [0.0, 0.1, 0.5] {
            let g = grad_f64(&z, &targets, classes, eps);
            for i in 0..z.len() {
                let h = 1e-6;
                let (mut up, mut down) = (z.clone(), z.clone());
                up[i] += h;
                down[i] -= h;
                let fd = (loss_f64(&up, &targets, classes, eps) - loss_f64(&down, &targets, classes, eps)) / (2.0 * h);
                assert!((fd - g[i]).abs() < 1e-8, "eps {eps} logit {i}: finite difference {fd} vs {}", g[i]);
            }
        }
    }

    #[test]
    fn smoothed_loss_and_gradient_match_the_f64_reference() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let classes = 7;
        let targets: Vec<usize> = (0..16).map(|_| rng.random_range(0..classes)).collect();
        let z: Vec<f64> = (0..classes * targets.len()).map(|_| rng.random_range(-4.0f32..4.0) as f64).collect();
        for eps in [0.0, 0.05, 0.1, 0.3, 0.9] {
            let (loss, grad) = burn_loss_and_grad(&z, &targets, classes, eps);
            let want = loss_f64(&z, &targets, classes, eps);
            assert!((loss - want).abs() < 1e-5 * want.abs().max(1.0), "eps {eps}: loss {loss} vs {want}");
            for (i, (g, w)) in grad.iter().zip(grad_f64(&z, &targets, classes, eps)).enumerate() {
                assert!((g - w).abs() < 1e-6, "eps {eps} logit {i}: gradient {g} vs {w}");
            }
        }
        // Smoothing changes the loss: it is not silently ignored.
        assert!((burn_loss_and_grad(&z, &targets, classes, 0.1).0 - loss_f64(&z, &targets, classes, 0.0)).abs() > 1e-3);
    }
}
