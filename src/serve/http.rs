//! TF Serving-compatible REST server (axum on tokio).
//!
//! - `POST /v1/models/<name>:predict` (also `…/versions/<v>:predict`) with
//!   `{"instances": ["text", …]}` or `{"instances": [{"text": …}, …]}` (and an
//!   optional `"top_k"`) → `{"predictions": [{"labels": […], "scores": […]}, …]}`,
//!   or TF Serving's columnar `{"inputs": ["text", …]}` (or `{"inputs": {"text": […]}}`)
//!   → `{"outputs": {"labels": [[…], …], "scores": [[…], …]}}`; both at once → 400;
//! - `GET /v1/models/<name>` (and `…/versions/<v>`) → `{"model_version_status": […]}`;
//! - `GET /v1/models/<name>/metadata` → the bundle's manifest;
//! - `GET /health` → 200 once a version is loaded, 503 before;
//! - `GET /metrics` → Prometheus text.
//!
//! Bounds: a body larger than `max_body_bytes` → 413; more than `max_instances`
//! instances → 413; more than `max_concurrency` predict requests at once → 429
//! at once (no queue; the body is then read away, within the body limit and
//! timeout, so a client still sending gets the 429 rather than a broken pipe);
//! a request not answered within `request_timeout` → 408.
//! A connection that does not deliver a request's headers within
//! `header_read_timeout` (a slow or stalled client, or an idle keep-alive
//! connection) is closed: it never reaches a handler nor holds a permit.
//! A predict request whose body trickles in does hold its permit (admission
//! comes before the body, so memory for bodies stays bounded by
//! `max_concurrency × max_body_bytes`), but only until `body_timeout` (or
//! `request_timeout`, if shorter) answers it 408.
//! Malformed JSON or a wrong shape → 400, an unknown model or version → 404;
//! every error body is `{"error": "…"}`.
//!
//! Predictions run inline on the async worker for small batches (a text takes
//! microseconds, less than a hand-off to another thread) and on tokio's
//! blocking pool above `inline_max_instances`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequest, Path, Request, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::Router;
use serde::Serialize;
use serde_json::{json, Value};
use tokio::sync::Semaphore;

use super::metrics::{Metrics, ModelGauge};
use super::models::ModelStore;
use super::predictor::{LoadOptions, Prediction};

/// Everything the server can be told.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// `models/<name>`: holds numbered version folders.
    pub model_base: PathBuf,
    /// The `<name>` in URLs (default: the base folder's name).
    pub model_name: Option<String>,
    /// How often the base folder is scanned for a new version.
    pub poll_interval: Duration,
    pub max_body_bytes: usize,
    pub max_instances: usize,
    /// Predict requests handled at once; more are refused with 429.
    pub max_concurrency: usize,
    pub request_timeout: Duration,
    /// An admitted predict request's body must arrive within this long (else
    /// 408): a body that trickles in holds its concurrency permit no longer.
    pub body_timeout: Duration,
    /// A connection must deliver a request's complete headers within this long
    /// of starting to wait for them (else it is closed); this also closes idle
    /// keep-alive connections.
    pub header_read_timeout: Duration,
    /// Labels returned per instance unless the request says `"top_k"` (0 = all).
    pub top_k: usize,
    pub verify_checksums: bool,
    /// Tables up to this size are copied into memory; larger ones are mapped (see [`LoadOptions`]).
    pub copy_table_max_bytes: u64,
    /// Batches up to this size are predicted on the async worker itself.
    pub inline_max_instances: usize,
    /// Tokio worker threads (0 = one per core).
    pub workers: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            model_base: PathBuf::new(),
            model_name: None,
            poll_interval: Duration::from_secs(2),
            max_body_bytes: 4 << 20,
            max_instances: 1024,
            max_concurrency: 64,
            request_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(2),
            header_read_timeout: Duration::from_secs(10),
            top_k: 3,
            verify_checksums: true,
            copy_table_max_bytes: super::predictor::COPY_TABLE_MAX_BYTES,
            inline_max_instances: 64,
            workers: 0,
        }
    }
}

struct App {
    config: ServerConfig,
    store: ModelStore,
    metrics: Metrics,
    permits: Arc<Semaphore>,
}

