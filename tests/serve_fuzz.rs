//! Property-based fuzzing of the HTTP server (issue 9): over 10,000 random
//! requests — methods, paths (predict paths with odd names and versions,
//! garbage, percent-encoded, unicode, very long), headers (content types,
//! `Expect`, chunked bodies, too many headers) and bodies (random bytes, random
//! JSON, deep nesting, huge numbers, wrong shapes, valid instances of random
//! unicode, empty and oversized batches) — plus raw malformed byte streams
//! (truncated requests, invalid header bytes, bogus `Content-Length`, garbage
//! request lines), all sent over a raw `TcpStream` to one in-process server on
//! 127.0.0.1.
//!
//! A well-formed request must get exactly one 2xx or 4xx response (never a
//! 5xx, never a connection dropped without an answer); a malformed stream may
//! be answered 4xx or just closed, never 5xx, and never left hanging. No
//! server thread may panic, and afterwards the server is healthy and predicts.
//! The seed is fixed: a run is repeatable. Takes ~10-20 s on 2 cores.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::io::{BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, RngAlgorithm, TestCaseError, TestRng, TestRunner};
use serde_json::{json, Value};
use sparseburn::serve::{Server, ServerConfig};

mod common;
use common::{export_tiny_model, read_response, Response};

// ---------------------------------------------------------------- fixture

const MAX_BODY: usize = 64 << 10;
const MAX_INSTANCES: usize = 64;

/// Panics on the server's threads (its runtime's workers and blocking pool are
/// named `sparseburn-serve`, the accept thread `sparseburn-http`).
static SERVER_PANICS: AtomicUsize = AtomicUsize::new(0);
static PANIC_MESSAGES: Mutex<Vec<String>> = Mutex::new(Vec::new());

fn count_server_panics() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let name = std::thread::current().name().unwrap_or("").to_string();
        if name.starts_with("sparseburn") {
            SERVER_PANICS.fetch_add(1, Ordering::SeqCst);
            PANIC_MESSAGES.lock().unwrap().push(format!("{name}: {info}"));
        }
        default(info);
    }));
}

// ---------------------------------------------------------------- a raw HTTP/1.1 client

/// A keep-alive connection, reopened when the server closes it.
struct Client {
    addr: SocketAddr,
    conn: Option<BufReader<TcpStream>>,
}

impl Client {
    fn new(addr: SocketAddr) -> Self {
        Client { addr, conn: None }
    }

    fn connect(addr: SocketAddr) -> std::io::Result<BufReader<TcpStream>> {
        let stream = TcpStream::connect(addr)?;
        stream.set_read_timeout(Some(Duration::from_secs(15)))?;
        stream.set_write_timeout(Some(Duration::from_secs(15)))?;
        Ok(BufReader::new(stream))
    }

    /// Sends one request and reads its response. A reused connection that
    /// turns out closed is reopened once; on a fresh one, no answer is an error.
    fn send(&mut self, bytes: &[u8], head_request: bool, keep: bool) -> Result<Response, String> {
        for _ in 0..2 {
            let fresh = self.conn.is_none();
            if fresh {
                self.conn = Some(Self::connect(self.addr).map_err(|e| format!("connect: {e}"))?);
            }
            let conn = self.conn.as_mut().unwrap();
            // A write error is not yet a failure: the server may have answered
            // (e.g. 413) and closed before the whole body went out.
            let write = conn.get_mut().write_all(bytes);
            let result = read_response(conn, head_request);
            match result {
                Ok(Some(r)) => {
                    let closes = r.closes();
                    if !keep || closes || r.status >= 400 {
                        self.conn = None;
                    }
                    return Ok(r);
                }
                Ok(None) | Err(_) if !fresh => self.conn = None, // a stale keep-alive connection: retry on a new one
                Ok(None) => {
                    self.conn = None;
                    return Err(format!("connection closed without a response (write: {write:?})"));
                }
                Err(e) => {
                    self.conn = None;
                    return Err(format!("reading the response: {e} (write: {write:?})"));
                }
            }
        }
        unreachable!()
    }
}

