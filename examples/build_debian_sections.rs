//! Build the real benchmark: Debian package descriptions labelled by archive Section.
//!
//! Input: apt's list files for this machine's release (`*_Packages[.lz4]` and
//! `*_i18n_Translation-en[.lz4]`, any number of suites/components). Output:
//! `OUT/train.tsv` and `OUT/test.tsv`, one `label<TAB>text` line per example.
//!
//! * Join `Packages` to `Translation-en` on (`Package`, `Description-md5`).
//! * label = last `/`-part of `Section` (`contrib/games` → `games`).
//! * text = short + long description on one line, whitespace normalised (` .` lines dropped).
//! * exact duplicate texts are dropped (the first one, in sorted file order, is kept).
//! * split grouped by source package (`Source` without `(version)`, else `Package`):
//!   `fnv1a64(source) % 100 < test_percent` → test (FNV-1a 64 of the UTF-8 bytes,
//!   offset basis 0xcbf29ce484222325, prime 0x100000001b3).
//!
//! See `examples/README-debian.md`.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fs;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, ensure, Context, Result};
use clap::Parser;
// The split hash is the library's FNV-1a 64 (same function as the n-gram buckets).
use sparseburn::data::vocab::fnv1a64;

#[derive(Parser, Debug)]
#[command(about = "Build the Debian-descriptions-by-Section dataset from apt lists")]
struct Args {
    /// Directory holding apt list files (`*_Packages[.lz4]`, `*_Translation-en[.lz4]`).
    /// Defaults to FETCH/lists when --fetch is given.
    #[arg(long)]
    lists: Option<PathBuf>,
    /// Output directory for train.tsv and test.tsv.
    #[arg(long)]
    out: PathBuf,
    /// First run `apt-get update` into the private state dir FETCH (FETCH/lists, FETCH/cache)
    /// with English translations enabled; the system's lists stay untouched. Needs root.
    #[arg(long, value_name = "FETCH")]
    fetch: Option<PathBuf>,
    /// Percentage of source packages (by hash) that go to the test split.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(0..=100))]
    test_percent: u64,
}

// ---------------------------------------------------------------- deb822

/// One deb822 paragraph: fields in file order. Continuation lines are joined to the
/// value with `\n`, each with its single leading space/tab removed.
#[derive(Debug, Default, Clone, PartialEq)]
struct Stanza {
    fields: Vec<(String, String)>,
}

