//! Summing the head's gradients over ranks: every parameter's gradient is
//! flattened in the module's own visiting order, summed in rank order
//! ([`Collective::all_reduce_sum_f32`]) and registered back, so every rank's
//! Adam takes the same step.

use burn::module::{Module, ModuleVisitor, Param, ParamId};
use burn::optim::GradientsParams;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{Tensor, TensorData};

use super::collective::Collective;

/// Reads each parameter's gradient (zeros where a rank had none) into one vector.
struct Flatten<'a> {
    grads: &'a GradientsParams,
    values: Vec<f32>,
    /// Each parameter's id and shape, in visiting order.
    params: Vec<(ParamId, Vec<usize>)>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for Flatten<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let shape = param.val().dims().to_vec();
        match self.grads.get::<B::InnerBackend, D>(param.id) {
            Some(g) => self.values.extend(g.into_data().convert::<f32>().to_vec::<f32>().expect("f32 gradients")),
            None => self.values.extend(std::iter::repeat_n(0.0, shape.iter().product())),
        }
        self.params.push((param.id, shape));
    }
}

/// Registers the summed gradients back, parameter by parameter.
struct Unflatten<'a> {
    grads: GradientsParams,
    values: &'a [f32],
}

impl<B: AutodiffBackend> ModuleVisitor<B> for Unflatten<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let inner = param.val().inner();
        let shape: [usize; D] = inner.dims();
        let n = shape.iter().product();
        let (mine, rest) = self.values.split_at(n);
        self.values = rest;
        self.grads.register::<B::InnerBackend, D>(param.id, Tensor::from_data(TensorData::new(mine.to_vec(), shape), &inner.device()));
    }
}

/// `grads` summed over every rank (each rank passes its own, for the same module).
/// Returns the values exchanged, for the traffic count.
pub fn all_reduce<B: AutodiffBackend, M: Module<B>>(comm: &dyn Collective, module: &M, grads: GradientsParams) -> anyhow::Result<(GradientsParams, usize)> {
    let mut flat = Flatten { grads: &grads, values: Vec::new(), params: Vec::new() };
    module.visit(&mut flat);
    let Flatten { mut values, params, .. } = flat;
    comm.all_reduce_sum_f32(&mut values)?;
    let mut back = Unflatten { grads: GradientsParams::new(), values: &values };
    module.visit(&mut back);
    debug_assert!(back.values.is_empty() && back.grads.len() == params.len());
    Ok((back.grads, values.len()))
}