/// A running server; shuts down gracefully (finishing in-flight requests) on
/// [`Server::shutdown`] or drop.
pub struct Server {
    addr: SocketAddr,
    app: Arc<App>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<anyhow::Result<()>>>,
    poller: Option<(std::sync::mpsc::Sender<()>, std::thread::JoinHandle<()>)>,
}

impl Server {
    /// Loads the highest version under the base folder (if any; `/health` says
    /// 503 until one loads), binds `addr` and serves on a thread of its own.
    /// With `handle_signals`, Ctrl-C and SIGTERM also shut it down.
    pub fn start(config: ServerConfig, addr: &str, handle_signals: bool) -> anyhow::Result<Server> {
        let base = config.model_base.clone();
        if !base.is_dir() {
            bail!("{}: no such folder (give --model-base models/<name>, holding numbered versions)", base.display());
        }
        if config.max_concurrency == 0 || config.max_instances == 0 || config.max_body_bytes == 0 {
            bail!("max concurrency, max instances and max body size must be at least 1");
        }
        if config.request_timeout.is_zero() || config.header_read_timeout.is_zero() || config.body_timeout.is_zero() {
            bail!("the request, body and header read timeouts must be positive");
        }
        let name = match &config.model_name {
            Some(n) => n.clone(),
            None => std::fs::canonicalize(&base)
                .ok()
                .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
                .context("cannot name the model after its base folder: pass --model-name")?,
        };
        let store = ModelStore::new(base.clone(), name, LoadOptions { verify_checksums: config.verify_checksums, copy_table_max_bytes: config.copy_table_max_bytes });
        let permits = Arc::new(Semaphore::new(config.max_concurrency));
        let app = Arc::new(App { permits, store, metrics: Metrics::default(), config });
        if app.store.poll(&app.metrics).is_none() {
            log::warn!("no loadable version under {} yet: waiting for one (/health answers 503 until then)", base.display());
        }

        let listener = std::net::TcpListener::bind(addr).with_context(|| format!("cannot listen on {addr}"))?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;

        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let mut runtime = tokio::runtime::Builder::new_multi_thread();
        if app.config.workers > 0 {
            runtime.worker_threads(app.config.workers);
        }
        let runtime = runtime.enable_all().thread_name("sparseburn-serve").build().context("starting the tokio runtime")?;
        let router = router(app.clone());
        let timeouts = (app.config.header_read_timeout, app.config.request_timeout);
        let thread = std::thread::Builder::new().name("sparseburn-http".into()).spawn(move || {
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener)?;
                serve_connections(listener, router, timeouts, shutdown_signal(stop_rx, handle_signals)).await;
                Ok(())
            })
        })?;

        let (poll_tx, poll_rx) = std::sync::mpsc::channel::<()>();
        let poll_app = app.clone();
        let poller = std::thread::Builder::new().name("sparseburn-poll".into()).spawn(move || loop {
            match poll_rx.recv_timeout(poll_app.config.poll_interval) {
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                    poll_app.store.poll(&poll_app.metrics);
                }
                _ => return,
            }
        })?;
        Ok(Server { addr, app, stop: Some(stop_tx), thread: Some(thread), poller: Some((poll_tx, poller)) })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
    pub fn model_name(&self) -> &str {
        &self.app.store.name
    }
    /// The version served now.
    pub fn version(&self) -> Option<u64> {
        self.app.store.current().map(|c| c.version)
    }
    /// Scans for a new version now instead of waiting for the next poll.
    pub fn poll_now(&self) -> Option<u64> {
        self.app.store.poll(&self.app.metrics)
    }

    /// Blocks until the server stops (a signal, with `handle_signals`).
    pub fn wait(mut self) -> anyhow::Result<()> {
        let result = self.thread.take().map_or(Ok(()), |t| t.join().unwrap_or_else(|_| Err(anyhow::anyhow!("server thread panicked"))));
        self.stop_poller();
        result
    }

    /// Stops accepting, finishes in-flight requests, then returns.
    pub fn shutdown(mut self) -> anyhow::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.wait_inner()
    }

    fn wait_inner(&mut self) -> anyhow::Result<()> {
        let result = self.thread.take().map_or(Ok(()), |t| t.join().unwrap_or_else(|_| Err(anyhow::anyhow!("server thread panicked"))));
        self.stop_poller();
        result
    }

    fn stop_poller(&mut self) {
        if let Some((tx, handle)) = self.poller.take() {
            drop(tx);
            let _ = handle.join();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = self.wait_inner();
    }
}

