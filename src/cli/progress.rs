//! Training progress on stderr: a bar with an ETA on a terminal; otherwise
//! (a pipe, a log file) one line every few seconds, so that a log shows how
//! far a run got and how fast it goes.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use sparseburn::train::run_dir::EvalRecord;
use sparseburn::train::{Observer, RunOutcome, RunStart, StepEvent};

pub struct Progress {
    /// Seconds between lines when stderr is not a terminal.
    every: Duration,
    terminal: bool,
    bar: Option<ProgressBar>,
    total: u64,
    /// The first step this session finished, and when: the ETA's rate counts
    /// the steps after it (the first one also pays for start-up, and on a GPU
    /// for compiling kernels).
    first_step: Option<(u64, Instant)>,
    last_line: Instant,
}

impl Progress {
    pub fn new(every: Duration) -> Self {
        Progress { every, terminal: std::io::stderr().is_terminal(), bar: None, total: 0, first_step: None, last_line: Instant::now() }
    }

    fn eta(&self, step: u64) -> Option<Duration> {
        let (first, at) = self.first_step?;
        let done = step.saturating_sub(first);
        (done > 0).then(|| at.elapsed().mul_f64(self.total.saturating_sub(step) as f64 / done as f64))
    }

    fn print(&self, line: &str) {
        match &self.bar {
            // suspend, not println: println prints nothing when stderr is not a terminal.
            Some(bar) => bar.suspend(|| eprintln!("{line}")),
            None => eprintln!("{line}"),
        }
    }
}

impl Observer for Progress {
    fn on_start(&mut self, start: &RunStart) {
        (self.total, self.first_step, self.last_line) = (start.total_steps, None, Instant::now());
        if self.terminal {
            let bar = ProgressBar::new(start.total_steps);
            bar.set_style(ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} ETA {msg}").expect("valid template").progress_chars("=> "));
            bar.set_position(start.first_step);
            self.bar = Some(bar);
        }
    }

    fn on_step(&mut self, e: &StepEvent) {
        let r = e.record;
        self.first_step.get_or_insert_with(|| (r.step, Instant::now()));
        let eta = self.eta(r.step).map_or_else(|| "?".to_string(), format_duration);
        let what = format!("epoch {} loss {} {:.0} examples/s", r.epoch + 1, format_loss(r.loss as f64), r.examples_per_second);
        if let Some(bar) = &self.bar {
            bar.set_position(r.step);
            bar.set_message(format!("{eta} {what}"));
        } else if self.last_line.elapsed() >= self.every || r.step == self.total {
            self.last_line = Instant::now();
            eprintln!("step {}/{} {what} ETA {eta}", r.step, self.total);
        }
    }

    fn on_eval(&mut self, m: &EvalRecord) {
        self.print(&format!("step {}: eval loss {} accuracy {:.4} top-{} {:.4}", m.step, format_loss(m.loss), m.accuracy, m.k, m.top_k_accuracy));
    }

    fn on_finish(&mut self, result: Result<&RunOutcome, &anyhow::Error>) {
        if let Some(bar) = self.bar.take() {
            match result {
                Ok(o) if !o.interrupted => bar.finish_and_clear(),
                Ok(_) => bar.abandon_with_message("interrupted"),
                Err(_) => bar.abandon(),
            }
        }
    }
}

/// A loss with four decimals (`0.8123`), or four significant digits (`3.215e-5`) where
/// four decimals would show `0.0000`.
pub fn format_loss(x: f64) -> String {
    if x != 0.0 && x.abs() < 1e-3 && x.is_finite() {
        format!("{x:.3e}")
    } else {
        format!("{x:.4}")
    }
}

/// `1h02m03s`, `2m03s`, `3s`.
pub fn format_duration(d: Duration) -> String {
    let s = d.as_secs();
    match (s / 3600, s / 60 % 60, s % 60) {
        (0, 0, s) => format!("{s}s"),
        (0, m, s) => format!("{m}m{s:02}s"),
        (h, m, s) => format!("{h}h{m:02}m{s:02}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_losses_keep_their_digits() {
        assert_eq!(format_loss(0.812349), "0.8123");
        assert_eq!(format_loss(0.0), "0.0000");
        assert_eq!(format_loss(3.2154e-5), "3.215e-5");
        assert_eq!(format_loss(-2.5e-7), "-2.500e-7");
        assert_eq!(format_loss(0.001), "0.0010");
        assert_eq!(format_loss(f64::NAN), "NaN");
        // Read back, the printed value is the loss to 4 significant digits.
        for x in [1.234567e-4, 9.87654e-9] {
            let back: f64 = format_loss(x).parse().unwrap();
            assert!(((back - x) / x).abs() < 5e-4, "{x} -> {}", format_loss(x));
        }
    }

    #[test]
    fn durations_read_as_hours_minutes_seconds() {
        assert_eq!(format_duration(Duration::from_secs(3)), "3s");
        assert_eq!(format_duration(Duration::from_secs(123)), "2m03s");
        assert_eq!(format_duration(Duration::from_secs(3723)), "1h02m03s");
    }

    #[test]
    fn eta_extrapolates_this_session_s_rate() {
        let mut p = Progress::new(Duration::from_secs(10));
        p.total = 1000;
        assert_eq!(p.eta(400), None, "no step seen yet: no rate");
        p.first_step = Some((400, Instant::now() - Duration::from_secs(60)));
        assert_eq!(p.eta(400), None, "only the first step: no rate");
        // 100 steps in 60 s; 500 to go: 300 s.
        let eta = p.eta(500).unwrap().as_secs_f64();
        assert!((eta - 300.0).abs() < 1.0, "{eta}");
    }
}