/// Writes `bytes` on a fresh connection, closes the write side, and reads
/// until the server closes. Returns the status of every response found, in
/// order, and how long the server took to close.
fn send_raw(addr: SocketAddr, bytes: &[u8]) -> Result<(Vec<u16>, Duration), String> {
    let started = Instant::now();
    let mut stream = TcpStream::connect(addr).map_err(|e| format!("connect: {e}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    stream.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = stream.write_all(bytes);
    let _ = stream.shutdown(Shutdown::Write);
    let mut out = Vec::new();
    let mut buf = [0u8; 16 << 10];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                return Err(format!("the server neither answered nor closed within 10 s (got {:?})", String::from_utf8_lossy(&out)));
            }
            Err(_) => break, // reset: the server closed with our bytes unread
        }
    }
    // Responses back to back; a HEAD's or an unparsable one stops the walk.
    let mut statuses = Vec::new();
    let mut reader = &out[..];
    while !reader.is_empty() {
        match read_response(&mut reader, false) {
            Ok(Some(r)) => statuses.push(r.status),
            _ => {
                if let Some(s) = std::str::from_utf8(reader).ok().and_then(|t| t.strip_prefix("HTTP/1.")).and_then(|t| t.get(2..5)).and_then(|s| s.parse().ok()) {
                    statuses.push(s);
                }
                break;
            }
        }
    }
    Ok((statuses, started.elapsed()))
}

// ---------------------------------------------------------------- request strategies

/// One fuzz case.
#[derive(Clone, Debug)]
enum Case {
    /// A syntactically complete HTTP/1.x request: must get exactly one 2xx/4xx response.
    WellFormed(Request),
    /// Arbitrary bytes on a fresh connection, then EOF: 4xx or a close, never 5xx, never a hang.
    Raw(Vec<u8>),
}

#[derive(Clone, Debug)]
struct Request {
    method: String,
    path: String,
    http10: bool,
    host: bool,
    headers: Vec<(String, String)>,
    /// Send the body chunked, in pieces of these sizes (then the rest).
    chunks: Option<Vec<usize>>,
    body: Vec<u8>,
    close: bool,
}

impl Request {
    fn to_bytes(&self) -> Vec<u8> {
        let mut out = format!("{} {} HTTP/1.{}\r\n", self.method, self.path, if self.http10 { 0 } else { 1 }).into_bytes();
        if self.host {
            out.extend_from_slice(b"Host: 127.0.0.1\r\n");
        }
        for (name, value) in &self.headers {
            out.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
        }
        if self.close {
            out.extend_from_slice(b"Connection: close\r\n");
        }
        match &self.chunks {
            Some(sizes) => {
                out.extend_from_slice(b"Transfer-Encoding: chunked\r\n\r\n");
                let mut rest = &self.body[..];
                for &size in sizes.iter().chain(std::iter::once(&usize::MAX)) {
                    let n = size.clamp(1, rest.len().max(1)).min(rest.len());
                    if n == 0 {
                        break;
                    }
                    out.extend_from_slice(format!("{n:x}\r\n").as_bytes());
                    out.extend_from_slice(&rest[..n]);
                    out.extend_from_slice(b"\r\n");
                    rest = &rest[n..];
                }
                out.extend_from_slice(b"0\r\n\r\n");
            }
            None => {
                if !self.body.is_empty() || self.method == "POST" || self.method == "PUT" {
                    out.extend_from_slice(format!("Content-Length: {}\r\n", self.body.len()).as_bytes());
                }
                out.extend_from_slice(b"\r\n");
                out.extend_from_slice(&self.body);
            }
        }
        out
    }
}

