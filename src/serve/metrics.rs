//! Server metrics in the Prometheus text format, with plain atomics (no registry).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::Duration;

/// A cumulative histogram with fixed upper bounds.
pub struct Histogram {
    bounds: &'static [f64],
    /// Non-cumulative counts per bucket; the last one is `+Inf`.
    counts: Vec<AtomicU64>,
    /// Sum of observations in millionths of the unit (lock-free sum).
    sum_micros: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    pub fn new(bounds: &'static [f64]) -> Self {
        Histogram { bounds, counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(), sum_micros: AtomicU64::new(0), count: AtomicU64::new(0) }
    }

    pub fn observe(&self, value: f64) {
        let i = self.bounds.iter().position(|&b| value <= b).unwrap_or(self.bounds.len());
        self.counts[i].fetch_add(1, Relaxed);
        self.sum_micros.fetch_add((value * 1e6).round().max(0.0) as u64, Relaxed);
        self.count.fetch_add(1, Relaxed);
    }

    pub fn count(&self) -> u64 {
        self.count.load(Relaxed)
    }

    fn render(&self, out: &mut String, name: &str, help: &str, labels: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cumulative = 0;
        for (i, count) in self.counts.iter().enumerate() {
            cumulative += count.load(Relaxed);
            let le = self.bounds.get(i).map_or("+Inf".to_string(), |b| format!("{b}"));
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{le}\"}} {cumulative}");
        }
        let braces = if labels.is_empty() { String::new() } else { format!("{{{labels}}}") };
        let _ = writeln!(out, "{name}_sum{braces} {}", self.sum_micros.load(Relaxed) as f64 / 1e6);
        let _ = writeln!(out, "{name}_count{braces} {cumulative}");
    }
}

/// Request latency buckets, seconds: 50 µs … 10 s.
pub const LATENCY_BOUNDS: &[f64] = &[0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];
/// Instances per predict request.
pub const BATCH_BOUNDS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 4096.0];

/// Everything `/metrics` reports.
pub struct Metrics {
    /// `(endpoint, status code)` → responses.
    requests: Mutex<BTreeMap<(&'static str, u16), u64>>,
    /// Rejected or failed predict requests by reason.
    errors: Mutex<BTreeMap<&'static str, u64>>,
    pub predict_latency: Histogram,
    pub batch_size: Histogram,
    pub instances: AtomicU64,
    pub in_flight: AtomicU64,
    pub loads: AtomicU64,
    pub load_failures: AtomicU64,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            requests: Mutex::default(),
            errors: Mutex::default(),
            predict_latency: Histogram::new(LATENCY_BOUNDS),
            batch_size: Histogram::new(BATCH_BOUNDS),
            instances: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            loads: AtomicU64::new(0),
            load_failures: AtomicU64::new(0),
        }
    }
}

/// The loaded model as `/metrics` shows it.
pub struct ModelGauge<'a> {
    pub name: &'a str,
    pub version: Option<u64>,
    pub rows: usize,
    pub labels: usize,
}

impl Metrics {
    pub fn record_response(&self, endpoint: &'static str, code: u16, elapsed: Duration) {
        *self.requests.lock().unwrap_or_else(|e| e.into_inner()).entry((endpoint, code)).or_insert(0) += 1;
        if endpoint == "predict" {
            self.predict_latency.observe(elapsed.as_secs_f64());
        }
    }

    pub fn record_error(&self, reason: &'static str) {
        *self.errors.lock().unwrap_or_else(|e| e.into_inner()).entry(reason).or_insert(0) += 1;
    }

    pub fn requests(&self, endpoint: &str, code: u16) -> u64 {
        self.requests.lock().unwrap_or_else(|e| e.into_inner()).iter().filter(|((e, c), _)| *e == endpoint && *c == code).map(|(_, n)| n).sum()
    }

    pub fn render(&self, model: &ModelGauge<'_>) -> String {
        let mut out = String::with_capacity(4096);
        out.push_str("# HELP sparseburn_http_requests_total HTTP responses by endpoint and status code.\n# TYPE sparseburn_http_requests_total counter\n");
        for ((endpoint, code), n) in self.requests.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            let _ = writeln!(out, "sparseburn_http_requests_total{{endpoint=\"{endpoint}\",code=\"{code}\"}} {n}");
        }
        out.push_str("# HELP sparseburn_predict_errors_total Predict requests rejected or failed, by reason.\n# TYPE sparseburn_predict_errors_total counter\n");
        for (reason, n) in self.errors.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            let _ = writeln!(out, "sparseburn_predict_errors_total{{reason=\"{reason}\"}} {n}");
        }
        self.predict_latency.render(&mut out, "sparseburn_predict_request_duration_seconds", "Predict request latency (body read, parse, predict, response).", "");
        self.batch_size.render(&mut out, "sparseburn_predict_batch_size", "Instances per successful predict request.", "");
        let gauge = |out: &mut String, name: &str, kind: &str, help: &str, value: String| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}");
        };
        gauge(&mut out, "sparseburn_predict_instances_total", "counter", "Texts predicted.", self.instances.load(Relaxed).to_string());
        gauge(&mut out, "sparseburn_predict_in_flight", "gauge", "Predict requests being handled now.", self.in_flight.load(Relaxed).to_string());
        gauge(&mut out, "sparseburn_model_loads_total", "counter", "Model versions loaded.", self.loads.load(Relaxed).to_string());
        gauge(&mut out, "sparseburn_model_load_failures_total", "counter", "Model versions that failed to load.", self.load_failures.load(Relaxed).to_string());
        let name = model.name.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n");
        let _ = writeln!(
            out,
            "# HELP sparseburn_model_version Version being served (0: none loaded).\n# TYPE sparseburn_model_version gauge\nsparseburn_model_version{{model=\"{name}\"}} {}",
            model.version.unwrap_or(0)
        );
        let _ = writeln!(
            out,
            "# HELP sparseburn_model_table_rows Rows of the served table.\n# TYPE sparseburn_model_table_rows gauge\nsparseburn_model_table_rows{{model=\"{name}\"}} {}",
            model.rows
        );
        let _ = writeln!(
            out,
            "# HELP sparseburn_model_labels Labels of the served model.\n# TYPE sparseburn_model_labels gauge\nsparseburn_model_labels{{model=\"{name}\"}} {}",
            model.labels
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let h = Histogram::new(&[1.0, 10.0]);
        for v in [0.5, 1.0, 5.0, 100.0] {
            h.observe(v);
        }
        let mut out = String::new();
        h.render(&mut out, "x", "help", "");
        assert!(out.contains("x_bucket{le=\"1\"} 2\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"10\"} 3\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"+Inf\"} 4\n"), "{out}");
        assert!(out.contains("x_sum 106.5\n"), "{out}");
        assert!(out.contains("x_count 4\n"), "{out}");
    }
}
