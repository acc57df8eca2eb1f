//! A cancel token: how a caller (another thread, a Ctrl-C handler, a server)
//! asks a training run or a comparison to stop at the next step boundary.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Cheap to clone; every clone sees the same flag. A fresh token is not
/// cancelled, so each run starts with its own (unlike a process-global flag,
/// a cancelled run does not make the next one stop at once).
#[derive(Clone, Debug, Default)]
pub struct CancelToken(Arc<AtomicBool>);

impl CancelToken {
    pub fn new() -> Self {
        Self::default()
    }

    /// Asks the run to stop: it finishes the current step, writes a final
    /// checkpoint and returns an outcome marked `interrupted`.
    /// Returns whether the token was already cancelled.
    pub fn cancel(&self) -> bool {
        self.0.swap(true, Ordering::SeqCst)
    }

    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clones_share_one_flag_and_fresh_tokens_start_clear() {
        let a = CancelToken::new();
        let b = a.clone();
        assert!(!b.is_cancelled());
        assert!(!a.cancel());
        assert!(b.is_cancelled());
        assert!(b.cancel(), "a second cancel reports the first");
        assert!(!CancelToken::new().is_cancelled());
    }
}
