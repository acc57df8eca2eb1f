//! The model options users of fastText expect (issue 17 item 10):
//! `tokenizer.split`, character n-grams (`vocab.minn`/`vocab.maxn`) and
//! `train.label_smoothing`: validated naming the key, saved in the resolved
//! config, recorded in the bundle, and applied the same in training and serving.

use sparseburn::config::Config;
use sparseburn::data::{Featurizer, Split, Tokenizer, Vocab};
use sparseburn::export::{self, ExportOptions, Manifest};
use sparseburn::serve::Predictor;
use sparseburn::train::eval::{logits, Scratch};
use sparseburn::train::{self, checkpoint, run_dir, TrainOptions};

fn quickstart(overrides: &[&str]) -> anyhow::Result<Config> {
    let text = std::fs::read_to_string("configs/quickstart.toml").unwrap();
    let overrides: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
    Config::from_toml(&text, "configs/quickstart.toml", &overrides)
}

fn error(overrides: &[&str]) -> String {
    format!("{:#}", quickstart(overrides).unwrap_err())
}

#[test]
fn bad_values_are_refused_naming_the_key() {
    let e = error(&["vocab.minn=5", "vocab.maxn=3"]);
    assert!(e.starts_with("--set vocab.minn=5: `vocab.minn`: character n-grams need 1 <= vocab.minn <= vocab.maxn"), "{e}");
    assert!(e.contains("minn = 5, maxn = 3"), "{e}");
    // One of the two set alone: the error names the one that was set.
    let e = error(&["vocab.maxn=4"]);
    assert!(e.starts_with("--set vocab.maxn=4: `vocab.maxn`: character n-grams need"), "{e}");
    let e = error(&["vocab.minn=3"]);
    assert!(e.starts_with("--set vocab.minn=3: `vocab.minn`: character n-grams need"), "{e}");
    let e = error(&["vocab.minn=3", "vocab.maxn=6", "vocab.buckets=0"]);
    assert!(e.contains("`vocab.maxn`: character n-grams are hashed into buckets"), "{e}");
    let e = error(&["vocab.minn=1", "vocab.maxn=65"]);
    assert!(e.contains("`vocab.maxn`: 65 is too long"), "{e}");
    for bad in ["1", "1.5", "-0.1", "nan"] {
        let e = error(&[&format!("train.label_smoothing={bad}")]);
        assert!(e.contains("`train.label_smoothing`: must be in [0, 1), got"), "{bad}: {e}");
    }
    let e = error(&["tokenizer.split=words"]);
    assert!(e.starts_with("--set tokenizer.split=words: `tokenizer.split`: unknown variant `words`"), "{e}");
    assert!(e.contains("`alnum`") && e.contains("`whitespace`"), "{e}");
}

#[test]
fn defaults_are_off_and_the_resolved_config_keeps_every_option() {
    let c = quickstart(&[]).unwrap();
    assert_eq!((c.tokenizer.split, c.vocab.minn, c.vocab.maxn, c.train.label_smoothing), (Split::Alnum, 0, 0, 0.0));
    let c = quickstart(&["tokenizer.split=whitespace", "vocab.minn=2", "vocab.maxn=5", "train.label_smoothing=0.1"]).unwrap();
    let saved = c.to_toml();
    let table: toml::Table = toml::from_str(&saved).unwrap();
    assert_eq!(table["tokenizer"]["split"].as_str(), Some("whitespace"));
    assert_eq!(table["vocab"]["minn"].as_integer(), Some(2));
    assert_eq!(table["vocab"]["maxn"].as_integer(), Some(5));
    assert_eq!(table["train"]["label_smoothing"].as_float(), Some(0.1));
    assert_eq!(Config::from_toml(&saved, "saved", &[]).unwrap(), c);
}

/// FNV-1a 64 from the manifest's constants.
fn fnv(d: &export::Definition, s: &str) -> u64 {
    s.bytes().fold(d.hash.offset_basis, |h, b| (h ^ b as u64).wrapping_mul(d.hash.prime))
}

/// Row ids from nothing but the bundle's manifest and vocab.txt, written from
/// the definition's prose (not through the crate's featurizer): fastText's
/// whitespace split, lowercasing, words, word n-grams, then each token's
/// character n-grams of `<token>`.
fn rows_from_manifest(m: &Manifest, vocab: &[String], text: &str) -> Vec<u32> {
    assert_eq!(m.definition.tokens.split, "fasttext_whitespace");
    let d = &m.definition;
    let tokens: Vec<String> = text.split([' ', '\t', '\n', '\r', '\x0b', '\x0c', '\0']).filter(|t| !t.is_empty()).map(str::to_lowercase).collect();
    let (v, buckets) = (m.vocab.size as u64, m.vocab.buckets);
    let row = |h: u64| (v + h % buckets) as u32;
    let mut ids: Vec<u32> = tokens.iter().map(|t| vocab.iter().position(|w| w == t).map_or_else(|| row(fnv(d, t)), |i| i as u32)).collect();
    for n in 2..=m.vocab.ngrams {
        for w in tokens.windows(n) {
            ids.push(row(w.iter().fold(n as u64, |h, t| h.wrapping_mul(d.hash.ngram_multiplier).wrapping_add(fnv(d, t)))));
        }
    }
    for t in &tokens {
        let chars: Vec<char> = format!("<{t}>").chars().collect();
        for start in 0..chars.len() {
            for n in m.vocab.minn..=m.vocab.maxn {
                if start + n > chars.len() || (n == 1 && (start == 0 || start + 1 == chars.len())) {
                    continue;
                }
                ids.push(row(fnv(d, &chars[start..start + n].iter().collect::<String>())));
            }
        }
    }
    ids
}

