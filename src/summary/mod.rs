//! TensorBoard output for one training run: scalars, histograms, text, the
//! model graph and hparams in one event file, plus projector files.
//!
//! All events of a run go through ONE tensorboard-rs `FileWriter`: its file is
//! named `events.out.tfevents.<secs>.<host>.<pid>.0` and created with
//! truncation, so two writers on one folder within a second would clobber each other.

mod graph;
mod hparams;
mod observer;
mod projector;

pub use graph::{build_graph, encode_graph, GraphSpec};
pub use hparams::HParamValue;
pub use observer::TensorBoardObserver;
pub use projector::write_projector;

use anyhow::{bail, Context};
use protobuf::RepeatedField;
use std::collections::BTreeSet;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tensorboard_proto::api::Status;
use tensorboard_proto::event::Event;
use tensorboard_proto::plugin_text::TextPluginData;
use tensorboard_proto::summary::{HistogramProto, Summary, SummaryMetadata, SummaryMetadata_PluginData, Summary_Value};
use tensorboard_proto::tensor::TensorProto;
use tensorboard_proto::tensor_shape::TensorShapeProto;
use tensorboard_proto::types::DataType;
use tensorboard_rs::summary_writer::FileWriter;

/// Linear buckets between min and max, as TF2's `tf.summary.histogram` does.
const HISTOGRAM_BUCKETS: usize = 30;

/// Run folders that have a live `RunSummary` in this process.
static OPEN_DIRS: Mutex<BTreeSet<PathBuf>> = Mutex::new(BTreeSet::new());

/// The TensorBoard event file of one run.
///
/// Writing never panics and never fails the caller: tensorboard-rs panics on
/// I/O errors (on its writer thread, then on the next send), so after the first
/// such error this logs once and drops all further summaries of the run.
pub struct RunSummary {
    dir: PathBuf,
    /// The HParams session group: the run's path under the log dir.
    group: String,
    writer: Option<FileWriter>,
    /// hparams were written, so closing must record the session's end.
    session_started: bool,
}

impl RunSummary {
    /// Opens the event file for `run_dir`, creating the folder if needed.
    /// Fails if the folder is not writable or already has a live `RunSummary`.
    ///
    /// `log_dir` is the folder TensorBoard is pointed at (`logging.dir`): the
    /// run's path under it (`experiment/arm/seed-1`) names its HParams
    /// session group, so every run is its own row, A/B arms and seeds never
    /// merge, and equal folder names in different experiments never collide.
    pub fn create(run_dir: &Path, log_dir: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(run_dir).with_context(|| format!("creating {}", run_dir.display()))?;
        let dir = run_dir.canonicalize().with_context(|| format!("resolving {}", run_dir.display()))?;
        // tensorboard-rs creates the file on its own thread and panics there if
        // it cannot, so find out here instead.
        tempfile::NamedTempFile::new_in(&dir).with_context(|| format!("{} is not writable", dir.display()))?;
        if !open_dirs().insert(dir.clone()) {
            bail!("{} already has a RunSummary; a run must use exactly one", dir.display());
        }
        wait_for_unused_file_name(&dir);
        let group = group_name(&dir, log_dir);
        match catch_unwind(|| FileWriter::new(&dir)) {
            Ok(writer) => Ok(RunSummary { dir, group, writer: Some(writer), session_started: false }),
            Err(_) => {
                open_dirs().remove(&dir);
                bail!("could not open a TensorBoard event file in {}", dir.display())
            }
        }
    }

    /// The run folder (canonical path).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The HParams session group this run writes.
    pub fn group(&self) -> &str {
        &self.group
    }

    pub fn scalar(&mut self, tag: &str, value: f32, step: u64) {
        self.write(tensorboard_rs::summary::scalar(tag, value), step);
    }

    /// Histogram of the finite values (NaN and ±inf cannot be binned); nothing if there are none.
    pub fn histogram(&mut self, tag: &str, values: &[f32], step: u64) {
        if let Some(histo) = histogram_proto(values) {
            let mut value = Summary_Value::new();
            value.set_tag(tag.to_string());
            value.set_histo(histo);
            self.write(one_value(value), step);
        }
    }

    /// Markdown for the Text dashboard.
    pub fn text(&mut self, tag: &str, markdown: &str, step: u64) {
        let mut plugin = SummaryMetadata_PluginData::new();
        plugin.set_plugin_name("text".to_string());
        plugin.set_content(protobuf::Message::write_to_bytes(&TextPluginData::new()).unwrap_or_default());
        let mut metadata = SummaryMetadata::new();
        metadata.set_plugin_data(plugin);
        // A scalar (no dims) string tensor, as tf.summary.text writes it.
        let mut tensor = TensorProto::new();
        tensor.set_dtype(DataType::DT_STRING);
        tensor.set_tensor_shape(TensorShapeProto::new());
        tensor.set_string_val(RepeatedField::from_vec(vec![markdown.as_bytes().to_vec()]));
        let mut value = Summary_Value::new();
        value.set_tag(tag.to_string());
        value.set_metadata(metadata);
        value.set_tensor(tensor);
        self.write(one_value(value), step);
    }

    /// The model graph, once per run. Written as a plain graph event at step 0
    /// (no "profiler" RunMetadata, unlike tensorboard-rs's `add_graph`).
    pub fn graph(&mut self, spec: &GraphSpec) {
        for problem in spec.inconsistencies() {
            log::warn!("TensorBoard graph: {problem}");
        }
        let mut event = Event::new();
        event.set_graph_def(encode_graph(&build_graph(spec)));
        self.with_writer(|w| w.add_event(&event, 0));
    }

