//! Serving a model bundle (see [`crate::export`]): the resident [`Predictor`],
//! the stdin fast-predict loop (`sparseburn predict`) and the TF
//! Serving-compatible HTTP server (`sparseburn serve`).
//!
//! The model is loaded once and shared: a prediction is featurize → pool →
//! head on buffers sized to the head, with nothing rebuilt per call.

pub mod http;
pub mod mapping_guard;
pub mod metrics;
pub mod models;
pub mod predict_loop;
pub mod predictor;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;

pub use http::{Server, ServerConfig};
pub use predictor::{LoadOptions, Prediction, Predictor};

/// `sparseburn predict --model MODEL_DIR`
#[derive(Debug)]
#[cfg_attr(feature = "cli", derive(clap::Args))]
pub struct PredictArgs {
    /// A model bundle folder (e.g. models/<name>/<version>).
    #[cfg_attr(feature = "cli", arg(long))]
    pub model: PathBuf,
    /// Labels per line of output (0 = all).
    #[cfg_attr(feature = "cli", arg(long, default_value_t = 3))]
    pub top_k: usize,
    /// Check file sizes only, not SHA-256 checksums (faster start for a huge table).
    #[cfg_attr(feature = "cli", arg(long))]
    pub no_verify: bool,
    /// Tables up to this many MiB are read into memory (no later change to the file can
    /// reach them); larger ones are memory-mapped.
    #[cfg_attr(feature = "cli", arg(long, default_value_t = 1024))]
    pub copy_table_max_mib: u64,
    /// Longest input line, in bytes; longer lines are answered with an error.
    #[cfg_attr(feature = "cli", arg(long, default_value_t = 1 << 20))]
    pub max_line_bytes: usize,
}

/// `sparseburn serve --model-base models/<name> --addr 127.0.0.1:8501`
#[derive(Debug)]
#[cfg_attr(feature = "cli", derive(clap::Args))]
pub struct ServeArgs {
    /// Folder of numbered version folders; the highest that loads is served.
    #[cfg_attr(feature = "cli", arg(long))]
    pub model_base: PathBuf,
    #[cfg_attr(feature = "cli", arg(long, default_value = "127.0.0.1:8501"))]
    pub addr: String,
    /// The model's name in URLs (default: the base folder's name).
    #[cfg_attr(feature = "cli", arg(long))]
    pub model_name: Option<String>,
    /// Seconds between scans for a new version.
    #[cfg_attr(feature = "cli", arg(long, default_value_t = 2.0))]
    pub poll_seconds: f64,
    /// Largest request body, in bytes (413 beyond).
    #[cfg_attr(feature = "cli", arg(long, default_value_t = 4 << 20))]
    pub max_body_bytes: usize,
    /// Most instances in one request (413 beyond).
    #[cfg_attr(feature = "cli", arg(long, default_value_t = 1024))]
    pub max_instances: usize,
    /// Predict requests handled at once (429 beyond; no queueing).
    #[cfg_attr(feature = "cli", arg(long, default_value_t = 64))]
    pub max_concurrency: usize,
    /// Milliseconds before a request is answered 408.
    #[cfg_attr(feature = "cli", arg(long, default_value_t = 10_000))]
    pub timeout_ms: u64,
    /// Milliseconds an admitted predict request may take to send its body (408 beyond).
    #[cfg_attr(feature = "cli", arg(long, default_value_t = 2_000))]
    pub body_timeout_ms: u64,
    /// Milliseconds a connection may take to send a request's headers (or stay
    /// idle between requests) before it is closed.
    #[cfg_attr(feature = "cli", arg(long, default_value_t = 10_000))]
    pub header_timeout_ms: u64,
    /// Labels per prediction unless a request sets "top_k" (0 = all).
    #[cfg_attr(feature = "cli", arg(long, default_value_t = 3))]
    pub top_k: usize,
    /// Check file sizes only, not SHA-256 checksums, when loading a version.
    #[cfg_attr(feature = "cli", arg(long))]
    pub no_verify: bool,
    /// Tables up to this many MiB are read into memory (immune to changes of the
    /// file); larger ones are memory-mapped, and unloaded if their file changes.
    #[cfg_attr(feature = "cli", arg(long, default_value_t = 1024))]
    pub copy_table_max_mib: u64,
    /// Tokio worker threads (0 = one per core).
    #[cfg_attr(feature = "cli", arg(long, default_value_t = 0))]
    pub workers: usize,
}

pub fn predict(args: PredictArgs) -> anyhow::Result<()> {
    let predictor = Predictor::load_with(&args.model, &LoadOptions { verify_checksums: !args.no_verify, copy_table_max_bytes: args.copy_table_max_mib.saturating_mul(1 << 20) })?;
    log::info!(
        "loaded {} ({} rows × {}, {} labels) in {:.1} ms; reading lines from stdin",
        args.model.display(),
        predictor.rows(),
        predictor.dim(),
        predictor.labels().len(),
        predictor.load_time().as_secs_f64() * 1e3
    );
    let stdin = std::io::stdin().lock();
    let stdout = std::io::stdout().lock();
    let stats = predict_loop::run(&predictor, args.top_k, args.max_line_bytes, stdin, stdout).context("predict loop")?;
    log::info!("{} lines, {} errors", stats.lines, stats.errors);
    Ok(())
}

pub fn serve(args: ServeArgs) -> anyhow::Result<()> {
    if !(args.poll_seconds.is_finite() && args.poll_seconds > 0.0) {
        anyhow::bail!("--poll-seconds must be positive");
    }
    let config = ServerConfig {
        model_base: args.model_base,
        model_name: args.model_name,
        poll_interval: Duration::from_secs_f64(args.poll_seconds),
        max_body_bytes: args.max_body_bytes,
        max_instances: args.max_instances,
        max_concurrency: args.max_concurrency,
        request_timeout: Duration::from_millis(args.timeout_ms),
        body_timeout: Duration::from_millis(args.body_timeout_ms),
        header_read_timeout: Duration::from_millis(args.header_timeout_ms),
        top_k: args.top_k,
        verify_checksums: !args.no_verify,
        copy_table_max_bytes: args.copy_table_max_mib.saturating_mul(1 << 20),
        workers: args.workers,
        ..ServerConfig::default()
    };
    let server = Server::start(config, &args.addr, true)?;
    log::info!(
        "serving model {:?} (version {}) on http://{}/v1/models/{}:predict",
        server.model_name(),
        server.version().map_or("none yet".to_string(), |v| v.to_string()),
        server.addr(),
        server.model_name()
    );
    server.wait()?;
    log::info!("stopped");
    Ok(())
}
