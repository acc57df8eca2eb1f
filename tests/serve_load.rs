//! The HTTP server under load, slow clients and SIGTERM (issue 9), all on
//! 127.0.0.1 and bounded in count and time:
//!
//! - 64 clients against `max_concurrency = 4`: the excess is refused 429 at
//!   once, every admitted request succeeds, admitted throughput never drops to
//!   zero, `/health` answers throughout, and the p99 latency of admitted
//!   requests stays bounded (p50/p99 and the 429 count are printed);
//! - 50 connections that never finish their headers are closed by the header
//!   read timeout and hold nothing: normal requests meanwhile succeed quickly;
//!   50 that trickle a body hold at most `max_concurrency` permits, only until
//!   the request timeout answers them 408 (others get a quick 429 meanwhile);
//! - SIGTERM to `sparseburn serve` lets an in-flight request finish with 200,
//!   refuses new connections, and exits 0 even with a stalled client attached.

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sparseburn::serve::{Server, ServerConfig};

mod common;
use common::{export_tiny_model, read_response};

// ---------------------------------------------------------------- fixture

/// Texts of the bundled data set.
fn texts() -> Vec<String> {
    let data = std::fs::read_to_string("examples/data/sotu_era_600.tsv").unwrap();
    data.lines().filter_map(|l| l.split_once('\t')).map(|(_, t)| t.chars().take(400).collect()).collect()
}

fn server_config(base: &Path) -> ServerConfig {
    ServerConfig { model_base: base.to_path_buf(), poll_interval: Duration::from_secs(3600), ..ServerConfig::default() }
}

// ---------------------------------------------------------------- a raw HTTP/1.1 client

fn connect(addr: SocketAddr) -> BufReader<TcpStream> {
    let stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    stream.set_nodelay(true).unwrap();
    BufReader::new(stream)
}

fn predict_request(body: &str) -> Vec<u8> {
    format!("POST /v1/models/m:predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}", body.len()).into_bytes()
}

const HEALTH: &[u8] = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n";

/// A keep-alive client that reopens its connection when the server closes it.
struct Client {
    addr: SocketAddr,
    conn: Option<BufReader<TcpStream>>,
}

impl Client {
    fn new(addr: SocketAddr) -> Self {
        Client { addr, conn: None }
    }

    /// One request → (status, body, latency). Panics if no response comes back.
    fn send(&mut self, request: &[u8]) -> (u16, Vec<u8>, Duration) {
        for attempt in 0..2 {
            let fresh = self.conn.is_none();
            let conn = self.conn.get_or_insert_with(|| connect(self.addr));
            let started = Instant::now();
            let result = conn.get_mut().write_all(request).and_then(|_| read_response(conn, false));
            match result {
                Ok(Some(r)) => {
                    if r.closes() {
                        self.conn = None;
                    }
                    return (r.status, r.body, started.elapsed());
                }
                // A keep-alive connection the server had just closed: retry once on a new one.
                Ok(None) | Err(_) if !fresh && attempt == 0 => self.conn = None,
                other => panic!("no response from the server: {:?}", other.map(|r| r.map(|r| r.status))),
            }
        }
        unreachable!()
    }