#[test]
fn a_bundle_trained_with_the_options_round_trips() {
    let tmp = tempfile::tempdir().unwrap();
    let overrides = [
        "logging.quiet=true",
        "logging.tensorboard=false",
        "train.epochs=3",
        "vocab.buckets=20000",
        "checkpoint.every=0",
        "tokenizer.split=whitespace",
        "vocab.minn=2",
        "vocab.maxn=4",
        "train.label_smoothing=0.1",
    ];
    let config = quickstart(&overrides).unwrap();
    let run = tmp.path().join("run");
    train::train(&config, &TrainOptions { run_dir: Some(run.clone()), ..Default::default() }).unwrap();
    assert_eq!(run_dir::read_config(&run).unwrap(), config, "the run directory keeps the resolved config");

    let out = export::export_with(&run, &tmp.path().join("m/1"), &ExportOptions::default()).unwrap();
    let manifest = Manifest::read(&out).unwrap();
    assert_eq!(manifest.tokenizer.split, Split::Whitespace);
    assert_eq!((manifest.vocab.minn, manifest.vocab.maxn), (2, 4));
    let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(json["tokenizer"]["split"], "whitespace");
    assert!(json["definition"]["rows"]["char_ngrams"].as_str().unwrap().contains("vocab.minn..=vocab.maxn"));
    // A bundle from before these options existed still reads, as the old behaviour.
    let mut old = json.clone();
    old["tokenizer"].as_object_mut().unwrap().remove("split");
    old["vocab"].as_object_mut().unwrap().remove("minn");
    old["vocab"].as_object_mut().unwrap().remove("maxn");
    old["definition"]["rows"].as_object_mut().unwrap().remove("char_ngrams");
    let old: Manifest = serde_json::from_value(old).unwrap();
    assert_eq!((old.tokenizer.split, old.vocab.minn, old.vocab.maxn), (Split::Alnum, 0, 0));

    // Serving's logits equal evaluation's, from the run directory's own featurizer.
    let predictor = Predictor::load(&out).unwrap();
    let (table, head) = checkpoint::Checkpoint::open(&checkpoint::latest(&run).unwrap()).unwrap().model().unwrap();
    let vocab = Vocab::read(&run.join("vocab.txt")).unwrap();
    let featurizer = Featurizer::new(Tokenizer::new(config.tokenizer.clone()), vocab.clone(), &config.vocab);
    let mut scratch = Scratch::new(&head);
    let texts = ["The Union, the Constitution (and) C++ — peace!", "  tabs\tand  Ünïcødé 漢字 words  ", "zzqx unseen-words only.", ""];
    for text in texts {
        let ids = featurizer.features(text);
        assert_eq!(ids, rows_from_manifest(&manifest, vocab.words(), text), "rows of {text:?}");
        let z = logits(&table, &head, config.model.pooling, &ids, &mut scratch).to_vec();
        assert_eq!(predictor.logits(text), z, "logits of {text:?}");
    }
    // Character n-grams reach rows: a text of one unseen word has more rows than its one token.
    assert!(featurizer.features("zzqx").len() > 1);
}

#[test]
fn label_smoothing_reaches_the_training_loss() {
    // The same first batch from the same initial weights: only the loss differs.
    let first_loss = |eps: &str| {
        let tmp = tempfile::tempdir().unwrap();
        let o = ["logging.quiet=true", "logging.tensorboard=false", "train.max_steps=1", "checkpoint.every=0", &format!("train.label_smoothing={eps}")];
        let run = tmp.path().join("run");
        train::train(&quickstart(&o).unwrap(), &TrainOptions { run_dir: Some(run.clone()), ..Default::default() }).unwrap();
        let metrics = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
        let row: serde_json::Value = metrics.lines().map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()).find(|r| r["kind"] == "train").unwrap();
        row["loss"].as_f64().unwrap()
    };
    let (plain, smoothed) = (first_loss("0"), first_loss("0.5"));
    // At initialisation the logits are near zero, so the loss is near ln(K) either way,
    // but smoothing mixes in the mean of all classes' -log p, which differs from the target's.
    assert!(plain.is_finite() && smoothed.is_finite());
    assert_ne!(plain, smoothed);
}