impl Stanza {
    /// Field names are case-insensitive in deb822.
    fn get(&self, name: &str) -> Option<&str> {
        self.fields.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// Parse deb822 text: paragraphs separated by blank (or whitespace-only) lines,
/// `Field: value` lines, continuation lines starting with a space or tab,
/// `#` comment lines at column 0 ignored. Errors name the 1-based line.
fn parse_deb822(text: &str) -> Result<Vec<Stanza>> {
    let mut out = Vec::new();
    let mut cur = Stanza::default();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.strip_suffix('\r').unwrap_or(raw);
        if line.trim().is_empty() {
            if !cur.fields.is_empty() {
                out.push(std::mem::take(&mut cur));
            }
        } else if line.starts_with('#') {
            continue;
        } else if line.starts_with([' ', '\t']) {
            let Some((_, value)) = cur.fields.last_mut() else {
                bail!("line {}: continuation line outside a field", i + 1);
            };
            value.push('\n');
            value.push_str(&line[1..]);
        } else {
            let Some((name, value)) = line.split_once(':') else {
                bail!("line {}: expected `Field: value`, got {:?}", i + 1, line);
            };
            ensure!(!name.is_empty(), "line {}: empty field name", i + 1);
            cur.fields.push((name.to_string(), value.trim().to_string()));
        }
    }
    if !cur.fields.is_empty() {
        out.push(cur);
    }
    Ok(out)
}

// ---------------------------------------------------------------- fields → example

/// `Description-en` value → one line: short description, then the long one;
/// ` .` paragraph separators dropped, all whitespace runs (tabs included) → one space.
fn description_text(desc: &str) -> String {
    desc.lines().filter(|l| l.trim() != ".").flat_map(str::split_whitespace).collect::<Vec<_>>().join(" ")
}

/// `Source: foo (1.2-3)` → `foo`.
fn source_name(source: &str) -> &str {
    source.split_whitespace().next().unwrap_or("")
}

/// `contrib/games` → `games`, `libs` → `libs`.
fn section_label(section: &str) -> &str {
    section.trim().rsplit('/').next().unwrap_or("")
}

fn is_test_source(source: &str, test_percent: u64) -> bool {
    fnv1a64(source.as_bytes()) % 100 < test_percent
}

#[derive(Debug, Clone, PartialEq)]
struct Example {
    label: String,
    text: String,
    source: String,
}

#[derive(Debug, Default)]
struct BuildStats {
    packages: usize,
    missing_fields: usize,
    no_translation: usize,
    same_package_md5: usize,
    empty_text: usize,
    duplicate_text: usize,
}

/// Join the parsed Packages stanzas (in order) to Translation-en and dedupe.
fn build_examples(packages: &[Stanza], translations: &HashMap<(String, String), String>) -> (Vec<Example>, BuildStats) {
    let mut st = BuildStats::default();
    let mut seen_key: HashSet<(&str, &str)> = HashSet::new();
    let mut seen_text: HashSet<String> = HashSet::new();
    let mut out = Vec::new();
    for p in packages {
        st.packages += 1;
        let (Some(pkg), Some(section), Some(md5)) = (p.get("Package"), p.get("Section"), p.get("Description-md5")) else {
            st.missing_fields += 1;
            continue;
        };
        // The same binary in several suites (bookworm, -security, -updates) or archs.
        if !seen_key.insert((pkg, md5)) {
            st.same_package_md5 += 1;
            continue;
        }
        let Some(desc) = translations.get(&(pkg.to_string(), md5.to_string())) else {
            st.no_translation += 1;
            continue;
        };
        let text = description_text(desc);
        let label = section_label(section);
        if text.is_empty() || label.is_empty() {
            st.empty_text += 1;
            continue;
        }
        if !seen_text.insert(text.clone()) {
            st.duplicate_text += 1;
            continue;
        }
        let source = p.get("Source").map(source_name).unwrap_or(pkg);
        out.push(Example { label: label.to_string(), text, source: source.to_string() });
    }
    (out, st)
}

fn split(examples: Vec<Example>, test_percent: u64) -> (Vec<Example>, Vec<Example>) {
    examples.into_iter().partition(|e| !is_test_source(&e.source, test_percent))
}

// ---------------------------------------------------------------- files

const LZ4_FRAME_MAGIC: [u8; 4] = [0x04, 0x22, 0x4d, 0x18];

/// Read a list file, lz4-frame-decompressing it when it starts with the lz4 magic.
fn read_list_file(path: &Path) -> Result<String> {
    let raw = fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let bytes = if raw.starts_with(&LZ4_FRAME_MAGIC) {
        let mut dec = Vec::with_capacity(raw.len() * 3);
        lz4_flex::frame::FrameDecoder::new(raw.as_slice()).read_to_end(&mut dec).with_context(|| format!("lz4-decompressing {}", path.display()))?;
        dec
    } else {
        raw
    };
    String::from_utf8(bytes).with_context(|| format!("{} is not UTF-8", path.display()))
}

fn parse_file(path: &Path) -> Result<Vec<Stanza>> {
    let text = read_list_file(path)?;
    parse_deb822(&text).with_context(|| format!("parsing {}", path.display()))
}

/// (Packages files, Translation-en files), sorted by name.
fn find_list_files(dir: &Path) -> Result<(Vec<PathBuf>, Vec<PathBuf>)> {
    let (mut pk, mut tr) = (Vec::new(), Vec::new());
    for entry in fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let entry = entry.with_context(|| format!("listing {}", dir.display()))?;
        if !entry.file_type()?.is_file() {
            continue;
        }
        let name = entry.file_name().to_string_lossy().into_owned();
        let stem = name.strip_suffix(".lz4").unwrap_or(&name);
        if stem.ends_with("_Packages") {
            pk.push(entry.path());
        } else if stem.ends_with("_Translation-en") {
            tr.push(entry.path());
        } else if name.contains("_Packages.") || name.contains("_Translation-en.") {
            eprintln!("warning: skipping {name}: only lz4 or uncompressed lists are read");
        }
    }
    pk.sort();
    tr.sort();
    ensure!(!pk.is_empty(), "no *_Packages[.lz4] files in {}", dir.display());
    ensure!(!tr.is_empty(), "no *_Translation-en[.lz4] files in {} (fetch with -o Acquire::Languages=en, see --fetch)", dir.display());
    Ok((pk, tr))
}

