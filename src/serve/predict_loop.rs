//! The fast-predict loop: one input line in, one JSON line out, flushed at once,
//! so another program can keep `sparseburn predict` open as a co-process.
//!
//! A line whose first non-blank character is `{` is JSON: `{"text": "...",
//! "id": any?}` (the `id`, if any, is echoed back). Any other line is the text
//! itself. Output is `{"labels": [...], "scores": [...]}` (plus `"id"`), or
//! `{"error": "line N: ..."}` for a line that cannot be read: exactly one
//! output line per input line, whatever the input. A line longer than the
//! limit is answered with an error and skipped without being held in memory.

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
/// Lines over `max_line_bytes` (newline excluded) are refused.
pub fn run(predictor: &Predictor, top_k: usize, max_line_bytes: usize, mut input: impl BufRead, mut output: impl Write) -> std::io::Result<LoopStats> {
    let mut stats = LoopStats::default();
    let mut line = Vec::new();
    loop {
        let Some(fits) = read_line_within(&mut input, &mut line, max_line_bytes)? else {
            return Ok(stats);
        };
        stats.lines += 1;
        let mut reply = if fits { answer(predictor, top_k, &line) } else { Reply::error(format!("longer than the limit of {max_line_bytes} bytes (--max-line-bytes)")) };
        // A mapped table whose file changed (or was truncated: its reads gave zeros)
        // must not answer: stop with an error instead of printing wrong predictions.
        if let Some(change) = predictor.table_file_changed() {
            return Err(std::io::Error::other(format!("line {}: the model's table file changed on disk while predicting ({change}); restart with the new bundle", stats.lines)));
        }
        if let Some(e) = &mut reply.error {
            *e = format!("line {}: {e}", stats.lines);
        }
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

/// Reads one line (newline included) into `line`, keeping at most `limit`
/// bytes of it plus the newline. `None` at the end of input; `Some(false)` when
/// the line was longer than `limit` (the rest of it is consumed and dropped).
fn read_line_within(input: &mut impl BufRead, line: &mut Vec<u8>, limit: usize) -> std::io::Result<Option<bool>> {
    line.clear();
    let (mut read_any, mut fits) = (false, true);
    loop {
        let buf = match input.fill_buf() {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if buf.is_empty() {
            return Ok(read_any.then_some(fits));
        }
        read_any = true;
        let (chunk, done) = match buf.iter().position(|&b| b == b'\n') {
            Some(i) => (&buf[..=i], true),
            None => (buf, false),
        };
        let body = chunk.len() - done as usize;
        if fits && line.len() + body <= limit {
            line.extend_from_slice(chunk);
        } else {
            fits = false;
        }
        let n = chunk.len();
        input.consume(n);
        if done {
            return Ok(Some(fits));
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Every line of `data`, read through a 3-byte buffer so lines cross buffer
    /// boundaries, against splitting the bytes directly.
    #[test]
    fn lines_within_the_limit_are_read_whole_and_longer_ones_are_refused() {
        let data = b"ab\n\nabcdef\nabcde\r\nxyz\n0123456789abcdef\ntail-without-newline";
        let limit = 6;
        let mut input = std::io::BufReader::with_capacity(3, &data[..]);
        let mut line = Vec::new();
        let mut got = Vec::new();
        while let Some(fits) = read_line_within(&mut input, &mut line, limit).unwrap() {
            got.push((fits, line.clone()));
        }
        let want: Vec<(bool, Vec<u8>)> = data
            .split_inclusive(|&b| b == b'\n')
            .map(|l| {
                let body = l.len() - l.ends_with(b"\n") as usize;
                if body <= limit {
                    (true, l.to_vec())
                } else {
                    (false, Vec::new())
                }
            })
            .collect();
        assert_eq!(got.len(), want.len());
        for (i, ((gf, gl), (wf, wl))) in got.iter().zip(&want).enumerate() {
            assert_eq!(gf, wf, "line {i}");
            if *wf {
                assert_eq!(gl, wl, "line {i}");
            }
        }
        assert_eq!(want.iter().filter(|(f, _)| !f).count(), 2, "the example has two long lines");
    }
}