/// Words the model knows, so that some texts hit real rows.
const WORDS: &[&str] = &["the", "union", "congress", "war", "peace", "railroads", "territories", "communism", "tax", "bank", "states", "people"];

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => vec(prop::sample::select(WORDS), 0..30).prop_map(|w| w.join(" ")),
        3 => vec(any::<char>(), 0..60).prop_map(String::from_iter),
        1 => "[a-zA-Z0-9 ,.!?'-]{0,200}",
        1 => (prop::sample::select(WORDS), 1..500usize).prop_map(|(w, n)| format!("{w} ").repeat(n)),
        1 => prop::sample::select(vec!["", " ", "\u{0}", "\u{feff}", "İ", "ß", "ﬃ", "🦀🦀", "\u{202e}abc", "a\u{301}\u{301}\u{301}", "\r\n\t", "漢字かな"]).prop_map(String::from),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<u64>().prop_map(|n| json!(n)),
        any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(|f| json!(f)),
        text().prop_map(Value::String),
    ];
    let key = prop_oneof![prop::sample::select(vec!["instances", "text", "top_k", "inputs", "signature_name"]).prop_map(String::from), ".{0,8}"];
    leaf.prop_recursive(4, 48, 8, move |inner| {
        prop_oneof![vec(inner.clone(), 0..8).prop_map(Value::Array), prop::collection::btree_map(key.clone(), inner, 0..5).prop_map(|m| Value::Object(m.into_iter().collect()))]
    })
}

/// `{"instances": [...], "top_k": k?}` with valid (or almost valid) instances.
fn predict_body() -> impl Strategy<Value = Vec<u8>> {
    let instance = prop_oneof![3 => text().prop_map(Value::String), 1 => text().prop_map(|t| json!({ "text": t }))];
    let top_k = prop_oneof![
        3 => Just(None),
        3 => (0u64..8).prop_map(|k| Some(json!(k))),
        1 => any::<u64>().prop_map(|k| Some(json!(k))),
        1 => json_value().prop_map(Some),
    ];
    (vec(instance, 0..(MAX_INSTANCES + 8)), top_k, any::<bool>()).prop_map(|(instances, top_k, pretty)| {
        let mut body = json!({ "instances": instances });
        if let Some(k) = top_k {
            body["top_k"] = k;
        }
        if pretty { serde_json::to_vec_pretty(&body) } else { serde_json::to_vec(&body) }.unwrap()
    })
}

fn deep_nesting() -> impl Strategy<Value = Vec<u8>> {
    (1usize..20_000, 0usize..4).prop_map(|(depth, kind)| {
        match kind {
            0 => format!("{}{}", "[".repeat(depth), "]".repeat(depth)),
            1 => format!("{{\"instances\": {}\"a\"{}}}", "[".repeat(depth), "]".repeat(depth)),
            2 => format!("{}1{}", "{\"a\":".repeat(depth), "}".repeat(depth)),
            _ => format!("{{\"instances\": [{}\"x\"{}]}}", "{\"text\": ".repeat(depth), "}".repeat(depth)),
        }
        .into_bytes()
    })
}

fn huge_numbers() -> impl Strategy<Value = Vec<u8>> {
    let number = prop::sample::select(vec![
        "1e400",
        "-1e400",
        "18446744073709551616",
        "18446744073709551615",
        "9223372036854775808",
        "-9223372036854775809",
        "99999999999999999999999999999999999999999999",
        "1.5",
        "-0",
        "0",
        "1e2",
        "4.0",
        "-1",
        "1E-400",
        "0.0000000000000000000000001",
    ]);
    (number, 0usize..3).prop_map(|(n, kind)| {
        match kind {
            0 => format!("{{\"instances\": [\"a\"], \"top_k\": {n}}}"),
            1 => format!("{{\"instances\": [{n}]}}"),
            _ => format!("{{\"instances\": [{{\"text\": {n}}}], \"top_k\": {n}}}"),
        }
        .into_bytes()
    })
}

fn wrong_shapes() -> impl Strategy<Value = Vec<u8>> {
    prop::sample::select(vec![
        r#"{"instances": {"text": "a"}}"#,
        r#"{"instances": [null, 1, true]}"#,
        r#"{"inputs": ["a"]}"#,
        r#"{"inputs": {"text": ["a"]}}"#,
        r#"{"instances": "a"}"#,
        r#"[]"#,
        r#""str""#,
        r#"null"#,
        r#"{}"#,
        r#"{"instances": [["a"]]}"#,
        r#"{"instances": [{"text": "a", "extra": 1}]}"#,
        r#"{"instances": [{}]}"#,
        r#"{"instances": [{"text": null}]}"#,
        r#"{"instances": ["a"], "instances": ["b"]}"#,
        r#"{"instances": ["a"]} trailing"#,
        r#"{"instances": ["a"],}"#,
        r#"{'instances': ['a']}"#,
        "{\"instances\": [\"\\ud800\"]}",
        "{\"instances\": [\"\\u0000\"]}",
        "\u{feff}{\"instances\": []}",
        r#"{"instances": []}"#,
        r#"{"instances": [], "top_k": null}"#,
        "",
        " ",
        "{",
        "}",
    ])
    .prop_map(|s| s.as_bytes().to_vec())
}

