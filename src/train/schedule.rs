//! Learning-rate schedules: the factor applied to each optimizer's peak lr at a step.

use crate::config::Schedule;

/// Factor for step `step` (0-based) of `total`: linear warm-up over
/// `warmup` steps, then constant or linear decay to 0 at `total`.
pub fn lr_factor(schedule: Schedule, warmup: u64, step: u64, total: u64) -> f64 {
    if step < warmup {
        return (step + 1) as f64 / warmup as f64;
    }
    match schedule {
        Schedule::Constant => 1.0,
        Schedule::Linear => {
            let span = total.saturating_sub(warmup).max(1) as f64;
            (1.0 - (step - warmup) as f64 / span).max(0.0)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warmup_then_linear_decay() {
        assert_eq!(lr_factor(Schedule::Constant, 0, 5, 10), 1.0);
        assert_eq!(lr_factor(Schedule::Constant, 4, 1, 10), 0.5);
        assert_eq!(lr_factor(Schedule::Linear, 0, 0, 10), 1.0);
        assert!((lr_factor(Schedule::Linear, 0, 5, 10) - 0.5).abs() < 1e-12);
        assert!((lr_factor(Schedule::Linear, 2, 6, 10) - 0.5).abs() < 1e-12);
    }
}