/// Accepts connections until `shutdown` resolves, then stops accepting and
/// lets open connections finish their current request (idle ones close at
/// once), for at most the longer of the two timeouts plus a second.
///
/// (`axum::serve` cannot set hyper's header read timeout: without one, a
/// client that never finishes its headers holds its connection forever and
/// blocks a graceful shutdown.)
async fn serve_connections(
    listener: tokio::net::TcpListener,
    router: Router,
    (header_read_timeout, request_timeout): (Duration, Duration),
    shutdown: impl std::future::Future<Output = ()>,
) {
    use hyper_util::rt::{TokioIo, TokioTimer};
    use hyper_util::service::TowerToHyperService;

    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new()).header_read_timeout(header_read_timeout);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) if matches!(e.kind(), std::io::ErrorKind::ConnectionAborted | std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::Interrupted) => continue,
                Err(e) => {
                    // E.g. out of file descriptors: wait for some to be freed rather than spin.
                    log::warn!("accepting a connection: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let connection = http.serve_connection(TokioIo::new(stream), TowerToHyperService::new(router.clone()));
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                log::debug!("connection: {e}");
            }
        });
    }
    drop(listener);
    let deadline = header_read_timeout.max(request_timeout) + Duration::from_secs(1);
    let open = graceful.count();
    if tokio::time::timeout(deadline, graceful.shutdown()).await.is_err() {
        log::warn!("{open} connection(s) still open {} ms after shutdown began: closing them", deadline.as_millis());
    }
}

async fn shutdown_signal(stop: tokio::sync::oneshot::Receiver<()>, handle_signals: bool) {
    let stop = async {
        let _ = stop.await;
    };
    if !handle_signals {
        return stop.await;
    }
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = stop => {}
        _ = ctrl_c => log::info!("Ctrl-C: finishing in-flight requests"),
        _ = term => log::info!("SIGTERM: finishing in-flight requests"),
    }
}

fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/v1/models/{*rest}", any(model_endpoint))
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "no such endpoint: see /v1/models/<name>, /health, /metrics") })
        .layer(DefaultBodyLimit::max(app.config.max_body_bytes))
        .layer(middleware::from_fn_with_state(app.clone(), track))
        .with_state(app)
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, axum::Json(json!({ "error": message.into() }))).into_response()
}

fn json_response(status: StatusCode, body: &impl Serialize) -> Response {
    match serde_json::to_vec(body) {
        Ok(bytes) => (status, [(header::CONTENT_TYPE, "application/json")], bytes).into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, format!("cannot encode the response: {e}")),
    }
}

/// The endpoint a path belongs to, for metrics (a fixed set: no label explosion).
fn endpoint_of(method: &Method, path: &str) -> &'static str {
    match path {
        "/health" => "health",
        "/metrics" => "metrics",
        p if p.starts_with("/v1/models/") && p.ends_with(":predict") && method == Method::POST => "predict",
        p if p.starts_with("/v1/models/") && p.ends_with("/metadata") => "metadata",
        p if p.starts_with("/v1/models/") => "model_status",
        _ => "other",
    }
}

/// Counts every response and applies the request timeout.
async fn track(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let endpoint = endpoint_of(req.method(), req.uri().path());
    let response = match tokio::time::timeout(app.config.request_timeout, next.run(req)).await {
        Ok(r) => r,
        Err(_) => {
            if endpoint == "predict" {
                app.metrics.record_error("timeout");
            }
            error(StatusCode::REQUEST_TIMEOUT, format!("request not completed within {} ms", app.config.request_timeout.as_millis()))
        }
    };
    app.metrics.record_response(endpoint, response.status().as_u16(), started.elapsed());
    response
}

async fn health(State(app): State<Arc<App>>) -> Response {
    match app.store.current() {
        Some(c) => json_response(StatusCode::OK, &json!({ "status": "ok", "model": app.store.name, "version": c.version })),
        None => json_response(StatusCode::SERVICE_UNAVAILABLE, &json!({ "status": "unavailable", "model": app.store.name, "error": "no model version loaded yet" })),
    }
}