fn oversized() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        (MAX_INSTANCES + 1..MAX_INSTANCES * 4).prop_map(|n| json!({ "instances": vec!["a"; n] }).to_string().into_bytes()),
        (MAX_BODY + 1..MAX_BODY * 2).prop_map(|n| json!({ "instances": ["x".repeat(n)] }).to_string().into_bytes()),
    ]
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        8 => predict_body(),
        2 => vec(any::<u8>(), 0..1024),
        3 => json_value().prop_map(|v| serde_json::to_vec(&v).unwrap()),
        1 => deep_nesting(),
        2 => huge_numbers(),
        3 => wrong_shapes(),
        1 => oversized(),
        // Valid JSON with an invalid UTF-8 byte inside a string.
        1 => (text(), any::<u8>().prop_filter("not ASCII", |b| *b >= 0x80)).prop_map(|(t, b)| {
            let mut v = format!("{{\"instances\": [\"{}", t.replace(['"', '\\'], "")).into_bytes();
            v.push(b);
            v.extend_from_slice(b"\"]}");
            v
        }),
    ]
}

fn percent_encode(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("%{b:02X}")).collect()
}

fn path() -> impl Strategy<Value = String> {
    let name = prop_oneof![
        6 => Just("m".to_string()),
        1 => Just("%6D".to_string()),
        1 => "[a-z]{1,8}",
        1 => prop::sample::select(vec!["", "m/extra", "..", "%2F", "%00", "%FF%FE", "m%2Fversions%2F1", "M", "m ", "m%20"]).prop_map(String::from),
        1 => any::<String>().prop_map(|s| percent_encode(s.as_bytes())),
    ];
    let version = prop_oneof![
        4 => Just(String::new()),
        2 => Just("/versions/1".to_string()),
        1 => any::<u64>().prop_map(|v| format!("/versions/{v}")),
        1 => prop::sample::select(vec!["/versions/-1", "/versions/abc", "/versions/99999999999999999999999", "/versions/", "/versions", "/versions/1/metadata", "/metadata", "/labels/x"]).prop_map(String::from),
    ];
    let verb = prop_oneof![
        6 => Just(":predict".to_string()),
        1 => prop::sample::select(vec!["", ":classify", ":regress", ":", "::predict", ":predict:", ":PREDICT", "%3Apredict", ":predict/"]).prop_map(String::from),
        1 => ":[a-z]{0,10}",
    ];
    let query = prop_oneof![8 => Just(String::new()), 1 => "\\?[a-z=&%0-9]{0,20}"];
    prop_oneof![
        10 => (name, version, verb, query).prop_map(|(n, v, verb, q)| format!("/v1/models/{n}{v}{verb}{q}")),
        3 => prop::sample::select(vec![
            "/health", "/metrics", "/v1/models/m", "/v1/models/m/metadata", "/v1/models/m/versions/1", "/v1/models/m/versions/1/metadata",
            "/", "/v1", "/v1/models", "/v1/models/", "//health", "/health/", "/v1/models/m/../m:predict", "/v1/models/m:predict#frag", "*",
            "/v1/models/m:predict?x=1", "http://127.0.0.1/v1/models/m:predict", "/%%", "/%zz", "/v1/models/%zz:predict",
        ]).prop_map(String::from),
        2 => "/[!-~]{0,80}",
        1 => any::<String>().prop_map(|s| format!("/v1/models/{}", percent_encode(s.as_bytes()))),
        1 => (1000usize..120_000, any::<bool>()).prop_map(|(n, predict)| if predict { format!("/v1/models/{}:predict", "m".repeat(n)) } else { format!("/{}", "a/".repeat(n / 2)) }),
    ]
}