fn fetch(dir: &Path) -> Result<()> {
    for sub in ["lists/partial", "cache/archives/partial"] {
        let p = dir.join(sub);
        fs::create_dir_all(&p).with_context(|| format!("creating {}", p.display()))?;
    }
    let dir = fs::canonicalize(dir).with_context(|| format!("resolving {}", dir.display()))?;
    let mut cmd = Command::new("apt-get");
    cmd.arg("update")
        .arg("-o")
        .arg(format!("Dir::State::Lists={}", dir.join("lists").display()))
        .arg("-o")
        .arg(format!("Dir::Cache={}", dir.join("cache").display()))
        .arg("-o")
        .arg("Acquire::Languages=en");
    eprintln!("running {cmd:?}");
    let status = cmd.status().context("running apt-get update")?;
    ensure!(status.success(), "apt-get update failed: {status}");
    Ok(())
}

fn write_tsv(path: &Path, examples: &[Example]) -> Result<()> {
    let tmp = path.with_extension("tsv.tmp");
    {
        let f = fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        let mut w = BufWriter::new(f);
        for e in examples {
            writeln!(w, "{}\t{}", e.label, e.text).with_context(|| format!("writing {}", tmp.display()))?;
        }
        w.into_inner().map_err(|e| e.into_error()).and_then(|f| f.sync_all()).with_context(|| format!("writing {}", tmp.display()))?;
    }
    fs::rename(&tmp, path).with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))
}

fn main() -> Result<()> {
    let args = Args::parse();
    if let Some(dir) = &args.fetch {
        fetch(dir)?;
    }
    let lists = match (&args.lists, &args.fetch) {
        (Some(l), _) => l.clone(),
        (None, Some(f)) => f.join("lists"),
        (None, None) => bail!("give --lists DIR (or --fetch DIR)"),
    };
    let (pk_files, tr_files) = find_list_files(&lists)?;

    let mut translations: HashMap<(String, String), String> = HashMap::new();
    for path in &tr_files {
        let stanzas = parse_file(path)?;
        eprintln!("{}: {} translations", path.display(), stanzas.len());
        for s in stanzas {
            let (Some(pkg), Some(md5), Some(desc)) = (s.get("Package"), s.get("Description-md5"), s.get("Description-en")) else {
                bail!("{}: stanza without Package/Description-md5/Description-en", path.display());
            };
            translations.entry((pkg.to_string(), md5.to_string())).or_insert_with(|| desc.to_string());
        }
    }
    let mut packages = Vec::new();
    for path in &pk_files {
        let stanzas = parse_file(path)?;
        eprintln!("{}: {} packages", path.display(), stanzas.len());
        packages.extend(stanzas);
    }

    let (examples, st) = build_examples(&packages, &translations);
    drop(packages);
    ensure!(!examples.is_empty(), "no examples: did the join find nothing?");
    for e in &examples {
        // Invariants of the TSV format.
        ensure!(!e.label.contains(char::is_whitespace), "label {:?} has whitespace", e.label);
        ensure!(!e.text.contains(['\t', '\n', '\r']), "text has tab/newline: {:?}", e.text);
    }

    let n_examples = examples.len();
    let mut per_label: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    let (train, test) = split(examples, args.test_percent);
    for e in &train {
        per_label.entry(e.label.clone()).or_default().0 += 1;
    }
    for e in &test {
        per_label.entry(e.label.clone()).or_default().1 += 1;
    }
    let train_sources: BTreeSet<&str> = train.iter().map(|e| e.source.as_str()).collect();
    let test_sources: BTreeSet<&str> = test.iter().map(|e| e.source.as_str()).collect();
    debug_assert!(train_sources.is_disjoint(&test_sources));

    fs::create_dir_all(&args.out).with_context(|| format!("creating {}", args.out.display()))?;
    write_tsv(&args.out.join("train.tsv"), &train)?;
    write_tsv(&args.out.join("test.tsv"), &test)?;

    let mut tokens = 0usize;
    let mut vocab: HashSet<String> = HashSet::new();
    for e in train.iter().chain(&test) {
        for t in e.text.split_whitespace() {
            tokens += 1;
            vocab.insert(t.to_lowercase());
        }
    }

    println!("label\ttrain\ttest");
    let mut rows: Vec<_> = per_label.iter().collect();
    rows.sort_by(|a, b| (b.1 .0 + b.1 .1).cmp(&(a.1 .0 + a.1 .1)).then(a.0.cmp(b.0)));
    for (label, (tr, te)) in &rows {
        println!("{label}\t{tr}\t{te}");
    }
    let only_test: Vec<&str> = per_label.iter().filter(|(_, c)| c.0 == 0).map(|(l, _)| l.as_str()).collect();
    println!(
        "packages stanzas {} (missing fields {}, same package+md5 again {}, no translation {}, \
         empty {}, duplicate text {})",
        st.packages, st.missing_fields, st.same_package_md5, st.no_translation, st.empty_text, st.duplicate_text
    );
    println!(
        "examples {n_examples}, labels {}, train {} ({} sources), test {} ({} sources), \
         sources {}, tokens/example {:.1}, vocabulary (lowercased whitespace tokens) {}",
        per_label.len(),
        train.len(),
        train_sources.len(),
        test.len(),
        test_sources.len(),
        train_sources.len() + test_sources.len(),
        tokens as f64 / n_examples as f64,
        vocab.len()
    );
    if !only_test.is_empty() {
        println!("warning: labels with no training example: {}", only_test.join(", "));
    }
    println!("wrote {} and {}", args.out.join("train.tsv").display(), args.out.join("test.tsv").display());
    Ok(())
}

