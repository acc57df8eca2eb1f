//! Data: a streaming reader, the tokenizer, the vocabulary with hashed n-gram
//! buckets, files read once into token ids, encoded datasets and shuffled,
//! prefetched batches.

pub mod batch;
pub mod dataset;
pub mod reader;
pub mod row_ids;
pub mod tokenized;
pub mod tokenizer;
pub mod vocab;

pub use batch::{Batch, BatchIter};
pub use dataset::{Dataset, Labels};
pub use reader::{DataFormat, Example, ReadStats};
pub use row_ids::RowIds;
pub use tokenizer::{Split, Tokenizer, TokenizerConfig};
pub use vocab::{char_ngrams, Featurizer, Vocab, VocabConfig};