async fn metrics(State(app): State<Arc<App>>) -> Response {
    let current = app.store.current();
    let gauge = ModelGauge {
        name: &app.store.name,
        version: current.as_ref().map(|c| c.version),
        rows: current.as_ref().map_or(0, |c| c.predictor.rows()),
        labels: current.as_ref().map_or(0, |c| c.predictor.labels().len()),
    };
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], app.metrics.render(&gauge)).into_response()
}

/// What a `/v1/models/…` path asks for.
#[derive(Debug, PartialEq)]
struct Target<'a> {
    name: &'a str,
    version: Option<u64>,
    action: Action<'a>,
}

#[derive(Debug, PartialEq)]
enum Action<'a> {
    Status,
    Metadata,
    /// `:verb`
    Verb(&'a str),
}

/// `name`, `name/versions/3`, `name/metadata`, `name/versions/3/metadata`, each optionally `:verb`.
fn parse_target(rest: &str) -> Option<Target<'_>> {
    let (path, verb) = match rest.rsplit_once(':') {
        Some((p, v)) if !v.contains('/') => (p, Some(v)),
        _ => (rest, None),
    };
    let parts: Vec<&str> = path.split('/').collect();
    let (name, version, metadata) = match parts[..] {
        [name] => (name, None, false),
        [name, "metadata"] => (name, None, true),
        [name, "versions", v] => (name, Some(v.parse().ok()?), false),
        [name, "versions", v, "metadata"] => (name, Some(v.parse().ok()?), true),
        _ => return None,
    };
    if name.is_empty() {
        return None;
    }
    let action = match (verb, metadata) {
        (Some(v), false) => Action::Verb(v),
        (None, true) => Action::Metadata,
        (None, false) => Action::Status,
        (Some(_), true) => return None,
    };
    Some(Target { name, version, action })
}

async fn model_endpoint(State(app): State<Arc<App>>, Path(rest): Path<String>, req: Request) -> Response {
    let Some(target) = parse_target(&rest) else {
        return error(StatusCode::NOT_FOUND, format!("no such endpoint: /v1/models/{rest}"));
    };
    if target.name != app.store.name {
        if matches!(target.action, Action::Verb("predict")) && req.method() == Method::POST {
            app.metrics.record_error("unknown_model");
        }
        return error(StatusCode::NOT_FOUND, format!("model {:?} not found (this server serves {:?})", target.name, app.store.name));
    }
    match (target.action, req.method().clone()) {
        (Action::Verb("predict"), Method::POST) => predict(&app, target.version, req).await,
        (Action::Verb("predict"), _) => error(StatusCode::METHOD_NOT_ALLOWED, "use POST for :predict"),
        (Action::Verb(verb), _) => error(StatusCode::NOT_FOUND, format!("method :{verb} is not supported (only :predict)")),
        (Action::Status, Method::GET) => model_status(&app, target.version),
        (Action::Metadata, Method::GET) => model_metadata(&app, target.version),
        _ => error(StatusCode::METHOD_NOT_ALLOWED, "use GET for model status and metadata"),
    }
}

fn model_status(app: &App, version: Option<u64>) -> Response {
    let current = app.store.current();
    let mut statuses = Vec::new();
    if let Some(c) = &current {
        statuses.push((c.version, json!({ "version": c.version.to_string(), "state": "AVAILABLE", "status": { "error_code": "OK", "error_message": "" } })));
    }
    for (v, failure) in app.store.failures() {
        if current.as_ref().is_none_or(|c| c.version != v) {
            statuses.push((v, json!({ "version": v.to_string(), "state": "END", "status": { "error_code": "UNKNOWN", "error_message": failure.error } })));
        }
    }
    statuses.sort_by_key(|s| std::cmp::Reverse(s.0));
    if let Some(v) = version {
        statuses.retain(|s| s.0 == v);
    }
    if statuses.is_empty() {
        let what = version.map_or(String::new(), |v| format!(" version {v}"));
        return error(StatusCode::NOT_FOUND, format!("model {:?}{what} is not loaded", app.store.name));
    }
    json_response(StatusCode::OK, &json!({ "model_version_status": statuses.into_iter().map(|s| s.1).collect::<Vec<_>>() }))
}