    fn metric(&mut self, prefix: &str) -> f64 {
        let (_, body, _) = self.send(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
        String::from_utf8(body).unwrap().lines().find_map(|l| l.strip_prefix(prefix).map(|v| v.trim().parse().unwrap())).unwrap_or(0.0)
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// Polls `/health` on its own connection until `stop`; returns every (status, latency).
fn probe_health(addr: SocketAddr, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<Vec<(u16, Duration)>> {
    std::thread::spawn(move || {
        let mut client = Client::new(addr);
        let mut seen = Vec::new();
        while !stop.load(Ordering::SeqCst) {
            let (status, _, took) = client.send(HEALTH);
            seen.push((status, took));
            std::thread::sleep(Duration::from_millis(20));
        }
        seen
    })
}

// ---------------------------------------------------------------- overload

#[test]
fn overload_is_refused_with_429_not_a_collapse_and_admitted_latency_stays_bounded() {
    const CLIENTS: usize = 64;
    const MAX_CONCURRENCY: usize = 4;
    // Bounded both ways: each client stops after this long or this many requests.
    const RUN_FOR: Duration = Duration::from_secs(2);
    const MAX_REQUESTS_PER_CLIENT: usize = 500;
    // A client told 429 waits this long before its next request (still far more than the limit admits).
    const BACKOFF: Duration = Duration::from_millis(5);
    let tmp = tempfile::tempdir().unwrap();
    let base = export_tiny_model(tmp.path());
    // Batches above 8 texts run on the blocking pool, so admitted requests overlap and the limit bites.
    let config = ServerConfig { max_concurrency: MAX_CONCURRENCY, inline_max_instances: 8, ..server_config(&base) };
    let server = Server::start(config, "127.0.0.1:0", false).unwrap();
    let addr = server.addr();
    assert!(addr.ip().is_loopback());
    let texts = texts();

    let stop = Arc::new(AtomicBool::new(false));
    let health = probe_health(addr, stop.clone());
    let started = Instant::now();
    let deadline = started + RUN_FOR;
    // (status, completion time since start, latency) of every request.
    let samples: Vec<(u16, Duration, Duration)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..CLIENTS)
            .map(|c| {
                let texts = &texts;
                s.spawn(move || {
                    let mut client = Client::new(addr);
                    let mut out = Vec::new();
                    for i in 0..MAX_REQUESTS_PER_CLIENT {
                        if Instant::now() > deadline {
                            break;
                        }
                        let n = 9 + (c + i) % 24; // 9..=32 texts of up to 400 characters
                        let start = (c * 31 + i * 7) % (texts.len() - n);
                        let body = json!({ "instances": &texts[start..start + n] }).to_string();
                        let (status, reply, latency) = client.send(&predict_request(&body));
                        if status == 200 {
                            let reply: Value = serde_json::from_slice(&reply).unwrap();
                            assert_eq!(reply["predictions"].as_array().map(Vec::len), Some(n));
                        }
                        out.push((status, started.elapsed(), latency));
                        if status == 429 {
                            std::thread::sleep(BACKOFF);
                        }
                    }
                    out
                })
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().unwrap()).collect()
    });
    let elapsed = started.elapsed();
    // And right after the storm.
    let mut client = Client::new(addr);
    assert_eq!(client.send(HEALTH).0, 200);
    stop.store(true, Ordering::SeqCst);
    let health = health.join().unwrap();

    let refused = samples.iter().filter(|s| s.0 == 429).count();
    let mut admitted: Vec<&(u16, Duration, Duration)> = samples.iter().filter(|s| s.0 == 200).collect();
    let others: Vec<u16> = samples.iter().map(|s| s.0).filter(|s| *s != 200 && *s != 429).collect();
    let mut latencies: Vec<Duration> = admitted.iter().map(|s| s.2).collect();
    latencies.sort();
    let (p50, p99, max) = (percentile(&latencies, 0.5), percentile(&latencies, 0.99), *latencies.last().unwrap());
    let mut health_latencies: Vec<Duration> = health.iter().map(|h| h.1).collect();
    health_latencies.sort();
    // Admitted completions per 200 ms window, from the first request to the last completion.
    admitted.sort_by_key(|s| s.1);
    let window = Duration::from_millis(200);
    let windows = (elapsed.as_nanos() / window.as_nanos()) as usize;
    let mut per_window = vec![0usize; windows.max(1)];
    let last = per_window.len() - 1;
    for s in &admitted {
        per_window[((s.1.as_nanos() / window.as_nanos()) as usize).min(last)] += 1;
    }
    eprintln!(
        "load: {} requests from {CLIENTS} clients (max_concurrency {MAX_CONCURRENCY}) in {:.2} s: {} admitted (200), {refused} refused (429), {} other; \
         admitted latency p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms; {:.0} admitted/s; admitted per 200 ms window {per_window:?}; \
         /health polled {} times during the load, p50 {:.2} ms, max {:.2} ms",
        samples.len(),
        elapsed.as_secs_f64(),
        admitted.len(),
        others.len(),
        p50.as_secs_f64() * 1e3,
        p99.as_secs_f64() * 1e3,
        max.as_secs_f64() * 1e3,
        admitted.len() as f64 / elapsed.as_secs_f64(),
        health.len(),
        percentile(&health_latencies, 0.5).as_secs_f64() * 1e3,
        health_latencies.last().unwrap().as_secs_f64() * 1e3,
    );

    assert!(elapsed < RUN_FOR + Duration::from_secs(5), "clients were stuck waiting for answers: {elapsed:?}");
    assert!(others.is_empty(), "only 200 or 429 expected, got {others:?}");
    assert!(refused > 0, "{CLIENTS} clients against a limit of {MAX_CONCURRENCY} must get some 429s");
    assert!(admitted.len() >= CLIENTS, "too few admitted: {}", admitted.len());
    assert!(per_window.iter().all(|&n| n > 0), "admitted throughput dropped to zero in some 200 ms window: {per_window:?}");
    assert!(p99 < Duration::from_millis(200), "p99 of admitted requests {p99:?}");
    assert!(health.iter().all(|h| h.0 == 200), "/health failed during the load");
    assert!(*health_latencies.last().unwrap() < Duration::from_secs(1), "/health took {:?}", health_latencies.last());
    // The server's own count agrees, and nothing is left in flight.
    assert_eq!(client.metric("sparseburn_http_requests_total{endpoint=\"predict\",code=\"429\"} ") as usize, refused);
    assert_eq!(client.metric("sparseburn_http_requests_total{endpoint=\"predict\",code=\"200\"} ") as usize, admitted.len());
    assert_eq!(client.metric("sparseburn_predict_in_flight "), 0.0);
    server.shutdown().unwrap();
}

// ---------------------------------------------------------------- slow clients

/// Connections that each send `first`, then one more byte of `rest` every
/// `every`, from one thread, until the server closes them (or `give_up`).
/// Returns, per connection, what the server sent back and when it closed,
/// counted from before the first connect (`None`: still open at `give_up`).
fn trickle(addr: SocketAddr, count: usize, first: &[u8], rest: &[u8], every: Duration, give_up: Duration) -> std::thread::JoinHandle<Vec<(Vec<u8>, Option<Duration>)>> {
    let started = Instant::now();
    let conns: Vec<TcpStream> = (0..count)
        .map(|_| {
            let mut s = TcpStream::connect(addr).unwrap();
            s.write_all(first).unwrap();
            s.set_nonblocking(true).unwrap();
            s
        })
        .collect();
    let rest = rest.to_vec();
    std::thread::spawn(move || {
        let mut state: Vec<(TcpStream, Vec<u8>, Option<Duration>)> = conns.into_iter().map(|s| (s, Vec::new(), None)).collect();
        let mut sent = 0;
        let mut buf = [0u8; 4096];
        while started.elapsed() < give_up && state.iter().any(|s| s.2.is_none()) {
            for (stream, received, closed) in state.iter_mut().filter(|s| s.2.is_none()) {
                loop {
                    match stream.read(&mut buf) {
                        Ok(0) => *closed = Some(started.elapsed()),
                        Ok(n) => {
                            received.extend_from_slice(&buf[..n]);
                            continue;
                        }
                        Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                        Err(_) => *closed = Some(started.elapsed()), // reset
                    }
                    break;
                }
                if closed.is_none() && sent < rest.len() {
                    // The server may close between our read and this write: that is fine.
                    let _ = stream.write_all(&rest[sent..sent + 1]);
                }
            }
            sent += 1;
            std::thread::sleep(every);
        }
        state.into_iter().map(|(_, received, closed)| (received, closed)).collect()
    })
}

#[test]
fn slow_clients_time_out_without_holding_the_server() {
    const SLOW: usize = 50;
    const MAX_CONCURRENCY: usize = 4;
    let tmp = tempfile::tempdir().unwrap();
    let base = export_tiny_model(tmp.path());
    let timeout = Duration::from_millis(1000);
    let config = ServerConfig { max_concurrency: MAX_CONCURRENCY, header_read_timeout: timeout, request_timeout: timeout, ..server_config(&base) };
    let server = Server::start(config, "127.0.0.1:0", false).unwrap();
    let addr = server.addr();
    let body = json!({ "instances": ["the union", "the territories and the railroads"] }).to_string();
    let request = predict_request(&body);
    let mut client = Client::new(addr);

    // 1. Headers that never end (a byte every 100 ms): closed at the header timeout, holding nothing meanwhile.
    let head = b"POST /v1/models/m:predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n";
    let filler = b"X-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    let slow = trickle(addr, SLOW, head, filler, Duration::from_millis(100), Duration::from_secs(10));
    let started = Instant::now();
    let mut latencies = Vec::new();
    while started.elapsed() < timeout * 3 / 4 {
        let (status, _, took) = client.send(&request);
        assert_eq!(status, 200, "a normal request failed while {SLOW} clients stalled their headers");
        latencies.push(took);
        assert_eq!(client.send(HEALTH).0, 200);
    }
    latencies.sort();
    let slow = slow.join().unwrap();
    let closed: Vec<Duration> = slow.iter().filter_map(|s| s.1).collect();
    eprintln!(
        "slow headers: {} normal predicts while {SLOW} connections trickled headers: p50 {:.2} ms, max {:.2} ms; the server closed {}/{SLOW} of them after {:.2}..{:.2} s (header timeout {:.1} s)",
        latencies.len(),
        percentile(&latencies, 0.5).as_secs_f64() * 1e3,
        latencies.last().unwrap().as_secs_f64() * 1e3,
        closed.len(),
        closed.iter().min().unwrap_or(&Duration::ZERO).as_secs_f64(),
        closed.iter().max().unwrap_or(&Duration::ZERO).as_secs_f64(),
        timeout.as_secs_f64()
    );
    assert!(*latencies.last().unwrap() < Duration::from_millis(500), "normal requests were slowed down: {:?}", latencies.last());
    assert_eq!(closed.len(), SLOW, "every stalled connection must be closed by the server");
    for (received, when) in &slow {
        let when = when.unwrap();
        assert!(when >= timeout * 9 / 10 && when < timeout + Duration::from_secs(2), "closed after {when:?}");
        // Closed without an answer, or with a 408: never anything else.
        let text = String::from_utf8_lossy(received);
        assert!(text.is_empty() || text.starts_with("HTTP/1.1 408"), "{text:?}");
    }
    assert_eq!(client.metric("sparseburn_predict_in_flight "), 0.0);

    // 2. A complete head, then a body that trickles in: each of the first MAX_CONCURRENCY holds
    //    a permit until the request timeout answers it 408; the rest get 429 at once.
    let mut head = format!("POST /v1/models/m:predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes();
    head.extend_from_slice(&body.as_bytes()[..5]);
    let slow = trickle(addr, SLOW, &head, &body.as_bytes()[5..body.len() - 1], Duration::from_millis(100), Duration::from_secs(10));
    // Once the server has seen every head: MAX_CONCURRENCY slow ones in flight, the rest refused.
    let waited = Instant::now();
    while client.metric("sparseburn_predict_errors_total{reason=\"overloaded\"} ") < (SLOW - MAX_CONCURRENCY) as f64 {
        assert!(waited.elapsed() < timeout / 2, "the slow bodies were not all seen in time");
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(client.metric("sparseburn_predict_in_flight "), MAX_CONCURRENCY as f64);
    // While the permits are held, other predicts are refused quickly (never left waiting) and /health answers.
    let started = Instant::now();
    let mut during = Vec::new();
    while started.elapsed() < timeout / 2 {
        let (status, _, took) = client.send(&request);
        assert!(status == 429 || status == 200, "{status}");
        assert!(took < Duration::from_millis(500), "a refused request took {took:?}");
        during.push(status);
        assert_eq!(client.send(HEALTH).0, 200);
    }
    let slow = slow.join().unwrap();
    let statuses: Vec<String> = slow.iter().map(|s| String::from_utf8_lossy(&s.0).chars().take(12).collect()).collect();
    let count = |prefix: &str| statuses.iter().filter(|s| s.starts_with(prefix)).count();
    let held: Vec<Duration> = slow.iter().filter(|s| s.0.starts_with(b"HTTP/1.1 408")).filter_map(|s| s.1).collect();
    eprintln!(
        "slow bodies: {SLOW} connections trickled a body: {} answered 408 and closed after {:.2}..{:.2} s (request timeout {:.1} s), {} refused 429 at once; \
         meanwhile {} normal predicts: {} got 429, {} got 200",
        count("HTTP/1.1 408"),
        held.iter().min().unwrap_or(&Duration::ZERO).as_secs_f64(),
        held.iter().max().unwrap_or(&Duration::ZERO).as_secs_f64(),
        timeout.as_secs_f64(),
        count("HTTP/1.1 429"),
        during.len(),
        during.iter().filter(|&&s| s == 429).count(),
        during.iter().filter(|&&s| s == 200).count(),
    );
    assert_eq!((count("HTTP/1.1 408"), count("HTTP/1.1 429")), (MAX_CONCURRENCY, SLOW - MAX_CONCURRENCY), "{statuses:?}");
    assert!(slow.iter().all(|s| s.1.is_some_and(|t| t < timeout + Duration::from_secs(2))), "every slow connection must be answered and closed");
    // Permits are free again.
    let (status, _, took) = client.send(&request);
    assert_eq!(status, 200);
    assert!(took < Duration::from_millis(500), "{took:?}");
    assert_eq!(client.metric("sparseburn_predict_in_flight "), 0.0);
    assert_eq!(client.metric("sparseburn_predict_errors_total{reason=\"timeout\"} "), MAX_CONCURRENCY as f64);
    server.shutdown().unwrap();
}

// ---------------------------------------------------------------- SIGTERM

#[test]
#[cfg(unix)]
fn sigterm_drains_in_flight_requests_then_exits_0() {
    let tmp = tempfile::tempdir().unwrap();
    let base = export_tiny_model(tmp.path());
    let mut child = Command::new(env!("CARGO_BIN_EXE_sparseburn"))
        .args(["serve", "--model-base", base.to_str().unwrap(), "--addr", "127.0.0.1:0", "--poll-seconds", "3600", "--header-timeout-ms", "2000"])
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The log says where it listens; keep reading it so the pipe never fills.
    let log = Arc::new(Mutex::new(String::new()));
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let reader = {
        let (log, stderr) = (log.clone(), child.stderr.take().unwrap());
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(addr) = line.split("on http://").nth(1).and_then(|r| r.split('/').next()) {
                    let _ = addr_tx.send(addr.parse::<SocketAddr>().unwrap());
                }
                log.lock().unwrap().push_str(&line);
                log.lock().unwrap().push('\n');
            }
        })
    };
    let addr = addr_rx.recv_timeout(Duration::from_secs(60)).unwrap_or_else(|_| panic!("the server did not start: {}", log.lock().unwrap()));
    assert!(addr.ip().is_loopback());
    let mut client = Client::new(addr);
    assert_eq!(client.send(HEALTH).0, 200);

    // In flight at the signal: a large batch whose body is still arriving.
    let texts = texts();
    let body = json!({ "instances": &texts[..500] }).to_string();
    let request = predict_request(&body);
    let split = request.len() - 100;
    let mut held = connect(addr);
    held.get_mut().write_all(&request[..split]).unwrap();
    let waited = Instant::now();
    while client.metric("sparseburn_predict_in_flight ") < 1.0 {
        assert!(waited.elapsed() < Duration::from_secs(10), "the held request never got in flight");
        std::thread::sleep(Duration::from_millis(10));
    }
    // Also attached: an idle keep-alive connection (`client`) and one stalled mid-headers.
    let mut stalled = TcpStream::connect(addr).unwrap();
    stalled.write_all(b"GET /health HTTP/1.1\r\nHo").unwrap();

    let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    std::thread::sleep(Duration::from_millis(300));
    assert!(child.try_wait().unwrap().is_none(), "exited with a request in flight: {}", log.lock().unwrap());
    assert!(TcpStream::connect(addr).is_err(), "still accepting connections after SIGTERM");

    held.get_mut().write_all(&request[split..]).unwrap();
    let response = read_response(&mut held, false).unwrap().expect("the in-flight request was dropped");
    assert_eq!(response.status, 200, "{}", String::from_utf8_lossy(&response.body));
    let reply: Value = serde_json::from_slice(&response.body).unwrap();
    assert_eq!(reply["predictions"].as_array().unwrap().len(), 500);

    // Exits 0 once the stalled connection hits the header timeout (2 s), well within 10 s.
    let signalled = Instant::now();
    let exit = loop {
        if let Some(exit) = child.try_wait().unwrap() {
            break exit;
        }
        if signalled.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            panic!("still running 10 s after SIGTERM: {}", log.lock().unwrap());
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    reader.join().unwrap();
    let log = log.lock().unwrap();
    eprintln!("sigterm: exited {exit} {:.2} s after the in-flight request completed", signalled.elapsed().as_secs_f64());
    assert!(exit.success(), "{exit}: {log}");
    assert!(log.contains("SIGTERM: finishing in-flight requests") && log.contains("stopped"), "{log}");
    drop(stalled);
}
