//! Library use of a model bundle: load once, then predict any batch from any
//! thread, and what that buys over loading per call.
//!
//! ```text
//! sparseburn train configs/quickstart.toml
//! sparseburn export runs/quickstart/lazy_adam-1 --out models/sotu/1
//! cargo run --release --example fast_predict -- models/sotu/1 ["some text" ...]
//! cargo run --release --example fast_predict -- models/sotu/1 --http   # also time the HTTP server on loopback
//! ```

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sparseburn::serve::{LoadOptions, Predictor, Server, ServerConfig};

fn main() -> anyhow::Result<()> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let http = args.iter().any(|a| a == "--http");
    args.retain(|a| a != "--http");
    let Some(dir) = args.first().map(PathBuf::from) else {
        anyhow::bail!("usage: fast_predict MODEL_DIR [--http] [TEXT ...]");
    };
    let mut texts: Vec<String> = args[1..].to_vec();
    if texts.is_empty() {
        texts = [
            "We must build railroads across the western territories and settle the public lands.",
            "The struggle against communism demands strength abroad and the interstate highways at home.",
            "The internet and the global economy create new jobs for American workers.",
        ]
        .map(String::from)
        .to_vec();
    }

    // Load once: the manifest and checksums are verified, the table is memory-mapped.
    let t = Instant::now();
    let predictor = Arc::new(Predictor::load(&dir)?);
    let load = t.elapsed();
    let t = Instant::now();
    let unverified = Predictor::load_with(&dir, &LoadOptions { verify_checksums: false, ..Default::default() })?;
    let load_unverified = t.elapsed();
    drop(unverified);
    println!(
        "loaded {} ({} rows × {}, {} labels, table {}) in {} (without hashing: {})",
        dir.display(),
        predictor.rows(),
        predictor.dim(),
        predictor.labels().len(),
        if predictor.table_is_mapped() { "memory-mapped in place" } else { "copied" },
        fmt(load),
        fmt(load_unverified)
    );

    for (text, p) in texts.iter().zip(predictor.predict(&texts, 3)) {
        let shown: Vec<String> = p.labels.iter().zip(&p.scores).map(|(l, s)| format!("{l} {s:.3}")).collect();
        println!("  {:<60.60} → {}", text, shown.join(", "));
    }

    // Resident latency: one text per call, and a batch of 64 per call.
    let batch: Vec<&str> = texts.iter().map(String::as_str).cycle().take(64).collect();
    let per_text = time_per_call(Duration::from_millis(500), || {
        std::hint::black_box(predictor.predict(&batch[..1], 3));
    });
    let per_batch = time_per_call(Duration::from_millis(500), || {
        std::hint::black_box(predictor.predict(&batch, 3));
    });
    // The mistake this avoids: loading the model for every prediction.
    let per_load = time_per_call(Duration::from_secs(2), || {
        let p = Predictor::load(&dir).expect("load");
        std::hint::black_box(p.predict(&batch[..1], 3));
    });
    let per_load_unverified = time_per_call(Duration::from_secs(1), || {
        let p = Predictor::load_with(&dir, &LoadOptions { verify_checksums: false, ..Default::default() }).expect("load");
        std::hint::black_box(p.predict(&batch[..1], 3));
    });
    println!("resident predict: {} per text, {} per batch of 64 ({} per text)", fmt(per_text), fmt(per_batch), fmt(per_batch / 64));
    println!(
        "load per call:    {} per text with checksums ({:.0}× the resident call), {} without ({:.0}×)",
        fmt(per_load),
        per_load.as_secs_f64() / per_text.as_secs_f64(),
        fmt(per_load_unverified),
        per_load_unverified.as_secs_f64() / per_text.as_secs_f64()
    );

    // From several threads at once: the predictor is Send + Sync, shared by Arc.
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let t = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..threads {
            let (p, batch) = (predictor.clone(), &batch);
            s.spawn(move || {
                for _ in 0..200 {
                    std::hint::black_box(p.predict(&batch[..1], 3));
                }
            });
        }
    });
    println!("{threads} threads × 200 single-text calls: {:.0} predictions/s", (threads * 200) as f64 / t.elapsed().as_secs_f64());

    if http {
        http_latency(&dir, &batch)?;
    }
    Ok(())
}

/// Mean time per call of `f`, run repeatedly for about `budget` after one warm-up call.
fn time_per_call(budget: Duration, mut f: impl FnMut()) -> Duration {
    f();
    let (start, mut calls) = (Instant::now(), 0u32);
    while start.elapsed() < budget || calls < 3 {
        f();
        calls += 1;
    }
    start.elapsed() / calls
}

fn fmt(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s < 1e-3 {
        format!("{:.1} µs", s * 1e6)
    } else if s < 1.0 {
        format!("{:.2} ms", s * 1e3)
    } else {
        format!("{s:.2} s")
    }
}

/// p50/p99 and requests/s of single-text predict requests over loopback, at
/// concurrency 1 and 8 (keep-alive clients, one per thread).
fn http_latency(dir: &std::path::Path, batch: &[&str]) -> anyhow::Result<()> {
    // Serve the bundle's parent folder under its name (the bundle folder must be a numbered version).
    let base = dir.parent().ok_or_else(|| anyhow::anyhow!("MODEL_DIR must be <base>/<version> for --http"))?;
    // Predicting inline on the async worker (the default up to 64 instances) vs handing every request to the blocking pool.
    for inline_max_instances in [64, 0] {
        let config = ServerConfig { model_base: base.to_path_buf(), inline_max_instances, ..ServerConfig::default() };
        let server = Server::start(config, "127.0.0.1:0", false)?;
        println!("HTTP on loopback, version {:?}, {}:", server.version(), if inline_max_instances > 0 { "predict inline" } else { "predict on the blocking pool" });
        http_round(&server, batch);
        server.shutdown()?;
    }
    Ok(())
}

fn http_round(server: &Server, batch: &[&str]) {
    let url = format!("http://{}/v1/models/{}:predict", server.addr(), server.model_name());
    for (concurrency, instances) in [(1, 1), (8, 1), (1, 64), (8, 64)] {
        let body = serde_json::json!({ "instances": &batch[..instances] }).to_string();
        let per_thread = 2000 / concurrency.max(1) / instances.min(8);
        let t = Instant::now();
        let mut latencies: Vec<Duration> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..concurrency)
                .map(|_| {
                    let (url, body) = (&url, &body);
                    s.spawn(move || {
                        let client = reqwest::blocking::Client::new();
                        let mut out = Vec::with_capacity(per_thread);
                        for i in 0..per_thread + 20 {
                            let t = Instant::now();
                            let r = client.post(url).body(body.clone()).send().expect("request");
                            assert!(r.status().is_success(), "{}", r.status());
                            let _ = r.bytes();
                            if i >= 20 {
                                out.push(t.elapsed()); // the first 20 warm up
                            }
                        }
                        out
                    })
                })
                .collect();
            handles.into_iter().flat_map(|h| h.join().unwrap()).collect()
        });
        let elapsed = t.elapsed();
        latencies.sort();
        let q = |f: f64| latencies[((latencies.len() - 1) as f64 * f) as usize];
        println!(
            "  concurrency {concurrency}, {instances:>2} instance(s)/request: p50 {}, p99 {}, {:.0} requests/s",
            fmt(q(0.5)),
            fmt(q(0.99)),
            ((per_thread + 20) * concurrency) as f64 / elapsed.as_secs_f64()
        );
    }
}