fn model_metadata(app: &App, version: Option<u64>) -> Response {
    match app.store.current() {
        Some(c) if version.is_none_or(|v| v == c.version) => json_response(
            StatusCode::OK,
            &json!({ "model_spec": { "name": app.store.name, "version": c.version.to_string() }, "metadata": { "manifest": c.predictor.manifest() } }),
        ),
        _ => error(StatusCode::NOT_FOUND, format!("model {:?} is not loaded at that version", app.store.name)),
    }
}

/// Decrements the in-flight gauge however the request ends (including a timeout dropping it).
struct InFlight<'a>(&'a Metrics);
impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Relaxed);
    }
}

async fn predict(app: &Arc<App>, version: Option<u64>, request: Request) -> Response {
    let metrics = &app.metrics;
    // Admission first, before reading the body: beyond the limit, refuse at once.
    let Ok(permit) = app.permits.clone().try_acquire_owned() else {
        metrics.record_error("overloaded");
        // Keep reading the body away after answering (within the body limit and timeout,
        // keeping none of it): closing on a client still sending would reach it as a broken
        // pipe instead of this 429, and waiting for a trickled body would delay the 429.
        tokio::spawn(drain_body(request.into_body(), app.config.max_body_bytes, app.config.body_timeout));
        return error(StatusCode::TOO_MANY_REQUESTS, format!("too many concurrent requests (limit {}): retry later", app.config.max_concurrency));
    };
    metrics.in_flight.fetch_add(1, Relaxed);
    let _in_flight = InFlight(metrics);

    let Some(loaded) = app.store.current() else {
        metrics.record_error("not_loaded");
        return error(StatusCode::SERVICE_UNAVAILABLE, "no model version is loaded yet");
    };
    // A memory-mapped table whose file changed in place: answer 503 and unload it, never serve from it.
    if let Some(change) = loaded.predictor.table_file_changed() {
        app.store.unload(loaded.version, &format!("its memory-mapped table changed on disk ({change})"));
        metrics.record_error("model_changed");
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("model {:?} version {} changed on disk and was unloaded; retry once a version loads", app.store.name, loaded.version),
        );
    }
    if let Some(v) = version.filter(|&v| v != loaded.version) {
        metrics.record_error("unknown_version");
        return error(StatusCode::NOT_FOUND, format!("version {v} of model {:?} is not loaded (serving version {})", app.store.name, loaded.version));
    }

    // The body, within DefaultBodyLimit (413 beyond it; the layer's limit travels in the request's extensions).
    let body_timeout = app.config.body_timeout;
    let bytes = match tokio::time::timeout(body_timeout, Bytes::from_request(request, &())).await {
        Ok(Ok(b)) => b,
        Err(_) => {
            metrics.record_error("body_timeout");
            return error(StatusCode::REQUEST_TIMEOUT, format!("request body not received within {} ms", body_timeout.as_millis()));
        }
        Ok(Err(rejection)) => {
            let status = rejection.status();
            if status == StatusCode::PAYLOAD_TOO_LARGE {
                metrics.record_error("body_too_large");
                return error(status, format!("request body is larger than the limit of {} bytes", app.config.max_body_bytes));
            }
            metrics.record_error("bad_body");
            return error(status, format!("cannot read the request body: {}", rejection.body_text()));
        }
    };
    let (texts, top_k, columnar) = match parse_request(&bytes, app.config.top_k) {
        Ok(r) => r,
        Err(e) => {
            metrics.record_error("bad_request");
            return error(StatusCode::BAD_REQUEST, e);
        }
    };
    if texts.len() > app.config.max_instances {
        metrics.record_error("too_many_instances");
        return error(StatusCode::PAYLOAD_TOO_LARGE, format!("{} instances is more than the limit of {} per request: split the request", texts.len(), app.config.max_instances));
    }

    let n = texts.len();
    let predictions: Vec<Prediction> = if n <= app.config.inline_max_instances {
        loaded.predictor.predict(&texts, top_k)
    } else {
        let loaded = loaded.clone();
        // The permit moves along: a timed-out request still counts until its work ends.
        match tokio::task::spawn_blocking(move || {
            let _permit = permit;
            loaded.predictor.predict(&texts, top_k)
        })
        .await
        {
            Ok(p) => p,
            Err(e) => {
                metrics.record_error("internal");
                return error(StatusCode::INTERNAL_SERVER_ERROR, format!("prediction failed: {e}"));
            }
        }
    };
    // Checked again after predicting: a file changed (or truncated, which the mapping
    // guard turns into reads of zeros) during the prediction must not reach the client.
    if let Some(change) = loaded.predictor.table_file_changed() {
        app.store.unload(loaded.version, &format!("its memory-mapped table changed on disk during a request ({change})"));
        metrics.record_error("model_changed");
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("model {:?} version {} changed on disk and was unloaded; retry once a version loads", app.store.name, loaded.version),
        );
    }
    metrics.batch_size.observe(n as f64);
    metrics.instances.fetch_add(n as u64, Relaxed);
    if columnar {
        // TF Serving answers the columnar format in kind: each output batched over the inputs.
        // Serialized directly (not through `json!`), so scores print as the same f32 as in the row format.
        #[derive(Serialize)]
        struct Columns<'a> {
            labels: Vec<&'a [String]>,
            scores: Vec<&'a [f32]>,
        }
        #[derive(Serialize)]
        struct ColumnarReply<'a> {
            outputs: Columns<'a>,
        }
        let outputs = Columns { labels: predictions.iter().map(|p| p.labels.as_slice()).collect(), scores: predictions.iter().map(|p| p.scores.as_slice()).collect() };
        return json_response(StatusCode::OK, &ColumnarReply { outputs });
    }
    #[derive(Serialize)]
    struct Reply {
        predictions: Vec<Prediction>,
    }
    json_response(StatusCode::OK, &Reply { predictions })
}