fn method() -> impl Strategy<Value = String> {
    prop_oneof![
        12 => Just("POST".to_string()),
        4 => Just("GET".to_string()),
        2 => prop::sample::select(vec!["PUT", "DELETE", "HEAD", "OPTIONS", "PATCH", "TRACE", "post", "Post"]).prop_map(String::from),
        1 => "[A-Z]{1,12}".prop_filter("CONNECT is raw-only", |m| m != "CONNECT" && m != "PRI"),
    ]
}

fn headers() -> impl Strategy<Value = Vec<(String, String)>> {
    let content_type = prop_oneof![
        6 => Just(Some("application/json")),
        2 => Just(None),
        1 => prop::sample::select(vec![
            "application/json; charset=utf-8", "text/plain", "", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x",
            "application/json; charset=latin1", "*/*", "application/jsonl", "APPLICATION/JSON",
        ]).prop_map(Some),
    ];
    let extra_name = "[A-Za-z][A-Za-z0-9-]{0,20}".prop_filter("framing headers are set by the case", |n| {
        !["content-length", "transfer-encoding", "connection", "host", "expect", "upgrade", "te", "trailer"].contains(&n.to_ascii_lowercase().as_str())
    });
    let extra = vec((extra_name, "[ -~]{0,40}".prop_map(|v| v.trim().to_string())), 0..4);
    let special = prop_oneof![
        8 => Just(vec![]),
        1 => Just(vec![("Expect".to_string(), "100-continue".to_string())]),
        1 => prop::sample::select(vec!["gzip", "br", "identity", "deflate"]).prop_map(|e| vec![("Content-Encoding".to_string(), e.to_string())]),
        1 => Just(vec![("Accept".to_string(), "text/html".to_string()), ("Accept-Encoding".to_string(), "gzip".to_string())]),
        1 => (90usize..140).prop_map(|n| (0..n).map(|i| (format!("X-H{i}"), "v".to_string())).collect()),
        1 => (1000usize..500_000).prop_map(|n| vec![("X-Long".to_string(), "v".repeat(n))]),
    ];
    (content_type, extra, special).prop_map(|(ct, mut extra, special)| {
        if let Some(ct) = ct {
            extra.push(("Content-Type".to_string(), ct.to_string()));
        }
        extra.extend(special);
        extra
    })
}

fn request() -> impl Strategy<Value = Request> {
    (method(), path(), prop::bool::weighted(0.05), prop::bool::weighted(0.95), headers(), prop::option::weighted(0.1, vec(1usize..4096, 0..6)), body(), prop::bool::weighted(0.1))
        .prop_map(|(method, path, http10, host, headers, chunks, body, close)| {
            let body = if matches!(method.as_str(), "GET" | "HEAD") && body.len() % 4 != 0 { Vec::new() } else { body };
            Request { method, path, http10, host, headers, chunks: chunks.filter(|_| !http10), body, close }
        })
}

