//! Export → bundle → Predictor / stdin loop / HTTP server, checked against
//! training's own evaluation and with real clients.
//!
//! One small run is trained once per test binary (quickstart, 2 epochs, 20k
//! buckets, a checkpoint every 10 steps so two checkpoints differ), under
//! $CARGO_TARGET_TMPDIR; every test writes its bundles into its own temp dir.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use safetensors::tensor::Dtype;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use sparseburn::config::Config;
use sparseburn::data::{DataFormat, Dataset, Featurizer, Tokenizer, Vocab};
use sparseburn::export::{self, ExportOptions, Manifest};
use sparseburn::serve::{LoadOptions, Predictor, Server, ServerConfig};
use sparseburn::train::eval::{log_sum_exp, logits, Scratch};
use sparseburn::train::{self, checkpoint, run_dir, TrainOptions};

// ---------------------------------------------------------------- fixture

struct Fixture {
    _dir: tempfile::TempDir,
    run_dir: PathBuf,
    config: Config,
    /// Checkpoint folders, oldest first (the last is the run's latest).
    checkpoints: Vec<PathBuf>,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let root = Path::new(env!("CARGO_TARGET_TMPDIR"));
        remove_stale_fixtures(root);
        let dir = tempfile::Builder::new().prefix(&format!("export_serve-{}-", std::process::id())).tempdir_in(root).unwrap();
        let overrides: Vec<String> = [
            "logging.quiet=true",
            "logging.tensorboard=false",
            "train.epochs=2",
            "vocab.buckets=20000",
            "checkpoint.every=10",
            "checkpoint.keep=2",
            // Two self-contained checkpoints (no delta chain) for the tests that export an older one.
            "checkpoint.max_chain=0",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let config = Config::load(Path::new("configs/quickstart.toml"), &overrides).unwrap();
        let run_dir = dir.path().join("run");
        train::train(&config, &TrainOptions { run_dir: Some(run_dir.clone()), ..Default::default() }).unwrap();
        let mut checkpoints: Vec<PathBuf> = std::fs::read_dir(checkpoint::checkpoints_dir(&run_dir))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("step-"))
            .collect();
        checkpoints.sort();
        assert_eq!(checkpoints.len(), 2, "expected two checkpoints: {checkpoints:?}");
        assert_eq!(checkpoints[1], checkpoint::latest(&run_dir).unwrap());
        Fixture { _dir: dir, run_dir, config, checkpoints }
    })
}

