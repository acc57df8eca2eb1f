//! Training from code through `Trainer`: in-memory data trains exactly as
//! the same data in a file, the returned model predicts what evaluation and
//! the exported bundle compute, observers see every event the run writes,
//! a cancel token stops a run from another thread, and bad input is refused
//! before any work.

use std::path::Path;
use std::sync::{mpsc, Arc, Mutex};

use sparseburn::config::Config;
use sparseburn::serve::Predictor;
use sparseburn::train::run_dir::{self, EvalRecord, MetricsRecord};
use sparseburn::train::{Observer, RunOutcome, RunStart, StepEvent, Trainer};

fn quickstart(extra: &[&str]) -> Config {
    let mut overrides: Vec<String> = ["logging.quiet=true", "logging.tensorboard=false", "train.epochs=4"].map(String::from).to_vec();
    overrides.extend(extra.iter().map(|s| s.to_string()));
    Config::load(Path::new("configs/quickstart.toml"), &overrides).unwrap()
}

/// The bundled sample, split into a train and a test file and into the same pairs in memory.
struct Split {
    train: Vec<(String, String)>,
    test: Vec<(String, String)>,
    dir: tempfile::TempDir,
}

fn split() -> Split {
    let text = std::fs::read_to_string("examples/data/sotu_era_600.tsv").unwrap();
    let pairs: Vec<(String, String)> = text.lines().map(|l| l.split_once('\t').unwrap()).map(|(a, b)| (a.to_string(), b.to_string())).collect();
    let (mut train, mut test) = (Vec::new(), Vec::new());
    for (i, p) in pairs.into_iter().enumerate() {
        if i % 4 == 0 {
            test.push(p)
        } else {
            train.push(p)
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, v: &[(String, String)]| std::fs::write(dir.path().join(name), v.iter().map(|(l, t)| format!("{l}\t{t}\n")).collect::<String>()).unwrap();
    write("train.tsv", &train);
    write("test.tsv", &test);
    Split { train, test, dir }
}

#[test]
fn in_memory_examples_train_exactly_as_the_same_examples_in_files() {
    let s = split();
    let train_file = s.dir.path().join("train.tsv").display().to_string();
    let test_file = s.dir.path().join("test.tsv").display().to_string();
    let from_files = quickstart(&[&format!("data.train={train_file:?}"), &format!("data.test={test_file:?}")]);
    let files = Trainer::new(from_files).unwrap().run_dir(s.dir.path().join("files")).train().unwrap();
    let memory = Trainer::from_examples(quickstart(&[]), s.train.clone(), Some(s.test.clone())).unwrap().train().unwrap();
    assert_eq!(files.outcome.steps, memory.outcome.steps);
    assert_eq!(files.outcome.final_eval, memory.outcome.final_eval, "same examples, same training");
    assert_eq!(files.run_dir.as_deref(), Some(s.dir.path().join("files").as_path()));
    assert!(memory.run_dir.is_none());
    assert!(memory.outcome.final_eval.accuracy > 0.5, "{}", memory.outcome.final_eval.accuracy);

    // The in-memory model's top-1 predictions give the accuracy the run evaluated.
    let correct = s.test.iter().filter(|(label, text)| memory.model.predict(text, 1)[0].0 == *label).count();
    assert_eq!(correct as f64 / s.test.len() as f64, memory.outcome.final_eval.accuracy);

    // And equal the exported bundle's probabilities, read back by the server's loader.
    let bundle = sparseburn::export::export_run(&files.outcome.run_dir, &s.dir.path().join("bundle")).unwrap();
    let served = Predictor::load(&bundle).unwrap();
    assert_eq!(served.labels(), files.model.labels());
    for (_, text) in s.test.iter().take(40) {
        let (a, b) = (files.model.probabilities(text), served.probabilities(text));
        let worst = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max);
        assert!(worst <= 1e-6, "in memory {a:?} vs exported {b:?}");
    }
}

/// Records what it is told.
#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Seen>>);

#[derive(Default)]
struct Seen {
    starts: Vec<(u64, u64, bool)>,
    steps: Vec<u64>,
    logged: Vec<(u64, f32)>,
    evals: Vec<EvalRecord>,
    finished: Vec<Result<u64, String>>,
}

impl Observer for Recorder {
    fn on_start(&mut self, s: &RunStart) {
        self.0.lock().unwrap().starts.push((s.total_steps, s.first_step, s.first_session));
    }
    fn on_step(&mut self, e: &StepEvent) {
        let mut seen = self.0.lock().unwrap();
        seen.steps.push(e.record.step);
        if e.logged {
            seen.logged.push((e.record.step, e.record.loss));
        }
    }
    fn on_eval(&mut self, e: &EvalRecord) {
        self.0.lock().unwrap().evals.push(e.clone());
    }
    fn on_finish(&mut self, result: Result<&RunOutcome, &anyhow::Error>) {
        self.0.lock().unwrap().finished.push(result.map(|o| o.steps).map_err(|e| e.to_string()));
    }
}

#[test]
fn observers_see_what_the_run_writes_to_its_metrics_file() {
    let dir = tempfile::tempdir().unwrap();
    let recorder = Recorder::default();
    let trained = Trainer::new(quickstart(&["logging.scalar_every=5"])).unwrap().run_dir(dir.path()).observe(recorder.clone()).train().unwrap();
    let seen = recorder.0.lock().unwrap();
    let steps = trained.outcome.steps;
    assert_eq!(seen.starts, vec![(steps, 0, true)]);
    assert_eq!(seen.steps, (1..=steps).collect::<Vec<_>>(), "one event per step, in order");
    assert_eq!(seen.finished, vec![Ok(steps)]);
    // metrics.jsonl, read back as typed records, holds what the observer saw.
    let records = run_dir::read_metrics(dir.path()).unwrap();
    let evals: Vec<EvalRecord> = records.iter().filter_map(|r| if let MetricsRecord::Eval(e) = r { Some(e.clone()) } else { None }).collect();
    let logged: Vec<(u64, f32)> = records.iter().filter_map(|r| if let MetricsRecord::Train(t) = r { Some((t.step, t.loss)) } else { None }).collect();
    // serde_json parses floats to within an ulp (without its float_roundtrip feature).
    let close = |a: f64, b: f64| (a - b).abs() <= 1e-12 * a.abs().max(1.0);
    assert_eq!(seen.evals.len(), evals.len());
    for (a, b) in seen.evals.iter().zip(&evals) {
        assert_eq!((a.step, a.epoch, a.k), (b.step, b.epoch, b.k));
        assert!(close(a.loss, b.loss) && close(a.accuracy, b.accuracy) && close(a.top_k_accuracy, b.top_k_accuracy) && close(a.train_seconds, b.train_seconds), "{a:?} vs {b:?}");
    }
    assert_eq!(evals.len(), 4, "one evaluation per epoch");
    assert_eq!(seen.logged, logged);
    assert!(logged.iter().all(|(s, _)| s % 5 == 0) && !logged.is_empty());
    // summary.json reads back as the outcome.
    let summary = run_dir::read_summary(dir.path()).unwrap();
    assert_eq!((summary.steps, summary.final_eval), (steps, trained.outcome.final_eval.clone()));
}

/// Hands step 7 to another thread and waits until that thread has cancelled the run.
struct CancelAtSeven {
    to_canceller: mpsc::Sender<u64>,
    cancelled: mpsc::Receiver<()>,
}
impl Observer for CancelAtSeven {
    fn on_step(&mut self, e: &StepEvent) {
        if e.record.step == 7 {
            self.to_canceller.send(7).unwrap();
            self.cancelled.recv().unwrap();
        }
    }
}

#[test]
fn a_cancel_token_stops_a_run_from_another_thread_and_the_next_run_is_unaffected() {
    let dir = tempfile::tempdir().unwrap();
    let ((to_canceller, steps), (done, cancelled)) = (mpsc::channel(), mpsc::channel());
    let trainer = Trainer::new(quickstart(&["train.epochs=500"])).unwrap().run_dir(dir.path().join("a")).observe(CancelAtSeven { to_canceller, cancelled });
    let token = trainer.cancel_token();
    let canceller = std::thread::spawn(move || {
        let at = steps.recv().unwrap();
        token.cancel();
        done.send(()).unwrap();
        at
    });
    let stopped = trainer.train().unwrap();
    assert_eq!(canceller.join().unwrap(), 7);
    assert!(stopped.outcome.interrupted);
    // The loop checks the token after each step: cancelled during step 7, it stops there.
    assert_eq!(stopped.outcome.steps, 7);
    let summary = run_dir::read_summary(&dir.path().join("a")).unwrap();
    assert!(summary.interrupted && summary.steps == 7);

    // A fresh trainer has a fresh token: it trains to the end.
    let next = Trainer::new(quickstart(&["train.epochs=1"])).unwrap().run_dir(dir.path().join("b")).train().unwrap();
    assert!(!next.outcome.interrupted);
    assert_eq!(next.outcome.steps, 15);
}

#[test]
fn bad_configs_and_examples_are_refused_before_training() {
    let e = format!("{:#}", Trainer::new(quickstart(&[]).tap(|c| c.train.batch_size = 0)).err().unwrap());
    assert!(e.contains("train.batch_size") && e.contains("at least 1"), "{e}");
    let e = format!("{:#}", Trainer::new(quickstart(&[]).tap(|c| c.data.train = "no/such.tsv".into())).err().unwrap());
    assert!(e.contains("data.train") && e.contains("no/such.tsv"), "{e}");
    // In memory, the data files are not needed, but the rest is checked.
    let examples = [("a", "one two"), ("b", "three four")];
    assert!(Trainer::from_examples(quickstart(&[]).tap(|c| c.data.train = "no/such.tsv".into()), examples, None::<Vec<(&str, &str)>>).is_ok());
    let e = format!("{:#}", Trainer::from_examples(quickstart(&[]).tap(|c| c.model.dim = 0), examples, None::<Vec<(&str, &str)>>).err().unwrap());
    assert!(e.contains("model.dim"), "{e}");
    // A label that labels.txt could not hold names its example.
    let bad = [("a", "fine"), ("b\tc", "tab in the label")];
    let e = format!("{:#}", Trainer::from_examples(quickstart(&[]), bad, None::<Vec<(&str, &str)>>).unwrap().train().err().unwrap());
    assert!(e.contains("example 2") && e.contains("b\\tc"), "{e}");
}

trait Tap: Sized {
    fn tap(mut self, f: impl FnOnce(&mut Self)) -> Self {
        f(&mut self);
        self
    }
}
impl Tap for Config {}