/// Malformed byte streams.
fn raw() -> impl Strategy<Value = Vec<u8>> {
    let bad_header = prop::sample::select(vec![
        "X-A\0: b",
        "Bad Header: x",
        "X: \x01\x7f",
        ": novalue",
        "NoColon",
        "X-Ü: y",
        "X: a\rb",
        "\tfolded: x",
        " leading: space",
        "X:\u{0}",
        "Content-Length: abc",
        "Content-Length: -1",
        "Content-Length: 1, 2",
        "Content-Length: +5",
        "Content-Length: 18446744073709551616",
        "Content-Length: 0x10",
        "Content-Length: ",
        "Content-Length: 5\r\nContent-Length: 6",
        "Transfer-Encoding: chunked\r\nContent-Length: 5",
        "Transfer-Encoding: gzip, chunked",
        "Transfer-Encoding: chunked, identity",
        "Transfer-Encoding: bogus",
        "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked",
        "Upgrade: h2c\r\nConnection: Upgrade",
        "Upgrade: websocket\r\nConnection: Upgrade",
        "Expect: 999-nonsense",
        "Host: a\r\nHost: b",
    ]);
    prop_oneof![
        // A truncated well-formed request.
        3 => (request(), any::<prop::sample::Index>()).prop_map(|(r, i)| {
            let bytes = r.to_bytes();
            let cut = i.index(bytes.len());
            bytes[..cut].to_vec()
        }),
        // A well-formed request with a few bytes overwritten.
        3 => (request(), vec((any::<prop::sample::Index>(), any::<u8>()), 1..6)).prop_map(|(r, flips)| {
            let mut bytes = r.to_bytes();
            for (i, b) in flips {
                let i = i.index(bytes.len().min(512));
                bytes[i] = b;
            }
            bytes
        }),
        // A bad header line, then maybe a body that fits no framing.
        3 => (bad_header, vec(any::<u8>(), 0..64), prop::sample::select(vec!["POST /v1/models/m:predict", "GET /health", "POST /health"])).prop_map(|(h, body, line)| {
            let mut v = format!("{line} HTTP/1.1\r\nHost: x\r\n{h}\r\n\r\n").into_bytes();
            v.extend_from_slice(&body);
            v
        }),
        // Content-Length larger or smaller than the body.
        2 => (predict_body(), -50i64..5000).prop_map(|(body, delta)| {
            let len = (body.len() as i64 + delta).max(0);
            let mut v = format!("POST /v1/models/m:predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {len}\r\n\r\n").into_bytes();
            v.extend_from_slice(&body);
            v
        }),
        // Broken chunked bodies.
        1 => prop::sample::select(vec!["zz\r\nabc\r\n0\r\n\r\n", "5\r\nab\r\n0\r\n\r\n", "ffffffffffffffffff\r\n", "3;ext=1\r\nabc\r\n0\r\n\r\n", "3\r\nabc", "-1\r\n\r\n", "3\r\nabcXX0\r\n\r\n"])
            .prop_map(|c| format!("POST /v1/models/m:predict HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n{c}").into_bytes()),
        // Odd request lines and protocols.
        2 => prop::sample::select(vec![
            "GET\r\n\r\n", "GET / HTTP/1.1 extra\r\n\r\n", "GET / HTTP/2.0\r\n\r\n", "GET / HTTP/0.9\r\n\r\n", "GET /\r\n\r\n", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            "CONNECT m:80 HTTP/1.1\r\nHost: m:80\r\n\r\n", "CONNECT /v1/models/m:predict HTTP/1.1\r\n\r\n", " / HTTP/1.1\r\n\r\n", "GET  /  HTTP/1.1\r\n\r\n",
            "get /health http/1.1\r\n\r\n", "GET /\0 HTTP/1.1\r\n\r\n", "GET /health HTTP/1.1\n\n", "GET /health HTTP/1.1\r\r\n\r\n", "\r\n\r\nGET /health HTTP/1.1\r\n\r\n",
            "GET /health HTTP/1.1\r\nHost: x\r\n\r\nGET /health HTTP/1.1\r\nHost: x\r\n\r\n", "GET /v1/models/m\u{e9}:predict HTTP/1.1\r\n\r\n", "GET /\u{1F980} HTTP/1.1\r\n\r\n",
            "\u{16}\u{3}\u{1}\u{0}\u{a5}\u{1}\u{0}\u{0}\u{a1}\u{3}\u{3}", "GET /health HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabcGARBAGE\r\n\r\n",
        ]).prop_map(|s| s.as_bytes().to_vec()),
        // Garbage.
        2 => vec(any::<u8>(), 0..512),
        // A header too long for any buffer.
        1 => (200_000usize..600_000).prop_map(|n| format!("GET /health HTTP/1.1\r\nX-Long: {}\r\n\r\n", "v".repeat(n)).into_bytes()),
    ]
}