// ---------------------------------------------------------------- tests

#[cfg(test)]
mod tests {
    use super::*;

    const PACKAGES: &str = "\
Package: libfoo1
Source: foo (1.2-3)
Version: 1.2-3+b1
Section: libs
Description: foo library
Description-md5: aaa

Package: libfoo-dev
Source: foo
Section: libdevel
Description-md5: bbb
Depends: libfoo1 (= 1.2-3),
 libc6

Package: bar-game
Section: contrib/games
Description-md5: ccc

Package: bar-game
Section: contrib/games
Description-md5: ccc


Package: baz-doc
Source: baz
Section: doc
Description-md5: ddd

Package: qux
Section: utils
Description-md5: eee

Package: nomd5
Section: utils
Description: no md5 here
";

    const TRANSLATIONS: &str = "\
Package: libfoo1
Description-md5: aaa
Description-en: foo library
 Foo does\tthings.
 .
 This package holds   the shared library.

Package: libfoo-dev
Description-md5: bbb
Description-en: foo library - development files
 Headers.

Package: bar-game
Description-md5: ccc
Description-en: a game

Package: baz-doc
Description-md5: ddd
Description-en: foo library
 Foo does things.
 .
 This package holds the shared library.
";

    fn translations() -> HashMap<(String, String), String> {
        parse_deb822(TRANSLATIONS)
            .unwrap()
            .into_iter()
            .map(|s| {
                let k = (s.get("Package").unwrap().into(), s.get("description-MD5").unwrap().into());
                (k, s.get("Description-en").unwrap().to_string())
            })
            .collect()
    }

    #[test]
    fn parses_stanzas_fields_and_continuations() {
        let st = parse_deb822(PACKAGES).unwrap();
        assert_eq!(st.len(), 7);
        assert_eq!(st[0].get("package"), Some("libfoo1"));
        assert_eq!(st[0].get("Source"), Some("foo (1.2-3)"));
        assert_eq!(st[1].get("Depends"), Some("libfoo1 (= 1.2-3),\nlibc6"));
        assert_eq!(st[2].get("Source"), None);
        assert_eq!(st[6].get("Description-md5"), None);
        let tr = parse_deb822(TRANSLATIONS).unwrap();
        assert_eq!(tr[0].get("Description-en"), Some("foo library\nFoo does\tthings.\n.\nThis package holds   the shared library."));
    }

    #[test]
    fn parser_edge_cases() {
        // CRLF, whitespace-only separators, comments, no trailing newline, empty value.
        let st = parse_deb822("# c\r\nA: 1\r\nB:\r\n x\r\n \t \r\n\r\nA:2").unwrap();
        assert_eq!(st.len(), 2);
        assert_eq!(st[0].get("B"), Some("\nx"));
        assert_eq!(st[1].get("A"), Some("2"));
        assert!(parse_deb822("").unwrap().is_empty());
        assert!(parse_deb822("\n\n").unwrap().is_empty());
        let e = parse_deb822("A: 1\nnot a field\n").unwrap_err();
        assert!(e.to_string().contains("line 2"), "{e}");
        assert!(parse_deb822(" leading continuation\n").is_err());
        // A colon inside the value is kept.
        assert_eq!(parse_deb822("Homepage: https://x.org\n").unwrap()[0].get("Homepage"), Some("https://x.org"));
    }