/// Reads and discards a request body: at most `limit` bytes, for at most `timeout`.
async fn drain_body(mut body: axum::body::Body, limit: usize, timeout: Duration) {
    use axum::body::HttpBody;
    let mut seen = 0usize;
    let _ = tokio::time::timeout(timeout, async {
        while let Some(Ok(frame)) = std::future::poll_fn(|cx| std::pin::Pin::new(&mut body).poll_frame(cx)).await {
            seen += frame.data_ref().map_or(0, |d| d.len());
            if seen > limit {
                break;
            }
        }
    })
    .await;
}

/// `{"instances": [...], "top_k": k?}` (TF Serving's row format) or
/// `{"inputs": [...] | {"text": [...]}, "top_k": k?}` (its columnar format) →
/// texts, k, and whether the request was columnar. Messages say what is wrong and where.
fn parse_request(body: &[u8], default_top_k: usize) -> Result<(Vec<String>, usize, bool), String> {
    let value: Value = serde_json::from_slice(body).map_err(|e| format!("malformed JSON: {e}"))?;
    let Value::Object(mut object) = value else {
        return Err(format!("expected a JSON object like {{\"instances\": [\"text\", ...]}}, got {}", kind(&value)));
    };
    let top_k = match object.get("top_k") {
        None | Some(Value::Null) => default_top_k,
        Some(v) => match v.as_u64() {
            Some(k) => usize::try_from(k).unwrap_or(usize::MAX),
            None => return Err(format!("\"top_k\" must be a non-negative integer, got {v}")),
        },
    };
    let (instances, columnar) = match (object.remove("instances"), object.remove("inputs")) {
        (Some(_), Some(_)) => return Err("a request has either \"instances\" (row format) or \"inputs\" (columnar format), not both".into()),
        (Some(Value::Array(a)), None) => (a, false),
        (Some(other), None) => return Err(format!("\"instances\" must be a list, got {}", kind(&other))),
        (None, Some(Value::Array(a))) => (a, true),
        (None, Some(Value::Object(mut named))) => match (named.remove("text"), named.keys().next()) {
            (Some(Value::Array(a)), None) => (a, true),
            (Some(Value::Array(_)), Some(extra)) => return Err(format!("inputs: unknown input {extra:?} (only \"text\")")),
            (Some(other), _) => return Err(format!("inputs.text must be a list, got {}", kind(&other))),
            (None, _) => return Err("inputs: missing \"text\"".into()),
        },
        (None, Some(other)) => return Err(format!("\"inputs\" must be a list or {{\"text\": [...]}}, got {}", kind(&other))),
        (None, None) => return Err("missing \"instances\": send {\"instances\": [\"text\", ...]} or {\"inputs\": [\"text\", ...]}".into()),
    };
    let field = if columnar { "inputs" } else { "instances" };
    let mut texts = Vec::with_capacity(instances.len());
    for (i, instance) in instances.into_iter().enumerate() {
        match instance {
            Value::String(s) => texts.push(s),
            Value::Object(mut o) if !columnar => match (o.remove("text"), o.keys().next()) {
                (Some(Value::String(s)), None) => texts.push(s),
                (Some(Value::String(_)), Some(extra)) => return Err(format!("instances[{i}]: unknown input {extra:?} (only \"text\")")),
                (Some(other), _) => return Err(format!("instances[{i}].text must be a string, got {}", kind(&other))),
                (None, _) => return Err(format!("instances[{i}]: missing \"text\"")),
            },
            other if columnar => return Err(format!("{field}[{i}] must be a string, got {}", kind(&other))),
            other => return Err(format!("instances[{i}] must be a string or {{\"text\": string}}, got {}", kind(&other))),
        }
    }
    Ok((texts, top_k, columnar))
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse_like_tf_serving() {
        let t = |s| parse_target(s);
        assert_eq!(t("sotu"), Some(Target { name: "sotu", version: None, action: Action::Status }));
        assert_eq!(t("sotu:predict"), Some(Target { name: "sotu", version: None, action: Action::Verb("predict") }));
        assert_eq!(t("sotu/versions/3:predict"), Some(Target { name: "sotu", version: Some(3), action: Action::Verb("predict") }));
        assert_eq!(t("sotu/versions/3"), Some(Target { name: "sotu", version: Some(3), action: Action::Status }));
        assert_eq!(t("sotu/metadata"), Some(Target { name: "sotu", version: None, action: Action::Metadata }));
        assert_eq!(t("sotu/versions/x"), None);
        assert_eq!(t("sotu/other"), None);
        assert_eq!(t(":predict"), None);
    }

    #[test]
    fn requests_parse_both_instance_forms_and_reject_bad_shapes() {
        assert_eq!(parse_request(br#"{"instances": ["a", {"text": "b"}]}"#, 3), Ok((vec!["a".into(), "b".into()], 3, false)));
        assert_eq!(parse_request(br#"{"instances": [], "top_k": 1}"#, 3), Ok((vec![], 1, false)));
        assert_eq!(parse_request(br#"{"inputs": ["a", "b"], "top_k": 2}"#, 3), Ok((vec!["a".into(), "b".into()], 2, true)));
        assert_eq!(parse_request(br#"{"inputs": {"text": ["a"]}}"#, 3), Ok((vec!["a".into()], 3, true)));
        for (body, needle) in [
            (&b"{"[..], "malformed JSON"),
            (b"[]", "expected a JSON object"),
            (b"{}", "missing \"instances\""),
            (br#"{"instances": "a"}"#, "must be a list"),
            (br#"{"instances": [1]}"#, "instances[0] must be a string"),
            (br#"{"instances": ["a", {"txt": "b"}]}"#, "instances[1]: missing \"text\""),
            (br#"{"instances": [{"text": 1}]}"#, "instances[0].text must be a string"),
            (br#"{"instances": [{"text": "a", "x": 1}]}"#, "unknown input \"x\""),
            (br#"{"instances": [], "top_k": -1}"#, "top_k"),
            (br#"{"instances": ["a"], "inputs": ["a"]}"#, "not both"),
            (br#"{"inputs": "a"}"#, "\"inputs\" must be a list"),
            (br#"{"inputs": [{"text": "a"}]}"#, "inputs[0] must be a string"),
            (br#"{"inputs": {"txt": ["a"]}}"#, "missing \"text\""),
        ] {
            let err = parse_request(body, 3).unwrap_err();
            assert!(err.contains(needle), "{err:?} should mention {needle:?}");
        }
    }
}
