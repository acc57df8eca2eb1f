//! The fast-predict loop: one input line in, one JSON line out, flushed at once,
//! so another program can keep `sparseburn predict` open as a co-process.
//!
//! A line whose first non-blank character is `{` is JSON: `{"text": "...",
//! "id": any?}` (the `id`, if any, is echoed back). Any other line is the text
//! itself. Output is `{"labels": [...], "scores": [...]}` (plus `"id"`), or
//! `{"error": "..."}` for a line that cannot be read: exactly one output line
//! per input line, whatever the input.

use std::io::{BufRead, Write};

use serde::Serialize;
use serde_json::Value;

use super::predictor::{Prediction, Predictor};

/// What a loop did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LoopStats {
    pub lines: u64,
    pub errors: u64,
}

/// Runs until `input` ends (or `output` is closed, e.g. a broken pipe).
pub fn run(predictor: &Predictor, top_k: usize, mut input: impl BufRead, mut output: impl Write) -> std::io::Result<LoopStats> {
    let mut stats = LoopStats::default();
    let mut line = Vec::new();
    loop {
        line.clear();
        if input.read_until(b'\n', &mut line)? == 0 {
            return Ok(stats);
        }
        let reply = answer(predictor, top_k, &line);
        stats.lines += 1;
        stats.errors += reply.error.is_some() as u64;
        let mut bytes = serde_json::to_vec(&reply).unwrap_or_else(|e| format!("{{\"error\":\"cannot encode the result: {e}\"}}").into_bytes());
        bytes.push(b'\n');
        match output.write_all(&bytes).and_then(|_| output.flush()) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(stats),
            Err(e) => return Err(e),
        }
    }
}

/// One output line: a prediction or an error, with the input's `id` if it had one.
#[derive(Serialize)]
struct Reply {
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    prediction: Option<Prediction>,
}

impl Reply {
    fn error(message: impl Into<String>) -> Reply {
        Reply { id: None, error: Some(message.into()), prediction: None }
    }
    fn ok(prediction: Prediction) -> Reply {
        Reply { id: None, error: None, prediction: Some(prediction) }
    }
}

fn answer(predictor: &Predictor, top_k: usize, raw: &[u8]) -> Reply {
    let line = match std::str::from_utf8(raw) {
        Ok(s) => s.strip_suffix('\n').map(|s| s.strip_suffix('\r').unwrap_or(s)).unwrap_or(s),
        Err(e) => return Reply::error(format!("input line is not valid UTF-8: {e}")),
    };
    if !line.trim_start().starts_with('{') {
        return Reply::ok(predictor.predict_one(line, top_k));
    }
    let mut object = match serde_json::from_str::<Value>(line) {
        Ok(Value::Object(o)) => o,
        Ok(_) => return Reply::error("expected a JSON object {\"text\": ...}"),
        Err(e) => return Reply::error(format!("malformed JSON: {e}")),
    };
    let mut reply = match object.get("text") {
        Some(Value::String(text)) => Reply::ok(predictor.predict_one(text, top_k)),
        Some(_) => Reply::error("\"text\" must be a string"),
        None => Reply::error("missing \"text\""),
    };
    reply.id = object.remove("id");
    reply
}
