//! Helpers shared by the server tests: a tiny exported model and a raw
//! HTTP/1.1 response reader (raw, because these tests send bytes no HTTP
//! client library would: broken framing, stalled headers, trickled bodies).
#![allow(dead_code)] // each test file uses a different subset

use std::io::BufRead;
use std::path::{Path, PathBuf};

use sparseburn::config::Config;
use sparseburn::train::{self, TrainOptions};

/// Trains a tiny model and exports it as `<tmp>/m/1`; returns the base folder `<tmp>/m`.
pub fn export_tiny_model(tmp: &Path) -> PathBuf {
    let overrides: Vec<String> =
        ["logging.quiet=true", "logging.tensorboard=false", "train.epochs=1", "vocab.buckets=20000", "checkpoint.every=0"].iter().map(|s| s.to_string()).collect();
    let config = Config::load(Path::new("configs/quickstart.toml"), &overrides).unwrap();
    let run_dir = tmp.join("run");
    train::train(&config, &TrainOptions { run_dir: Some(run_dir.clone()), ..Default::default() }).unwrap();
    let base = tmp.join("m");
    sparseburn::export::export_run(&run_dir, &base.join("1")).unwrap();
    base
}

#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    /// Whether the server said it closes the connection after this response.
    pub fn closes(&self) -> bool {
        self.header("connection").is_some_and(|v| v.eq_ignore_ascii_case("close"))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// Reads one final response (skipping `100 Continue`s). `Ok(None)`: the
/// connection closed before a single byte of a response.
pub fn read_response(r: &mut impl BufRead, head_request: bool) -> std::io::Result<Option<Response>> {
    let mut first = true;
    loop {
        let mut line = Vec::new();
        if r.read_until(b'\n', &mut line)? == 0 {
            return if first { Ok(None) } else { Err(std::io::ErrorKind::UnexpectedEof.into()) };
        }
        first = false;
        let text = String::from_utf8_lossy(&line);
        let status: u16 = match (text.starts_with("HTTP/1."), text.get(9..12).and_then(|s| s.parse().ok())) {
            (true, Some(s)) => s,
            _ => return Err(std::io::Error::other(format!("not a status line: {text:?}"))),
        };
        let mut headers = Vec::new();
        loop {
            let mut line = Vec::new();
            if r.read_until(b'\n', &mut line)? == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            let line = String::from_utf8_lossy(&line).trim_end().to_string();
            if line.is_empty() {
                break;
            }
            let (name, value) = line.split_once(':').ok_or_else(|| std::io::Error::other(format!("bad header line {line:?}")))?;
            headers.push((name.trim().to_string(), value.trim().to_string()));
        }
        if (100..200).contains(&status) {
            continue;
        }
        let mut response = Response { status, headers, body: Vec::new() };
        if head_request || status == 204 || status == 304 {
            return Ok(Some(response));
        }
        if response.header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
            loop {
                let mut size = String::new();
                r.read_line(&mut size)?;
                let n = usize::from_str_radix(size.trim(), 16).map_err(std::io::Error::other)?;
                let mut chunk = vec![0; n + 2];
                r.read_exact(&mut chunk)?;
                if n == 0 {
                    break;
                }
                response.body.extend_from_slice(&chunk[..n]);
            }
        } else if let Some(len) = response.header("content-length") {
            let len: usize = len.parse().map_err(std::io::Error::other)?;
            response.body.resize(len, 0);
            r.read_exact(&mut response.body)?;
        } else {
            r.read_to_end(&mut response.body)?;
        }
        return Ok(Some(response));
    }
}
