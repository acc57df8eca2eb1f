//! Training from code: in-memory examples in, a model out, no files needed.
//!
//! 1. Trains on the bundled sample held in memory as `(label, text)` pairs
//!    and predicts with the returned model, checking its predictions against
//!    the run's own evaluation.
//! 2. Starts a second run and cancels it from another thread once an
//!    observer has seen a few steps: it stops early, with a usable model.
//!
//! `cargo run --release --example train_from_code` (CI runs it; it exits
//! non-zero if any check fails).

use std::sync::mpsc;

use sparseburn::config::Config;
use sparseburn::train::{Observer, StepEvent, Trainer};

/// Tells another thread which step the run has reached.
struct StepSignal(mpsc::Sender<u64>);

impl Observer for StepSignal {
    fn on_step(&mut self, step: &StepEvent) {
        let _ = self.0.send(step.record.step);
    }
}

fn main() -> anyhow::Result<()> {
    // Examples from anywhere: here the bundled TSV, read into memory.
    let text = std::fs::read_to_string("examples/data/sotu_era_600.tsv")?;
    let examples: Vec<(String, String)> = text.lines().filter_map(|l| l.split_once('\t')).map(|(label, text)| (label.to_string(), text.to_string())).collect();
    // Every 5th example is held out for testing.
    let (test, train): (Vec<_>, Vec<_>) = examples.iter().cloned().enumerate().partition(|(i, _)| i % 5 == 0);
    let strip = |v: Vec<(usize, (String, String))>| v.into_iter().map(|(_, e)| e).collect::<Vec<_>>();
    let (train, test) = (strip(train), strip(test));

    // The defaults, with the quickstart's learning rates (configs/quickstart.toml).
    let mut config = Config::default();
    config.experiment.seed = 7;
    config.vocab.buckets = 100_000;
    config.optimizer.table.set_lr(0.05);
    config.optimizer.head.lr = 0.01;
    config.train.epochs = 20;
    config.train.batch_size = 32;
    config.logging.quiet = true;

    // 1. Train in memory (no run directory is kept) and predict.
    let trained = Trainer::from_examples(config.clone(), train.clone(), Some(test.clone()))?.train()?;
    let outcome = &trained.outcome;
    println!("trained {} steps: test accuracy {:.4}", outcome.steps, outcome.final_eval.accuracy);
    assert!(trained.run_dir.is_none(), "no run directory was asked for");
    assert!(!outcome.interrupted);
    assert!(outcome.final_eval.accuracy > 0.4, "5 labels: chance is 0.2, got {}", outcome.final_eval.accuracy);

    let model = &trained.model;
    let mut correct = 0;
    for (label, text) in &test {
        let top = model.predict(text, 2);
        let probabilities = model.probabilities(text);
        let sum: f32 = probabilities.iter().sum();
        assert!((sum - 1.0).abs() < 1e-5, "probabilities sum to {sum}");
        assert!(top[0].1 >= top[1].1, "predictions are sorted");
        correct += (top[0].0 == *label) as usize;
    }
    // The model's own predictions give the accuracy the run evaluated.
    let accuracy = correct as f64 / test.len() as f64;
    assert_eq!(accuracy, outcome.final_eval.accuracy, "predict() disagrees with the run's evaluation");
    let (label, p) = &model.predict(&test[0].1, 1)[0];
    println!("\"{}…\" → {label} ({p:.3})", test[0].1.chars().take(40).collect::<String>());

    // 2. Cancel a longer run from another thread after 20 steps.
    config.train.epochs = 1000;
    let (tx, rx) = mpsc::channel();
    let trainer = Trainer::from_examples(config, train, Some(test))?.observe(StepSignal(tx));
    let cancel = trainer.cancel_token();
    let canceller = std::thread::spawn(move || {
        while let Ok(step) = rx.recv() {
            if step >= 20 {
                cancel.cancel();
                return step;
            }
        }
        0
    });
    let stopped = trainer.train()?;
    let cancelled_at = canceller.join().expect("canceller thread");
    let total = 1000 * 480u64.div_ceil(32);
    println!("cancelled at step {cancelled_at}: the run stopped after {} of {total} steps", stopped.outcome.steps);
    assert!(stopped.outcome.interrupted, "the run reports that it was cancelled");
    assert!(stopped.outcome.steps >= 20 && stopped.outcome.steps < total, "stopped after {} steps", stopped.outcome.steps);
    assert_eq!(stopped.model.labels().len(), 5, "a cancelled run still returns its model");
    println!("ok");
    Ok(())
}