    /// This run's hyperparameters, and the experiment listing them and the
    /// metrics (scalar tags, e.g. "eval/accuracy") for the HParams table.
    pub fn hparams(&mut self, hparams: &[(String, HParamValue)], metric_tags: &[&str]) {
        let now = now_secs();
        // Its own group, so every run gets a row even when two share all values (A/B repeats).
        let session = hparams::session_start(hparams, &self.group, now);
        self.write(hparams::experiment(hparams, metric_tags, now), 0);
        self.write(session, 0);
        self.session_started = true;
    }

    /// Asks the writer thread to flush. It does not wait: data is complete on
    /// disk only after `close` (or drop).
    pub fn flush(&mut self) {
        self.with_writer(|w| w.flush());
    }

    /// Records a successful end (if hparams were written) and waits until everything is on disk.
    pub fn close(mut self) {
        self.finish(Status::STATUS_SUCCESS);
    }

    fn finish(&mut self, status: Status) {
        if self.session_started {
            self.session_started = false;
            self.write(hparams::session_end(status, now_secs()), 0);
        }
        if let Some(writer) = self.writer.take() {
            // Dropping joins the writer thread; it panics if that thread died.
            if catch_unwind(AssertUnwindSafe(|| drop(writer))).is_err() {
                log::error!("TensorBoard: the event file in {} may be incomplete", self.dir.display());
            }
        }
        open_dirs().remove(&self.dir);
    }

    fn write(&mut self, summary: Summary, step: u64) {
        self.with_writer(|w| w.add_summary(summary, step as usize));
    }

    fn with_writer(&mut self, f: impl FnOnce(&mut FileWriter)) {
        let Some(writer) = self.writer.as_mut() else {
            return;
        };
        if catch_unwind(AssertUnwindSafe(|| f(writer))).is_err() {
            log::error!("TensorBoard: writing to {} failed; no more summaries for this run", self.dir.display());
            // Its thread is gone; dropping it would panic again.
            std::mem::forget(self.writer.take());
        }
    }
}

impl Drop for RunSummary {
    /// Without `close` the run did not finish normally: recorded as a failure.
    fn drop(&mut self) {
        self.finish(Status::STATUS_FAILURE);
    }
}

/// `run_dir` (canonical) relative to `log_dir`, with `/` separators, as
/// TensorBoard names the run; the whole path when it is not under `log_dir`.
fn group_name(run_dir: &Path, log_dir: &Path) -> String {
    let relative = log_dir.canonicalize().ok().and_then(|log| run_dir.strip_prefix(log).ok().map(Path::to_path_buf)).filter(|r| !r.as_os_str().is_empty());
    match relative {
        Some(r) => r.components().map(|c| c.as_os_str().to_string_lossy()).collect::<Vec<_>>().join("/"),
        None => run_dir.to_string_lossy().into_owned(),
    }
}

fn open_dirs() -> std::sync::MutexGuard<'static, BTreeSet<PathBuf>> {
    OPEN_DIRS.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn now_secs() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

/// If this process already made an event file in `dir` during this second
/// (a run reopened right after closing), wait for the next second: the new
/// file would get the same name and truncate it.
fn wait_for_unused_file_name(dir: &Path) {
    let suffix = format!(".{}.0", std::process::id());
    loop {
        let secs = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let prefix = format!("events.out.tfevents.{secs:010}.");
        let taken = std::fs::read_dir(dir).into_iter().flatten().flatten().any(|entry| {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            name.starts_with(&prefix) && name.ends_with(&suffix)
        });
        if !taken {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn one_value(value: Summary_Value) -> Summary {
    let mut summary = Summary::new();
    summary.mut_value().push(value);
    summary
}

/// min/max/num/sum/sum_squares and linear buckets of the finite `values`.
/// `bucket_limit[i]` is bucket i's right edge; the last one is `max`.
fn histogram_proto(values: &[f32]) -> Option<HistogramProto> {
    let finite = || values.iter().filter(|v| v.is_finite()).map(|&v| v as f64);
    let (mut min, mut max, mut num, mut sum, mut sum_squares) = (f64::INFINITY, f64::NEG_INFINITY, 0.0, 0.0, 0.0);
    for v in finite() {
        min = min.min(v);
        max = max.max(v);
        num += 1.0;
        sum += v;
        sum_squares += v * v;
    }
    if num == 0.0 {
        return None;
    }
    let (limits, counts) = if min == max {
        (vec![max], vec![num])
    } else {
        let width = (max - min) / HISTOGRAM_BUCKETS as f64;
        let mut limits: Vec<f64> = (1..HISTOGRAM_BUCKETS).map(|i| min + width * i as f64).collect();
        limits.push(max);
        // Bucket i holds [limits[i-1], limits[i]); max itself goes into the last one.
        let mut counts = vec![0.0; HISTOGRAM_BUCKETS];
        for v in finite() {
            counts[limits.partition_point(|&l| l <= v).min(HISTOGRAM_BUCKETS - 1)] += 1.0;
        }
        (limits, counts)
    };
    let mut histo = HistogramProto::new();
    histo.set_min(min);
    histo.set_max(max);
    histo.set_num(num);
    histo.set_sum(sum);
    histo.set_sum_squares(sum_squares);
    histo.set_bucket_limit(limits);
    histo.set_bucket(counts);
    Some(histo)
}
