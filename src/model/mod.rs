//! The model: a sparse embedding bag over a host-memory table, then a dense head in Burn.

pub mod bag;
pub mod half_rows;
pub mod head;
pub mod loss;
pub mod sparse_grad;
pub mod table;

pub use bag::{bag_backward, bag_backward_rows, bag_forward, pool_one, Bags, Pooling};
pub use half_rows::{RoundingKey, RowValue, TableDtype, TableView};
pub use head::{DenseLayer, Head, HeadConfig, HeadWeights};
pub use sparse_grad::SparseGrad;
pub use table::{EmbeddingTable, RowsForUpdate, TableInit, TableRecipe};
