//! Streaming reader for one-example-per-line files: `label<TAB>text` (TSV) or
//! fastText's `__label__x text`. Bad lines are skipped and counted with their
//! line numbers, or, when `strict`, the first one is an error naming file and line.

use std::io::BufRead;
use std::path::Path;

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DataFormat {
    /// `label<TAB>text`
    #[default]
    Tsv,
    /// `__label__x [__label__y …] text`; the first label is used.
    Fasttext,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Example {
    pub label: String,
    pub text: String,
}

/// How many lines were read and which were skipped.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReadStats {
    pub lines: u64,
    pub examples: u64,
    pub bad: u64,
    /// The first few bad lines as `(line number, reason)`.
    pub bad_samples: Vec<(u64, String)>,
}

pub(crate) const BAD_SAMPLES_KEPT: usize = 20;

/// Why a line is not an example, or `Ok(None)` for a blank line.
fn parse_line(line: &[u8], format: DataFormat) -> Result<Option<Example>, &'static str> {
    parse_line_borrowed(line, format).map(|ex| ex.map(|(label, text)| Example { label: label.to_string(), text: text.to_string() }))
}

/// [`parse_line`] without copying: the label and text as slices of `line`.
pub(crate) fn parse_line_borrowed(line: &[u8], format: DataFormat) -> Result<Option<(&str, &str)>, &'static str> {
    let line = std::str::from_utf8(line).map_err(|_| "invalid UTF-8")?;
    let line = line.trim_end_matches(['\n', '\r']);
    if line.trim().is_empty() {
        return Ok(None);
    }
    let (label, text) = match format {
        DataFormat::Tsv => line.split_once('\t').ok_or("no TAB between label and text")?,
        DataFormat::Fasttext => {
            let rest = line.strip_prefix("__label__").ok_or("no __label__ prefix")?;
            let (label, mut text) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
            // Further labels are allowed; only the first is used.
            while let Some(more) = text.trim_start().strip_prefix("__label__") {
                text = more.split_once(char::is_whitespace).map_or("", |(_, t)| t);
            }
            (label, text)
        }
    };
    let (label, text) = (label.trim(), text.trim());
    if label.is_empty() {
        return Err("empty label");
    }
    if text.is_empty() {
        return Err("empty text");
    }
    Ok(Some((label, text)))
}

/// Calls `each` for every good example of `path`, in file order, one line in memory at a time.
pub fn read_examples(path: &Path, format: DataFormat, strict: bool, mut each: impl FnMut(Example)) -> anyhow::Result<ReadStats> {
    let file = std::fs::File::open(path).with_context(|| format!("cannot open data file {}", path.display()))?;
    let mut reader = std::io::BufReader::with_capacity(1 << 20, file);
    let mut stats = ReadStats::default();
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = reader.read_until(b'\n', &mut line).with_context(|| format!("reading {}", path.display()))?;
        if n == 0 {
            break;
        }
        stats.lines += 1;
        match parse_line(&line, format) {
            Ok(Some(example)) => {
                stats.examples += 1;
                each(example);
            }
            Ok(None) => {}
            Err(reason) if strict => bail!("{}:{}: bad line ({reason})", path.display(), stats.lines),
            Err(reason) => {
                stats.bad += 1;
                if stats.bad_samples.len() < BAD_SAMPLES_KEPT {
                    stats.bad_samples.push((stats.lines, reason.to_string()));
                }
            }
        }
    }
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_formats_and_rejects_bad_lines() {
        let ex = |l, t: &str| Example { label: l, text: t.to_string() };
        assert_eq!(parse_line(b"pos\tgreat film\n", DataFormat::Tsv), Ok(Some(ex("pos".into(), "great film"))));
        assert_eq!(parse_line(b"__label__a __label__b some text", DataFormat::Fasttext), Ok(Some(ex("a".into(), "some text"))));
        assert_eq!(parse_line(b"no tab here", DataFormat::Tsv), Err("no TAB between label and text"));
        assert_eq!(parse_line(b"pos\t  ", DataFormat::Tsv), Err("empty text"));
        assert_eq!(parse_line(b"\tx", DataFormat::Tsv), Err("empty label"));
        assert_eq!(parse_line(b"a\t\xff\xfe", DataFormat::Tsv), Err("invalid UTF-8"));
        assert_eq!(parse_line(b"\n", DataFormat::Tsv), Ok(None));
    }
}
