//! A memory-mapped table whose file is truncated while predictions run: the
//! process lives, the predictor reports the change, and a fault anywhere else
//! still ends the process as it would without the guard.
#![cfg(target_os = "linux")]

mod common;

use std::os::unix::process::ExitStatusExt;
use std::path::Path;

use sparseburn::serve::predictor::{LoadOptions, Predictor};

fn texts() -> Vec<String> {
    std::fs::read_to_string("examples/data/sotu_era_600.tsv").unwrap().lines().take(50).map(|l| l.split_once('\t').unwrap().1.to_string()).collect()
}

fn load_mapped(bundle: &Path) -> Predictor {
    let predictor = Predictor::load_with(bundle, &LoadOptions { copy_table_max_bytes: 0, ..Default::default() }).unwrap();
    assert!(predictor.table_is_mapped());
    predictor
}

#[test]
fn truncation_under_a_mapped_table_does_not_kill_the_process() {
    let tmp = tempfile::tempdir().unwrap();
    let bundle = common::export_tiny_model(tmp.path()).join("1");
    let predictor = load_mapped(&bundle);
    let texts = texts();
    let before = predictor.predict(&texts, 0);
    assert!(predictor.table_file_changed().is_none());

    // Every page past the first is gone from the file: rows there fault when read.
    let model = bundle.join("model.safetensors");
    let file_len = std::fs::metadata(&model).unwrap().len();
    assert!(file_len > 64 * 4096, "the table must span many pages ({file_len} bytes)");
    std::fs::OpenOptions::new().write(true).open(&model).unwrap().set_len(1000).unwrap();

    // Reads past the end would raise SIGBUS; the guard turns the mapping into zeros.
    let after = predictor.predict(&texts, 0);
    let change = predictor.table_file_changed().expect("the change is reported");
    assert!(change.contains("faulted"), "{change}");
    assert!(after.iter().all(|p| p.scores.iter().all(|s| s.is_finite())));
    assert_ne!(
        before.iter().map(|p| p.scores.clone()).collect::<Vec<_>>(),
        after.iter().map(|p| p.scores.clone()).collect::<Vec<_>>(),
        "the answers computed from zeros differ, which is why callers must discard them"
    );

    // A second mapped predictor of another bundle is unaffected (its own guard, not faulted).
    let other = common::export_tiny_model(&tmp.path().join("other")).join("1");
    let second = load_mapped(&other);
    assert_eq!(second.predict(&texts, 0).len(), texts.len());
    assert!(second.table_file_changed().is_none());
}

const CHILD: &str = "SPARSEBURN_TEST_FOREIGN_SIGBUS";

/// Run as a child by the test below: a SIGBUS in a mapping nobody guards must
/// still end the process, even after the guard's handler was installed.
#[test]
#[ignore = "run as a child process by a_fault_in_an_unguarded_mapping_still_kills_the_process"]
fn foreign_sigbus_child() {
    let Some(dir) = std::env::var_os(CHILD) else { return };
    let dir = Path::new(&dir);
    let _guarded = load_mapped(&dir.join("m/1")); // installs the handler
    let path = dir.join("plain.bin");
    std::fs::write(&path, vec![1u8; 64 * 4096]).unwrap();
    let file = std::fs::File::open(&path).unwrap();
    // SAFETY (test): this mapping is truncated on purpose to provoke the fault.
    let map = unsafe { memmap2::Mmap::map(&file) }.unwrap();
    std::fs::OpenOptions::new().write(true).open(&path).unwrap().set_len(0).unwrap();
    let byte = std::hint::black_box(&map[40 * 4096]);
    println!("read {byte} from a truncated unguarded mapping: the process should have died");
}

#[test]
fn a_fault_in_an_unguarded_mapping_still_kills_the_process() {
    let tmp = tempfile::tempdir().unwrap();
    common::export_tiny_model(tmp.path());
    let status = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["foreign_sigbus_child", "--exact", "--ignored", "--nocapture", "--test-threads=1"])
        .env(CHILD, tmp.path())
        .status()
        .unwrap();
    assert_eq!(status.signal(), Some(libc::SIGBUS), "child: {status:?}");
}