    #[test]
    fn description_and_names() {
        assert_eq!(description_text("short\n line one\n.\n  verbatim\tline \n."), "short line one verbatim line");
        assert_eq!(description_text("only short"), "only short");
        assert_eq!(source_name("foo (1.2-3)"), "foo");
        assert_eq!(source_name("foo"), "foo");
        assert_eq!(section_label("contrib/games"), "games");
        assert_eq!(section_label("non-free/libs"), "libs");
        assert_eq!(section_label("python"), "python");
    }

    #[test]
    fn join_dedupe_and_grouped_split() {
        let pk = parse_deb822(PACKAGES).unwrap();
        let (ex, st) = build_examples(&pk, &translations());
        assert_eq!(st.packages, 7);
        assert_eq!(st.same_package_md5, 1); // bar-game twice
        assert_eq!(st.no_translation, 1); // qux
        assert_eq!(st.missing_fields, 1); // nomd5
        assert_eq!(st.duplicate_text, 1); // baz-doc repeats libfoo1's text
        let got: Vec<(&str, &str, &str)> = ex.iter().map(|e| (e.label.as_str(), e.source.as_str(), e.text.as_str())).collect();
        assert_eq!(
            got,
            vec![
                ("libs", "foo", "foo library Foo does things. This package holds the shared library."),
                ("libdevel", "foo", "foo library - development files Headers."),
                ("games", "bar-game", "a game"),
            ]
        );
        // Grouped: both foo binaries land on the same side, for any percentage.
        for pct in [0, 20, 50, 100] {
            let (tr, te) = split(ex.clone(), pct);
            assert_eq!(tr.len() + te.len(), 3);
            let foo_sides: HashSet<bool> = ex.iter().filter(|e| e.source == "foo").map(|e| is_test_source(&e.source, pct)).collect();
            assert_eq!(foo_sides.len(), 1);
            assert!(tr.iter().all(|e| !te.iter().any(|t| t.source == e.source)));
        }
        let (tr, te) = split(ex.clone(), 0);
        assert_eq!((tr.len(), te.len()), (3, 0));
        let (tr, te) = split(ex, 100);
        assert_eq!((tr.len(), te.len()), (0, 3));
    }

    #[test]
    fn reads_lz4_and_plain_files() {
        let dir = tempfile::tempdir().unwrap();
        let plain = dir.path().join("x_main_i18n_Translation-en");
        fs::write(&plain, TRANSLATIONS).unwrap();
        let lz = dir.path().join("x_main_binary-amd64_Packages.lz4");
        let mut enc = lz4_flex::frame::FrameEncoder::new(Vec::new());
        enc.write_all(PACKAGES.as_bytes()).unwrap();
        fs::write(&lz, enc.finish().unwrap()).unwrap();
        fs::write(dir.path().join("x_InRelease"), "ignored").unwrap();
        let (pk, tr) = find_list_files(dir.path()).unwrap();
        assert_eq!((pk, tr), (vec![lz.clone()], vec![plain.clone()]));
        assert_eq!(read_list_file(&lz).unwrap(), PACKAGES);
        assert_eq!(read_list_file(&plain).unwrap(), TRANSLATIONS);
        assert_eq!(parse_file(&lz).unwrap().len(), 7);
        // Errors name the file.
        fs::write(&plain, "oops\n").unwrap();
        let e = format!("{:#}", parse_file(&plain).unwrap_err());
        assert!(e.contains("x_main_i18n_Translation-en") && e.contains("line 1"), "{e}");
    }

    #[test]
    fn writes_tsv_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("train.tsv");
        let ex = vec![Example { label: "games".into(), text: "a game".into(), source: "g".into() }];
        write_tsv(&p, &ex).unwrap();
        assert_eq!(fs::read_to_string(&p).unwrap(), "games\ta game\n");
        assert!(!dir.path().join("train.tsv.tmp").exists());
    }
}