/// A predict request to the served model with a fuzzed body and headers.
fn predict_request() -> impl Strategy<Value = Request> {
    let path = prop::sample::select(vec!["/v1/models/m:predict", "/v1/models/m/versions/1:predict"]);
    (path, headers(), prop::option::weighted(0.1, vec(1usize..4096, 0..6)), body()).prop_map(|(path, headers, chunks, body)| Request {
        method: "POST".into(),
        path: path.into(),
        http10: false,
        host: true,
        headers,
        chunks,
        body,
        close: false,
    })
}

fn case() -> impl Strategy<Value = Case> {
    prop_oneof![
        4 => predict_request().prop_map(Case::WellFormed),
        4 => request().prop_map(Case::WellFormed),
        2 => raw().prop_map(Case::Raw),
    ]
}

// ---------------------------------------------------------------- the test

#[derive(Default)]
struct Stats {
    sent: usize,
    well_formed: usize,
    raw: usize,
    raw_closed_silently: usize,
    statuses: BTreeMap<u16, usize>,
    slowest_raw_close: Duration,
}

fn check(client: &RefCell<Client>, stats: &RefCell<Stats>, addr: SocketAddr, case: &Case) -> Result<(), TestCaseError> {
    stats.borrow_mut().sent += 1;
    match case {
        Case::WellFormed(request) => {
            stats.borrow_mut().well_formed += 1;
            let bytes = request.to_bytes();
            let keep = !request.close && !request.http10;
            let response = client.borrow_mut().send(&bytes, request.method == "HEAD", keep);
            let response = response.map_err(|e| TestCaseError::fail(format!("{e}\nrequest: {:.600}", String::from_utf8_lossy(&bytes))))?;
            *stats.borrow_mut().statuses.entry(response.status).or_default() += 1;
            prop_assert!(
                (200..300).contains(&response.status) || (400..500).contains(&response.status),
                "status {} for {:.600}\nbody: {:.600}",
                response.status,
                String::from_utf8_lossy(&bytes),
                String::from_utf8_lossy(&response.body)
            );
            // The server's own answers (those routed to a handler) are JSON with an "error" message.
            if response.status >= 400 && response.header("content-type") == Some("application/json") && request.method != "HEAD" {
                let v: Value = serde_json::from_slice(&response.body).map_err(|e| TestCaseError::fail(format!("error body not JSON: {e}")))?;
                prop_assert!(v["error"].is_string(), "{v}");
            }
            if response.status == 200 && request.method == "POST" && request.path.contains(":predict") {
                let v: Value = serde_json::from_slice(&response.body).map_err(|e| TestCaseError::fail(format!("predict reply not JSON: {e}")))?;
                // Row format in, rows out; TF Serving's columnar "inputs" in, columns out.
                prop_assert!(v["predictions"].is_array() || (v["outputs"]["labels"].is_array() && v["outputs"]["scores"].is_array()), "{v}");
            }
        }
        Case::Raw(bytes) => {
            stats.borrow_mut().raw += 1;
            let (statuses, took) = send_raw(addr, bytes).map_err(|e| TestCaseError::fail(format!("{e}\nsent: {:?}", String::from_utf8_lossy(&bytes[..bytes.len().min(600)]))))?;
            let mut s = stats.borrow_mut();
            s.slowest_raw_close = s.slowest_raw_close.max(took);
            if statuses.is_empty() {
                s.raw_closed_silently += 1;
            }
            for status in statuses {
                *s.statuses.entry(status).or_default() += 1;
                prop_assert!(status < 500, "status {status} for raw bytes {:?}", String::from_utf8_lossy(&bytes[..bytes.len().min(600)]));
            }
        }
    }
    Ok(())
}