/// The fixture's TempDir lives in a static and is never dropped: remove those
/// of earlier test processes that are gone.
fn remove_stale_fixtures(root: &Path) {
    let Ok(entries) = std::fs::read_dir(root) else { return };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = name.strip_prefix("export_serve-").and_then(|r| r.split('-').next()) else { continue };
        if Path::new("/proc/self").exists() && !Path::new("/proc").join(pid).exists() {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// Exports the fixture's latest checkpoint (or `ckpt`) to `out`.
fn export_to(out: &Path, ckpt: Option<&Path>) -> PathBuf {
    let options = ExportOptions { checkpoint: ckpt.map(Path::to_path_buf), force: false };
    export::export_with(&fixture().run_dir, out, &options).unwrap()
}

/// Every text of the bundled data set, with its label.
fn examples() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(&fixture().config.data.train).unwrap();
    text.lines().filter_map(|l| l.split_once('\t')).map(|(label, text)| (label.to_string(), text.to_string())).collect()
}

fn sha256_hex(path: &Path) -> String {
    format!("{:x}", Sha256::digest(std::fs::read(path).unwrap()))
}

fn err_of(result: anyhow::Result<Predictor>) -> String {
    format!("{:#}", result.expect_err("load should fail"))
}

fn files_in(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect()
}

// ---------------------------------------------------------------- export

#[test]
fn export_writes_a_self_contained_verified_bundle() {
    let f = fixture();
    let tmp = tempfile::tempdir().unwrap();
    let out = export_to(&tmp.path().join("sotu/1"), None);

    // Exactly the three files, no temp folders left beside the bundle.
    assert_eq!(files_in(&out), BTreeSet::from(["manifest.json".into(), "model.safetensors".into(), "vocab.txt".into()]));
    assert_eq!(files_in(&tmp.path().join("sotu")), BTreeSet::from(["1".to_string()]));

    let manifest: Value = serde_json::from_str(&std::fs::read_to_string(out.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["format_version"], 1);
    assert_eq!(manifest["sparseburn_version"], env!("CARGO_PKG_VERSION"));
    let labels = run_dir::read_labels(&f.run_dir).unwrap();
    assert_eq!(manifest["labels"], json!(labels.names()));
    assert_eq!(manifest["tokenizer"], json!({ "split": "alnum", "lowercase": true, "max_tokens": 1000 }));
    let vocab = Vocab::read(&f.run_dir.join("vocab.txt")).unwrap();
    assert_eq!(manifest["vocab"], json!({ "size": vocab.len(), "buckets": 20000, "ngrams": 2, "minn": 0, "maxn": 0, "min_count": 1, "max_size": 0 }));
    let rows = vocab.len() + 20000;
    assert_eq!(manifest["model"], json!({ "rows": rows, "dim": 64, "pooling": "mean", "head": [{ "input": 64, "output": labels.len() }] }));
    assert_eq!(manifest["source"]["checkpoint"], f.checkpoints[1].file_name().unwrap().to_str().unwrap());
    assert!(manifest["created"].as_str().unwrap().ends_with('Z'));
    // Checksums and sizes, recomputed independently.
    for name in ["model.safetensors", "vocab.txt"] {
        let path = out.join(name);
        assert_eq!(manifest["files"][name]["sha256"], sha256_hex(&path), "{name}");
        assert_eq!(manifest["files"][name]["bytes"], std::fs::metadata(&path).unwrap().len(), "{name}");
    }
    assert_eq!(std::fs::read(out.join("vocab.txt")).unwrap(), std::fs::read(f.run_dir.join("vocab.txt")).unwrap());

    // The weights: plain safetensors, F32, exactly the checkpoint's values, and no optimizer state.
    let bytes = std::fs::read(out.join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let names: BTreeSet<String> = st.names().into_iter().cloned().collect();
    assert_eq!(names, BTreeSet::from(["table".into(), "head.0.weight".into(), "head.0.bias".into()]));
    let (table, head) = checkpoint::Checkpoint::open(&f.checkpoints[1]).unwrap().model().unwrap();
    let t = st.tensor("table").unwrap();
    assert_eq!((t.dtype(), t.shape()), (Dtype::F32, &[rows, 64][..]));
    assert_eq!(t.data(), bytemuck::cast_slice::<f32, u8>(table.as_slice()));
    // The table's data starts 4-byte aligned in the file, so a map of it can be used in place.
    assert_eq!((t.data().as_ptr() as usize - bytes.as_ptr() as usize) % 4, 0);
    let w = st.tensor("head.0.weight").unwrap();
    assert_eq!((w.dtype(), w.shape()), (Dtype::F32, &[64, labels.len()][..]));
    assert_eq!(w.data(), bytemuck::cast_slice::<f32, u8>(&head.layers[0].weight));
    assert_eq!(st.tensor("head.0.bias").unwrap().data(), bytemuck::cast_slice::<f32, u8>(&head.layers[0].bias));

    // A small table is copied into memory; above the threshold it is mapped in place.
    assert!(!Predictor::load(&out).unwrap().table_is_mapped());
    assert!(Predictor::load_with(&out, &LoadOptions { copy_table_max_bytes: 0, ..Default::default() }).unwrap().table_is_mapped());
}

#[test]
fn the_manifest_holds_no_training_paths_and_spells_out_the_computation() {
    let f = fixture();
    let tmp = tempfile::tempdir().unwrap();
    let out = export_to(&tmp.path().join("1"), None);
    let text = std::fs::read_to_string(out.join("manifest.json")).unwrap();
    let manifest: Value = serde_json::from_str(&text).unwrap();
    // No path of the training machine anywhere in it.
    let root = f.run_dir.canonicalize().unwrap();
    for path in [root.as_path(), root.parent().unwrap(), Path::new(env!("CARGO_MANIFEST_DIR"))] {
        assert!(!text.contains(path.to_str().unwrap()), "manifest mentions {}: {text}", path.display());
    }
    assert!(manifest["source"].get("run_dir").is_none(), "{text}");
    assert_eq!(manifest["source"]["run"], "run");
    // The definition a foreign reader follows (examples/python/predict.py).
    let d = &manifest["definition"];
    assert_eq!(d["tokens"]["split"], "alphanumeric_runs");
    assert_eq!(d["hash"]["function"], "fnv1a_64_utf8");
    assert_eq!(d["hash"]["offset_basis"].as_u64(), Some(0xcbf29ce484222325));
    assert_eq!(d["hash"]["prime"].as_u64(), Some(0x100000001b3));
    assert_eq!(d["hash"]["ngram_multiplier"].as_u64(), Some(116049371));
    assert_eq!(d["head"]["weight_layout"], "[in, out]");
    assert_eq!(d["head"]["activation"], "relu");
    assert!(d["pooling"].as_str().unwrap().contains("mean"));
    // Old manifests (before the definition was recorded) still load, with the same definition.
    let mut old: Value = manifest.clone();
    old.as_object_mut().unwrap().remove("definition");
    old["source"].as_object_mut().unwrap().remove("run");
    old["source"]["run_dir"] = json!("/home/someone/runs/x");
    let parsed: Manifest = serde_json::from_value(old).unwrap();
    assert_eq!(serde_json::to_value(&parsed.definition).unwrap(), *d);
}

#[test]
fn concurrent_exports_to_one_folder_never_replace_each_other() {
    let f = fixture();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("sotu/1");
    // Two different checkpoints, so the bundle left shows whose export won.
    let barrier = std::sync::Barrier::new(4);
    let results: Vec<(usize, Result<PathBuf, String>)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..4)
            .map(|i| {
                let (out, barrier) = (&out, &barrier);
                scope.spawn(move || {
                    barrier.wait();
                    let options = ExportOptions { checkpoint: Some(f.checkpoints[i % 2].clone()), force: false };
                    (i, export::export_with(&f.run_dir, out, &options).map_err(|e| format!("{e:#}")))
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let winners: Vec<usize> = results.iter().filter(|(_, r)| r.is_ok()).map(|(i, _)| *i).collect();
    assert_eq!(winners.len(), 1, "exactly one export may create the folder: {results:?}");
    for (_, r) in &results {
        if let Err(e) = r {
            assert!(e.contains("already exists"), "{e}");
        }
    }
    // The folder holds the winner's bundle, complete, and nothing is left beside it.
    let manifest = Manifest::read(&out).unwrap();
    assert_eq!(manifest.source.checkpoint, f.checkpoints[winners[0] % 2].file_name().unwrap().to_str().unwrap());
    assert!(Predictor::load(&out).is_ok());
    assert_eq!(files_in(&tmp.path().join("sotu")), BTreeSet::from(["1".to_string()]));
}

#[test]
fn export_refuses_to_overwrite_unless_forced_and_numbers_versions() {
    let f = fixture();
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().join("models/sotu");
    let v1 = export::export_next_version(&f.run_dir, &base).unwrap();
    let v2 = export::export_next_version(&f.run_dir, &base).unwrap();
    assert_eq!((v1.clone(), v2), (base.join("1"), base.join("2")));

    let before = std::fs::read_to_string(v1.join("manifest.json")).unwrap();
    let err = format!("{:#}", export::export_run(&f.run_dir, &v1).unwrap_err());
    assert!(err.contains("already exists") && err.contains("--force"), "{err}");
    assert_eq!(std::fs::read_to_string(v1.join("manifest.json")).unwrap(), before, "a refused export must not touch the bundle");

    // --force replaces it (here with the older checkpoint) and leaves no temp folders.
    let options = ExportOptions { checkpoint: Some(f.checkpoints[0].clone()), force: true };
    export::export_with(&f.run_dir, &v1, &options).unwrap();
    assert_eq!(Manifest::read(&v1).unwrap().source.checkpoint, f.checkpoints[0].file_name().unwrap().to_str().unwrap());
    assert_eq!(files_in(&base), BTreeSet::from(["1".to_string(), "2".to_string()]));

    // --force never replaces something that is not a bundle (e.g. the base folder by mistake).
    let err = format!("{:#}", export::export_with(&f.run_dir, &base, &ExportOptions { force: true, ..Default::default() }).unwrap_err());
    assert!(err.contains("not a model bundle"), "{err}");
    assert_eq!(files_in(&base), BTreeSet::from(["1".to_string(), "2".to_string()]));

    // A failing export (not a run directory) leaves nothing behind either.
    assert!(export::export_run(tmp.path(), &base.join("3")).is_err());
    assert_eq!(files_in(&base), BTreeSet::from(["1".to_string(), "2".to_string()]));
}

#[test]
fn export_works_from_another_working_directory_via_the_cli() {
    // The run's config names its data relative to the project root; exporting must not need it.
    let f = fixture();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("m/7");
    let status = Command::new(env!("CARGO_BIN_EXE_sparseburn"))
        .args(["export", f.run_dir.to_str().unwrap(), "--out", out.to_str().unwrap()])
        .current_dir(tmp.path())
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    Predictor::load(&out).unwrap();
}

// ---------------------------------------------------------------- predictor

#[test]
fn predictions_equal_training_evaluation() {
    let f = fixture();
    let tmp = tempfile::tempdir().unwrap();
    let predictor = Predictor::load(export_to(&tmp.path().join("1"), None)).unwrap();

    // Evaluation's side, built only from the run directory and checkpoint.
    let config = run_dir::read_config(&f.run_dir).unwrap();
    let (table, head) = checkpoint::Checkpoint::open(&checkpoint::latest(&f.run_dir).unwrap()).unwrap().model().unwrap();
    let vocab = Vocab::read(&f.run_dir.join("vocab.txt")).unwrap();
    let featurizer = Featurizer::new(Tokenizer::new(config.tokenizer.clone()), vocab, &config.vocab);
    let labels = run_dir::read_labels(&f.run_dir).unwrap();
    let mut scratch = Scratch::new(&head);

    let mut texts: Vec<String> = examples().into_iter().map(|(_, t)| t).collect();
    texts.extend(["".to_string(), "   ".into(), "Ünïcødé — 漢字 ✓".into(), "zzqx unseen words only".into(), "word ".repeat(5000)]);
    let all = predictor.predict(&texts, 0);
    assert_eq!(all.len(), texts.len());
    for (text, p) in texts.iter().zip(&all) {
        let z = logits(&table, &head, config.model.pooling, &featurizer.features(text), &mut scratch).to_vec();
        assert_eq!(predictor.logits(text), z, "logits differ for {text:?}");
        // Scores are the softmax of evaluation's logits, exactly.
        let lse = log_sum_exp(&z);
        let expected: BTreeMap<&str, f32> = labels.names().iter().zip(&z).map(|(l, &v)| (l.as_str(), (v as f64 - lse).exp() as f32)).collect();
        let got: BTreeMap<&str, f32> = p.labels.iter().map(String::as_str).zip(p.scores.iter().copied()).collect();
        assert_eq!(got, expected, "probabilities differ for {text:?}");
        // Sorted best first; the first is evaluation's argmax.
        assert!(p.scores.windows(2).all(|w| w[0] >= w[1]));
        let argmax = (0..z.len()).fold(0, |best, i| if z[i] > z[best] { i } else { best });
        assert_eq!(p.labels[0], labels.names()[argmax]);
    }

    // Accuracy over the whole file equals `train::evaluate` on the same file.
    let data = Dataset::encode_file(&config.data.train, DataFormat::Tsv, false, &featurizer, &labels).unwrap();
    let metrics = train::evaluate(&table, &head, config.model.pooling, &data, 2);
    let examples = examples();
    assert_eq!(data.len(), examples.len());
    let top1 = predictor.predict(&examples.iter().map(|(_, t)| t.as_str()).collect::<Vec<_>>(), 2);
    let correct = examples.iter().zip(&top1).filter(|((label, _), p)| &p.labels[0] == label).count();
    let in_top2 = examples.iter().zip(&top1).filter(|((label, _), p)| p.labels.contains(label)).count();
    assert_eq!(correct as f64 / examples.len() as f64, metrics.accuracy);
    assert_eq!(in_top2 as f64 / examples.len() as f64, metrics.top_k_accuracy);
    assert!(metrics.accuracy > 0.3, "the fixture model should have learnt something: {metrics:?}");
}

#[test]
fn predict_handles_any_batch_and_top_k_and_is_shareable_across_threads() {
    let tmp = tempfile::tempdir().unwrap();
    let predictor = std::sync::Arc::new(Predictor::load(export_to(&tmp.path().join("1"), None)).unwrap());
    let classes = predictor.labels().len();
    assert!(predictor.predict::<&str>(&[], 3).is_empty());
    assert_eq!(predictor.predict(&["a"], 1)[0].labels.len(), 1);
    assert_eq!(predictor.predict(&["a"], 0)[0].labels.len(), classes);
    assert_eq!(predictor.predict(&["a"], 1000)[0].labels.len(), classes);
    let total: f32 = predictor.predict(&["the union"], 0)[0].scores.iter().sum();
    assert!((total - 1.0).abs() < 1e-5, "{total}");

    let texts: Vec<String> = examples().into_iter().take(200).map(|(_, t)| t).collect();
    let sequential = predictor.predict(&texts, 3);
    let one_by_one: Vec<_> = texts.iter().map(|t| predictor.predict_one(t, 3)).collect();
    assert_eq!(sequential, one_by_one);
    let handles: Vec<_> = (0..4)
        .map(|i| {
            let (p, texts) = (predictor.clone(), texts.clone());
            std::thread::spawn(move || (0..5).map(|_| p.predict(&texts[i * 10..], 3)).collect::<Vec<_>>())
        })
        .collect();
    for (i, h) in handles.into_iter().enumerate() {
        for batch in h.join().unwrap() {
            assert_eq!(batch, sequential[i * 10..]);
        }
    }
}

#[test]
fn load_rejects_corrupt_truncated_and_newer_bundles() {
    let tmp = tempfile::tempdir().unwrap();
    let fresh = |name: &str| export_to(&tmp.path().join(name), None);

    // One flipped byte in the table.
    let dir = fresh("flip");
    let model = dir.join("model.safetensors");
    let mut bytes = std::fs::read(&model).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    std::fs::write(&model, &bytes).unwrap();
    let err = err_of(Predictor::load(&dir));
    assert!(err.contains("model.safetensors") && err.contains("checksum mismatch"), "{err}");
    // Without hashing the flip goes unseen (documented): the size still matches.
    assert!(Predictor::load_with(&dir, &LoadOptions { verify_checksums: false, ..Default::default() }).is_ok());

    // Truncated: caught by the size check, with or without hashing.
    let dir = fresh("truncated");
    let model = dir.join("model.safetensors");
    let len = std::fs::metadata(&model).unwrap().len();
    std::fs::OpenOptions::new().write(true).open(&model).unwrap().set_len(len - 1000).unwrap();
    for verify in [true, false] {
        let err = err_of(Predictor::load_with(&dir, &LoadOptions { verify_checksums: verify, ..Default::default() }));
        assert!(err.contains("model.safetensors") && err.contains("truncated"), "{err}");
    }

    // Vocabulary edited.
    let dir = fresh("vocab");
    let mut vocab = std::fs::read(dir.join("vocab.txt")).unwrap();
    vocab[0] = if vocab[0] == b'x' { b'y' } else { b'x' };
    std::fs::write(dir.join("vocab.txt"), vocab).unwrap();
    let err = err_of(Predictor::load(&dir));
    assert!(err.contains("vocab.txt") && err.contains("checksum mismatch"), "{err}");

    // A newer format version, and a manifest that is not one.
    let dir = fresh("newer");
    let path = dir.join("manifest.json");
    let mut manifest: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    manifest["format_version"] = json!(2);
    std::fs::write(&path, manifest.to_string()).unwrap();
    let err = err_of(Predictor::load(&dir));
    assert!(err.contains("manifest.json") && err.contains("format version 2 is newer"), "{err}");
    std::fs::write(&path, "{ not json").unwrap();
    let err = err_of(Predictor::load(&dir));
    assert!(err.contains("manifest.json") && err.contains("not valid JSON"), "{err}");

    // A file missing.
    let dir = fresh("missing");
    std::fs::remove_file(dir.join("vocab.txt")).unwrap();
    let err = err_of(Predictor::load(&dir));
    assert!(err.contains("vocab.txt") && err.contains("missing"), "{err}");
    // Not a bundle at all.
    let err = err_of(Predictor::load(tmp.path()));
    assert!(err.contains("manifest.json"), "{err}");
}

// ---------------------------------------------------------------- stdin loop

#[test]
fn predict_loop_answers_each_line_as_a_co_process() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = export_to(&tmp.path().join("1"), None);
    let predictor = Predictor::load(&dir).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_sparseburn"))
        .args(["predict", "--model", dir.to_str().unwrap(), "--top-k", "2", "--max-line-bytes", "100000"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    // One line in, then wait for its answer before the next: only works if each answer is flushed.
    let mut ask = |line: &str| -> Value {
        stdin.write_all(line.as_bytes()).unwrap();
        stdin.write_all(b"\n").unwrap();
        stdin.flush().unwrap();
        let mut answer = String::new();
        stdout.read_line(&mut answer).unwrap();
        serde_json::from_str(&answer).unwrap_or_else(|e| panic!("not JSON: {answer:?}: {e}"))
    };
    // Labels exactly, scores as the f32 they were written from.
    let parsed = |v: &Value| -> (Vec<String>, Vec<f32>) { (serde_json::from_value(v["labels"].clone()).unwrap(), serde_json::from_value(v["scores"].clone()).unwrap()) };
    let expect = |text: &str| {
        let p = predictor.predict_one(text, 2);
        (p.labels, p.scores)
    };

    let text = examples()[0].1.clone();
    assert_eq!(parsed(&ask(&text)), expect(&text));
    let reply = ask(r#"{"text": "the railroads of the west", "id": 7}"#);
    assert_eq!((parsed(&reply), &reply["id"]), (expect("the railroads of the west"), &json!(7)));
    assert!(ask("{not json").get("error").unwrap().as_str().unwrap().contains("malformed JSON"));
    assert!(ask(r#"{"txt": "x"}"#).get("error").unwrap().as_str().unwrap().contains("missing \"text\""));
    assert!(ask(r#"{"text": 5}"#).get("error").is_some());
    assert_eq!(parsed(&ask("")), expect(""));
    // A line over --max-line-bytes is refused by number, without being kept.
    let long = "word ".repeat(40_000);
    let error = ask(&long)["error"].as_str().unwrap().to_string();
    assert!(error.contains("line 7") && error.contains("longer than the limit of 100000 bytes"), "{error}");
    // Still alive after the bad lines.
    assert_eq!(parsed(&ask("communism and the space race")), expect("communism and the space race"));
    drop(stdin);
    assert!(child.wait().unwrap().success());
}

// ---------------------------------------------------------------- HTTP

fn server_config(base: &Path) -> ServerConfig {
    ServerConfig { model_base: base.to_path_buf(), poll_interval: Duration::from_millis(100), ..ServerConfig::default() }
}

fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder().timeout(Duration::from_secs(30)).build().unwrap()
}

fn url(server: &Server, path: &str) -> String {
    format!("http://{}{}", server.addr(), path)
}

/// POSTs `body` to the predict endpoint; returns status and JSON body.
fn post(client: &reqwest::blocking::Client, server: &Server, path: &str, body: impl Into<reqwest::blocking::Body>) -> (u16, Value) {
    let r = client.post(url(server, path)).header("content-type", "application/json").body(body).send().unwrap();
    let status = r.status().as_u16();
    let text = r.text().unwrap();
    (status, serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({status}): {text:?}: {e}")))
}

fn get(client: &reqwest::blocking::Client, server: &Server, path: &str) -> (u16, String) {
    let r = client.get(url(server, path)).send().unwrap();
    (r.status().as_u16(), r.text().unwrap())
}

fn metric(client: &reqwest::blocking::Client, server: &Server, line_prefix: &str) -> f64 {
    let (_, text) = get(client, server, "/metrics");
    text.lines().find_map(|l| l.strip_prefix(line_prefix).map(|v| v.trim().parse().unwrap())).unwrap_or(0.0)
}

fn wait_for(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Opens a predict request whose body is only partly sent, and waits until the
/// server counts it in flight (so it holds a concurrency permit).
fn hold_request(client: &reqwest::blocking::Client, server: &Server) -> TcpStream {
    let before = metric(client, server, "sparseburn_predict_in_flight ");
    let mut stream = TcpStream::connect(server.addr()).unwrap();
    let body = r#"{"instances": ["held"]}"#;
    write!(stream, "POST /v1/models/sotu:predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{}", body.len(), &body[..5]).unwrap();
    stream.flush().unwrap();
    wait_for("the held request to be in flight", Duration::from_secs(10), || metric(client, server, "sparseburn_predict_in_flight ") > before);
    stream
}

fn finish_and_read(mut stream: TcpStream) -> String {
    let body = r#"{"instances": ["held"]}"#;
    let _ = stream.write_all(&body.as_bytes()[5..]);
    read_response(stream)
}

fn read_response(mut stream: TcpStream) -> String {
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    // Read until the headers and Content-Length bytes of body have arrived.
    loop {
        let n = stream.read(&mut buf).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&out).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let len = head.lines().find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse::<usize>().unwrap()));
            if len.is_some_and(|len| body.len() >= len) {
                break;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn http_predicts_like_the_library_and_reports_status_health_and_metrics() {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().join("sotu");
    let dir = export_to(&base.join("1"), None);
    let predictor = Predictor::load(&dir).unwrap();
    let server = Server::start(server_config(&base), "127.0.0.1:0", false).unwrap();
    assert!(server.addr().ip().is_loopback());
    let c = client();

    let texts = ["the railroads and the territories", "communism and the cold war", ""];
    let body = json!({ "instances": [texts[0], { "text": texts[1] }, texts[2]] }).to_string();
    let (status, reply) = post(&c, &server, "/v1/models/sotu:predict", body.clone());
    assert_eq!(status, 200, "{reply}");
    let expected = predictor.predict(&texts, 3);
    let predictions = reply["predictions"].as_array().unwrap();
    assert_eq!(predictions.len(), 3);
    for (got, want) in predictions.iter().zip(&expected) {
        assert_eq!(got["labels"], json!(want.labels));
        let scores: Vec<f32> = serde_json::from_value(got["scores"].clone()).unwrap();
        for (a, b) in scores.iter().zip(&want.scores) {
            assert!((a - b).abs() <= 1e-7 * b.abs().max(1e-30), "{a} vs {b}");
        }
    }
    // Explicit version, top_k, and an empty batch.
    let (status, reply) = post(&c, &server, "/v1/models/sotu/versions/1:predict", json!({ "instances": ["x"], "top_k": 1 }).to_string());
    assert_eq!((status, reply["predictions"][0]["labels"].as_array().unwrap().len()), (200, 1));
    let (status, reply) = post(&c, &server, "/v1/models/sotu:predict", r#"{"instances": []}"#);
    assert_eq!((status, reply), (200, json!({ "predictions": [] })));

    let (status, text) = get(&c, &server, "/v1/models/sotu");
    assert_eq!(status, 200);
    assert_eq!(
        serde_json::from_str::<Value>(&text).unwrap(),
        json!({ "model_version_status": [{ "version": "1", "state": "AVAILABLE", "status": { "error_code": "OK", "error_message": "" } }] })
    );
    let (status, text) = get(&c, &server, "/v1/models/sotu/metadata");
    assert_eq!(status, 200);
    assert_eq!(serde_json::from_str::<Value>(&text).unwrap()["metadata"]["manifest"]["labels"], json!(predictor.labels()));
    let (status, text) = get(&c, &server, "/health");
    assert_eq!((status, serde_json::from_str::<Value>(&text).unwrap()["version"].clone()), (200, json!(1)));

    let (status, metrics) = get(&c, &server, "/metrics");
    assert_eq!(status, 200);
    for needle in [
        "sparseburn_http_requests_total{endpoint=\"predict\",code=\"200\"} 3",
        "sparseburn_predict_request_duration_seconds_bucket{le=\"0.001\"}",
        "sparseburn_predict_request_duration_seconds_bucket{le=\"+Inf\"} 3",
        "sparseburn_predict_request_duration_seconds_count 3",
        "sparseburn_predict_batch_size_bucket{le=\"1\"} 2",
        "sparseburn_predict_batch_size_bucket{le=\"4\"} 3",
        "sparseburn_predict_batch_size_sum 4",
        "sparseburn_predict_instances_total 4",
        "sparseburn_model_version{model=\"sotu\"} 1",
    ] {
        assert!(metrics.contains(needle), "/metrics lacks {needle:?}:\n{metrics}");
    }
    server.shutdown().unwrap();
}

#[test]
fn http_rejects_bad_requests_with_json_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().join("sotu");
    export_to(&base.join("1"), None);
    let config = ServerConfig { max_body_bytes: 2048, max_instances: 4, ..server_config(&base) };
    let server = Server::start(config, "127.0.0.1:0", false).unwrap();
    let c = client();
    let p = "/v1/models/sotu:predict";

    let cases: Vec<(&str, String, u16, &str)> = vec![
        (p, "{not json".into(), 400, "malformed JSON"),
        (p, "".into(), 400, "malformed JSON"),
        (p, "[\"a\"]".into(), 400, "expected a JSON object"),
        (p, r#"{"inputs": ["a"], "instances": ["a"]}"#.into(), 400, "either \"instances\" (row format) or \"inputs\" (columnar format), not both"),
        (p, r#"{"inputs": [["a"]]}"#.into(), 400, "inputs[0] must be a string"),
        (p, r#"{"instances": "a"}"#.into(), 400, "must be a list"),
        (p, r#"{"instances": [["a"]]}"#.into(), 400, "instances[0] must be a string"),
        (p, r#"{"instances": [{"text": 3}]}"#.into(), 400, "instances[0].text must be a string"),
        (p, r#"{"instances": ["a"], "top_k": "x"}"#.into(), 400, "top_k"),
        ("/v1/models/other:predict", r#"{"instances": ["a"]}"#.into(), 404, "model \"other\" not found"),
        ("/v1/models/sotu/versions/9:predict", r#"{"instances": ["a"]}"#.into(), 404, "version 9"),
        ("/v1/models/sotu:classify", r#"{"instances": ["a"]}"#.into(), 404, ":classify is not supported"),
        ("/v1/elsewhere", "{}".into(), 404, "no such endpoint"),
        (p, json!({ "instances": vec!["a"; 5] }).to_string(), 413, "5 instances is more than the limit of 4"),
        (p, json!({ "instances": ["x".repeat(3000)] }).to_string(), 413, "larger than the limit of 2048 bytes"),
    ];
    for (path, body, status, needle) in cases {
        let (got, reply) = post(&c, &server, path, body.clone());
        assert_eq!(got, status, "{path} {body:.80}: {reply}");
        let message = reply["error"].as_str().unwrap_or_else(|| panic!("no error message: {reply}"));
        assert!(message.contains(needle), "{path} {body:.80}: {message:?} should mention {needle:?}");
    }
    let (status, text) = get(&c, &server, "/v1/models/sotu:predict");
    assert_eq!(status, 405, "{text}");
    let (status, text) = get(&c, &server, "/v1/models/other");
    assert_eq!(status, 404, "{text}");
    // Invalid UTF-8 and a lying Content-Length do not hurt the server either.
    let (status, _) = post(&c, &server, p, vec![0xff, 0xfe, b'{']);
    assert_eq!(status, 400);
    let (status, _) = post(&c, &server, p, r#"{"instances": ["still fine"]}"#);
    assert_eq!(status, 200);
    let metrics = get(&c, &server, "/metrics").1;
    assert!(metrics.contains("sparseburn_predict_errors_total{reason=\"bad_request\"} 10"), "{metrics}");
    assert!(metrics.contains("sparseburn_predict_errors_total{reason=\"body_too_large\"} 1"), "{metrics}");
    assert!(metrics.contains("sparseburn_predict_errors_total{reason=\"too_many_instances\"} 1"), "{metrics}");
    assert!(metrics.contains("sparseburn_http_requests_total{endpoint=\"predict\",code=\"413\"} 2"), "{metrics}");
}

#[test]
fn http_refuses_beyond_max_concurrency_and_times_out_slow_requests() {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().join("sotu");
    export_to(&base.join("1"), None);
    let c = client();
    let ok_body = r#"{"instances": ["a"]}"#;

    // One permit: a request holding it makes the next one 429 at once (no queueing).
    // (A long body timeout: the held body must outlast the checks below on a slow machine.)
    let config = ServerConfig { max_concurrency: 1, body_timeout: Duration::from_secs(60), ..server_config(&base) };
    let server = Server::start(config, "127.0.0.1:0", false).unwrap();
    let held = hold_request(&c, &server);
    let started = Instant::now();
    let (status, reply) = post(&c, &server, "/v1/models/sotu:predict", ok_body);
    assert_eq!(status, 429, "{reply}");
    assert!(reply["error"].as_str().unwrap().contains("too many concurrent requests"));
    assert!(started.elapsed() < Duration::from_secs(2), "429 must not wait in a queue");
    // /health and /metrics are not limited.
    assert_eq!(get(&c, &server, "/health").0, 200);
    // The held request completes normally, and the permit is free again.
    let response = finish_and_read(held);
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert_eq!(post(&c, &server, "/v1/models/sotu:predict", ok_body).0, 200);
    assert!(get(&c, &server, "/metrics").1.contains("sparseburn_predict_errors_total{reason=\"overloaded\"} 1"));
    server.shutdown().unwrap();

    // A request that does not complete within the timeout gets 408.
    let config = ServerConfig { request_timeout: Duration::from_millis(300), ..server_config(&base) };
    let server = Server::start(config, "127.0.0.1:0", false).unwrap();
    let held = hold_request(&c, &server);
    let response = read_response(held);
    assert!(response.starts_with("HTTP/1.1 408"), "{response}");
    assert!(response.contains("\"error\":\"request not completed within 300 ms\""), "{response}");
    assert_eq!(metric(&c, &server, "sparseburn_predict_in_flight "), 0.0);
    assert_eq!(post(&c, &server, "/v1/models/sotu:predict", ok_body).0, 200);
    server.shutdown().unwrap();

    // A body that stops arriving releases its permit at the body timeout, long
    // before the request timeout: the next request is admitted.
    let config = ServerConfig { max_concurrency: 1, body_timeout: Duration::from_millis(200), request_timeout: Duration::from_secs(30), ..server_config(&base) };
    let server = Server::start(config, "127.0.0.1:0", false).unwrap();
    let started = Instant::now();
    let held = hold_request(&c, &server);
    let response = read_response(held);
    assert!(response.starts_with("HTTP/1.1 408"), "{response}");
    assert!(response.contains("\"error\":\"request body not received within 200 ms\""), "{response}");
    assert!(started.elapsed() < Duration::from_secs(10), "answered after {:?}, not at the body timeout", started.elapsed());
    assert_eq!(metric(&c, &server, "sparseburn_predict_in_flight "), 0.0);
    assert_eq!(post(&c, &server, "/v1/models/sotu:predict", ok_body).0, 200);
    assert!(get(&c, &server, "/metrics").1.contains("sparseburn_predict_errors_total{reason=\"body_timeout\"} 1"));
}

#[test]
fn http_serves_concurrent_clients() {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().join("sotu");
    let predictor = Predictor::load(export_to(&base.join("1"), None)).unwrap();
    let server = Server::start(ServerConfig { inline_max_instances: 4, ..server_config(&base) }, "127.0.0.1:0", false).unwrap();
    let texts: Vec<String> = examples().into_iter().map(|(_, t)| t.chars().take(300).collect()).collect();
    let expected = predictor.predict(&texts, 3);
    std::thread::scope(|s| {
        for t in 0..8 {
            let (server, texts, expected) = (&server, &texts, &expected);
            s.spawn(move || {
                let c = client();
                for i in 0..40 {
                    let start = (t * 40 + i) * 7 % (texts.len() - 10);
                    let n = 1 + (t + i) % 10; // batches of 1..=10: up to 4 inline, larger on the blocking pool
                    let (status, reply) = post(&c, server, "/v1/models/sotu:predict", json!({ "instances": &texts[start..start + n] }).to_string());
                    assert_eq!(status, 200, "{reply}");
                    let labels: Vec<Value> = reply["predictions"].as_array().unwrap().iter().map(|p| p["labels"].clone()).collect();
                    let want: Vec<Value> = expected[start..start + n].iter().map(|p| json!(p.labels)).collect();
                    assert_eq!(labels, want);
                }
            });
        }
    });
    let c = client();
    assert_eq!(metric(&c, &server, "sparseburn_http_requests_total{endpoint=\"predict\",code=\"200\"} "), 320.0);
}

#[test]
fn http_hot_reloads_new_versions_and_keeps_serving_through_bad_ones() {
    let f = fixture();
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().join("sotu");
    std::fs::create_dir_all(&base).unwrap();
    // Nothing to serve yet: up, but not healthy.
    let server = Server::start(server_config(&base), "127.0.0.1:0", false).unwrap();
    let c = client();
    assert_eq!(get(&c, &server, "/health").0, 503);
    assert_eq!(post(&c, &server, "/v1/models/sotu:predict", r#"{"instances": ["a"]}"#).0, 503);
    assert_eq!(get(&c, &server, "/v1/models/sotu").0, 404);

    let text = "the railroads and the territories of the west";
    let v1 = Predictor::load(export_to(&base.join("1"), Some(&f.checkpoints[0]))).unwrap().predict_one(text, 0);
    let version = |c: &reqwest::blocking::Client| -> String {
        let (_, body) = get(c, &server, "/v1/models/sotu");
        serde_json::from_str::<Value>(&body)
            .ok()
            .and_then(|v| v["model_version_status"].as_array()?.iter().find(|s| s["state"] == "AVAILABLE").map(|s| s["version"].as_str().unwrap().to_string()))
            .unwrap_or_default()
    };
    wait_for("version 1", Duration::from_secs(10), || version(&c) == "1");
    assert_eq!(get(&c, &server, "/health").0, 200);
    let scores = |c: &reqwest::blocking::Client| post(c, &server, "/v1/models/sotu:predict", json!({ "instances": [text], "top_k": 0 }).to_string()).1["predictions"][0].clone();
    assert_eq!(scores(&c)["labels"], json!(v1.labels));

    // Version 2 (a later checkpoint, so different predictions) appears: swapped in without a restart.
    let v2 = Predictor::load(export_to(&base.join("2"), Some(&f.checkpoints[1]))).unwrap().predict_one(text, 0);
    assert_ne!(v1.scores, v2.scores);
    wait_for("version 2", Duration::from_secs(10), || version(&c) == "2");
    let got: Vec<f32> = serde_json::from_value(scores(&c)["scores"].clone()).unwrap();
    assert!(got.iter().zip(&v2.scores).all(|(a, b)| (a - b).abs() <= 1e-6), "{got:?} vs {:?}", v2.scores);

    // A corrupt version 3 is logged and skipped: version 2 keeps serving, the status says why.
    let v3 = export_to(&tmp.path().join("staging3"), None);
    let mut bytes = std::fs::read(v3.join("model.safetensors")).unwrap();
    let n = bytes.len();
    bytes[n - 3] ^= 1;
    std::fs::write(v3.join("model.safetensors"), bytes).unwrap();
    std::fs::rename(&v3, base.join("3")).unwrap();
    wait_for("version 3 to fail", Duration::from_secs(10), || get(&c, &server, "/v1/models/sotu").1.contains("\"END\""));
    let (_, status) = get(&c, &server, "/v1/models/sotu");
    let status: Value = serde_json::from_str(&status).unwrap();
    let list = status["model_version_status"].as_array().unwrap();
    assert_eq!((list[0]["version"].as_str(), list[0]["state"].as_str()), (Some("3"), Some("END")));
    assert!(list[0]["status"]["error_message"].as_str().unwrap().contains("model.safetensors: checksum mismatch"), "{status}");
    assert_eq!((list[1]["version"].as_str(), list[1]["state"].as_str()), (Some("2"), Some("AVAILABLE")));
    assert_eq!(server.version(), Some(2));
    assert_eq!(post(&c, &server, "/v1/models/sotu:predict", r#"{"instances": ["a"]}"#).0, 200);
    assert!(metric(&c, &server, "sparseburn_model_load_failures_total ") >= 1.0);
    assert_eq!(metric(&c, &server, "sparseburn_model_version{model=\"sotu\"} "), 2.0);

    // Replacing version 3 with a good bundle is picked up (its folder changed).
    std::fs::remove_dir_all(base.join("3")).unwrap();
    export_to(&base.join("3"), None);
    wait_for("version 3", Duration::from_secs(10), || version(&c) == "3");
    // Removing the served version falls back to the highest remaining one.
    std::fs::remove_dir_all(base.join("3")).unwrap();
    wait_for("fallback to version 2", Duration::from_secs(10), || version(&c) == "2");
}

#[test]
fn http_shutdown_finishes_in_flight_requests() {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().join("sotu");
    export_to(&base.join("1"), None);
    let server = Server::start(server_config(&base), "127.0.0.1:0", false).unwrap();
    let c = client();
    let addr = server.addr();
    let held = hold_request(&c, &server);
    let stopper = std::thread::spawn(move || server.shutdown());
    std::thread::sleep(Duration::from_millis(200));
    assert!(!stopper.is_finished(), "shutdown must wait for the in-flight request");
    let response = finish_and_read(held);
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    stopper.join().unwrap().unwrap();
    assert!(TcpStream::connect(addr).is_err(), "the listener is closed after shutdown");
}

#[test]
fn http_accepts_tf_servings_columnar_inputs() {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().join("sotu");
    export_to(&base.join("1"), None);
    let server = Server::start(server_config(&base), "127.0.0.1:0", false).unwrap();
    let c = client();
    let texts = ["the war in europe", "we must balance the budget", ""];
    let (status, rows) = post(&c, &server, "/v1/models/sotu:predict", json!({ "instances": texts, "top_k": 2 }).to_string());
    assert_eq!(status, 200, "{rows}");
    for body in [json!({ "inputs": texts, "top_k": 2 }), json!({ "inputs": { "text": texts }, "top_k": 2 })] {
        let (status, cols) = post(&c, &server, "/v1/models/sotu:predict", body.to_string());
        assert_eq!(status, 200, "{cols}");
        // Columnar in, columnar out: each output batched over the inputs, in input order.
        for (i, row) in rows["predictions"].as_array().unwrap().iter().enumerate() {
            assert_eq!(cols["outputs"]["labels"][i], row["labels"], "{cols}");
            assert_eq!(cols["outputs"]["scores"][i], row["scores"], "{cols}");
        }
        assert_eq!(cols["outputs"]["labels"].as_array().unwrap().len(), texts.len());
    }
    let (status, reply) = post(&c, &server, "/v1/models/sotu:predict", json!({ "instances": ["a"], "inputs": ["a"] }).to_string());
    assert_eq!(status, 400, "{reply}");
    assert!(reply["error"].as_str().unwrap().contains("not both"), "{reply}");
    server.shutdown().unwrap();
}

#[test]
fn a_client_sending_a_big_body_at_the_concurrency_limit_reads_its_429() {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().join("sotu");
    export_to(&base.join("1"), None);
    let c = client();
    let config = ServerConfig { max_concurrency: 1, body_timeout: Duration::from_secs(60), ..server_config(&base) };
    let server = Server::start(config, "127.0.0.1:0", false).unwrap();
    let held = hold_request(&c, &server);
    // 1 MB of instances, under the 4 MiB body limit: written in full, then answered.
    let body = json!({ "instances": vec!["the war in europe and the budget"; 30_000] }).to_string();
    assert!(body.len() > 1_000_000);
    let mut stream = TcpStream::connect(server.addr()).unwrap();
    stream.set_write_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(stream, "POST /v1/models/sotu:predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n", body.len()).unwrap();
    stream.write_all(body.as_bytes()).expect("the whole body is accepted, not cut off by a closed connection");
    let response = read_response(stream);
    assert!(response.starts_with("HTTP/1.1 429"), "{response}");
    assert!(response.contains("too many concurrent requests"), "{response}");
    assert!(finish_and_read(held).starts_with("HTTP/1.1 200"));
    server.shutdown().unwrap();
}

/// Writes `bytes` over `path` at `offset` in place (same inode, no truncation).
fn overwrite_in_place(path: &Path, offset: u64, bytes: &[u8]) {
    use std::os::unix::fs::FileExt;
    let file = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    file.write_all_at(bytes, offset).unwrap();
    file.sync_all().unwrap();
}

/// The byte range of the table's data in a bundle's model file.
fn table_range(model: &Path) -> std::ops::Range<u64> {
    let bytes = std::fs::read(model).unwrap();
    let header = u64::from_le_bytes(bytes[..8].try_into().unwrap());
    let meta: Value = serde_json::from_slice(&bytes[8..8 + header as usize]).unwrap();
    let offsets = &meta["table"]["data_offsets"];
    let start = 8 + header + offsets[0].as_u64().unwrap();
    start..8 + header + offsets[1].as_u64().unwrap()
}

#[test]
fn serving_survives_bundle_files_changed_in_place() {
    let text = "the war in europe and the budget";
    let body = json!({ "instances": [text], "top_k": 0 }).to_string();
    let c = client();

    // A table copied into memory: truncation and a same-size overwrite change nothing served.
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().join("sotu");
    let dir = export_to(&base.join("1"), None);
    let model = dir.join("model.safetensors");
    let want = Predictor::load(&dir).unwrap().predict_one(text, 0);
    let server = Server::start(server_config(&base), "127.0.0.1:0", false).unwrap();
    let (status, before) = post(&c, &server, "/v1/models/sotu:predict", body.clone());
    assert_eq!(status, 200);
    assert_eq!(before["predictions"][0]["labels"], json!(want.labels));
    let range = table_range(&model);
    overwrite_in_place(&model, range.start, &vec![0x7f; (range.end - range.start) as usize]);
    server.poll_now();
    let (status, after) = post(&c, &server, "/v1/models/sotu:predict", body.clone());
    assert_eq!((status, &after), (200, &before), "a same-size overwrite must not change answers");
    std::fs::OpenOptions::new().write(true).open(&model).unwrap().set_len(1000).unwrap();
    server.poll_now();
    for _ in 0..3 {
        let (status, after) = post(&c, &server, "/v1/models/sotu:predict", body.clone());
        assert_eq!((status, &after), (200, &before), "after truncation");
    }
    assert_eq!(server.version(), Some(1), "the verified copy keeps serving");
    server.shutdown().unwrap();

    // A memory-mapped table: a change in place unloads it (503), the process lives,
    // and the next good version is served.
    for change in ["overwrite", "truncate"] {
        let tmp = tempfile::tempdir().unwrap();
        let base = tmp.path().join("sotu");
        let dir = export_to(&base.join("1"), None);
        let model = dir.join("model.safetensors");
        // A long poll interval: the request itself must notice the change.
        let config = ServerConfig { copy_table_max_bytes: 0, poll_interval: Duration::from_secs(3600), ..server_config(&base) };
        let server = Server::start(config, "127.0.0.1:0", false).unwrap();
        assert_eq!(post(&c, &server, "/v1/models/sotu:predict", body.clone()), (200, before.clone()));
        let range = table_range(&model);
        match change {
            "overwrite" => overwrite_in_place(&model, range.start, &vec![0x7f; (range.end - range.start) as usize]),
            _ => std::fs::OpenOptions::new().write(true).open(&model).unwrap().set_len(1000).unwrap(),
        }
        let (status, reply) = post(&c, &server, "/v1/models/sotu:predict", body.clone());
        assert_eq!(status, 503, "{change}: {reply}");
        assert!(reply["error"].as_str().unwrap().contains("changed on disk"), "{reply}");
        assert_eq!(server.version(), None, "{change}: unloaded");
        assert_eq!(get(&c, &server, "/health").0, 503);
        // Polling tries the changed version (it no longer verifies) and serves nothing from it.
        assert_eq!(server.poll_now(), None);
        assert_eq!(post(&c, &server, "/v1/models/sotu:predict", body.clone()).0, 503);
        export_to(&base.join("2"), None);
        assert_eq!(server.poll_now(), Some(2));
        assert_eq!(post(&c, &server, "/v1/models/sotu:predict", body.clone()), (200, before.clone()));
        server.shutdown().unwrap();
    }
}
