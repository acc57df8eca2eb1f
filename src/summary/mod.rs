//! TensorBoard summaries (owned by the summary helper).