/// Cases that once went wrong, or that matter enough to try on every run.
fn regressions() -> Vec<Case> {
    let predict = |body: &str, headers: Vec<(&str, &str)>| {
        Case::WellFormed(Request {
            method: "POST".into(),
            path: "/v1/models/m:predict".into(),
            http10: false,
            host: true,
            headers: headers.into_iter().map(|(n, v)| (n.to_string(), v.to_string())).collect(),
            chunks: None,
            body: body.as_bytes().to_vec(),
            close: false,
        })
    };
    vec![
        predict(r#"{"instances": ["a"], "top_k": 18446744073709551615}"#, vec![]),
        predict(&format!("{}{}", "[".repeat(100_000), "]".repeat(100_000)), vec![]),
        predict(r#"{"instances": ["a"]}"#, vec![("Expect", "100-continue")]),
        predict(&json!({ "instances": vec!["İ ß ﬃ 🦀"; MAX_INSTANCES] }).to_string(), vec![]),
        Case::Raw(b"POST /v1/models/m:predict HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{\"instances\"".to_vec()),
        Case::Raw(b"GET /health HTTP/1.1\r\nHo".to_vec()),
        Case::Raw(Vec::new()),
    ]
}

#[test]
fn fuzzed_requests_get_only_2xx_or_4xx_and_leave_the_server_healthy() {
    count_server_panics();
    let tmp = tempfile::tempdir().unwrap();
    let base = export_tiny_model(tmp.path());
    let config = ServerConfig {
        model_base: base,
        poll_interval: Duration::from_secs(3600),
        max_body_bytes: MAX_BODY,
        max_instances: MAX_INSTANCES,
        request_timeout: Duration::from_secs(5),
        header_read_timeout: Duration::from_secs(5),
        inline_max_instances: 8, // larger batches take the blocking pool
        ..ServerConfig::default()
    };
    let server = Server::start(config, "127.0.0.1:0", false).unwrap();
    let addr = server.addr();
    assert!(addr.ip().is_loopback());

    let client = RefCell::new(Client::new(addr));
    let stats = RefCell::new(Stats::default());
    let started = Instant::now();
    for case in regressions() {
        check(&client, &stats, addr, &case).unwrap_or_else(|e| panic!("regression case {case:.300?}: {e}"));
    }

    let cases = 12_000;
    let config = ProptestConfig { cases, failure_persistence: None, max_shrink_iters: 500, max_shrink_time: 60_000, ..ProptestConfig::default() };
    let mut runner = TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &[9; 32]));
    if let Err(e) = runner.run(&case(), |case| check(&client, &stats, addr, &case)) {
        let panics = PANIC_MESSAGES.lock().unwrap();
        panic!("{e}\n{} server-side panics, the first: {:?}", panics.len(), &panics[..panics.len().min(3)]);
    }
    let elapsed = started.elapsed();

    // Still healthy, still predicting, no 5xx counted, no panic.
    let mut client = Client::new(addr);
    let health = client.send(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n", false, true).unwrap();
    assert_eq!(health.status, 200, "{:?}", String::from_utf8_lossy(&health.body));
    let body = r#"{"instances": ["the union and the territories", {"text": "communism"}]}"#;
    let request = format!("POST /v1/models/m:predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}", body.len());
    let reply = client.send(request.as_bytes(), false, true).unwrap();
    assert_eq!(reply.status, 200);
    let reply: Value = serde_json::from_slice(&reply.body).unwrap();
    assert_eq!(reply["predictions"].as_array().unwrap().len(), 2, "{reply}");
    let metrics = String::from_utf8(client.send(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", false, true).unwrap().body).unwrap();
    let server_errors: Vec<&str> = metrics.lines().filter(|l| l.starts_with("sparseburn_http_requests_total") && l.contains("code=\"5")).collect();
    assert!(server_errors.is_empty(), "{server_errors:?}");
    assert_eq!(SERVER_PANICS.load(Ordering::SeqCst), 0, "server threads panicked: {:?}", PANIC_MESSAGES.lock().unwrap());

    let stats = stats.into_inner();
    eprintln!(
        "fuzz: {} requests ({} well-formed, {} raw streams, {} of which closed without a response) in {:.1} s; slowest raw close {} ms; statuses {:?}",
        stats.sent,
        stats.well_formed,
        stats.raw,
        stats.raw_closed_silently,
        elapsed.as_secs_f64(),
        stats.slowest_raw_close.as_millis(),
        stats.statuses
    );
    assert!(stats.sent >= 10_000, "{} requests", stats.sent);
    assert!(stats.statuses.get(&200).copied().unwrap_or(0) > 1000, "too few successful predictions: the generators are off {:?}", stats.statuses);
    server.shutdown().unwrap();
}
