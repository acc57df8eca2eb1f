//! `sparseburn bench e2e` and the child-process measurement under it, checked
//! against what is known independently: the bytes `dd` was told to write (and
//! the file read back), the buffer it had to hold, and the run's own files.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use sparseburn::bench::measure;

/// A folder on the target's disk: write_bytes is 0 on tmpfs, which /tmp may be.
fn disk_dir(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn measures_bytes_written_and_peak_rss_of_a_child() {
    let dir = disk_dir("measure-dd");
    let out = dir.join("out.bin");
    const MIB: u64 = 1 << 20;
    // One 48 MiB block: dd holds the whole block in memory, writes it once and fsyncs.
    let mut dd = Command::new("dd");
    dd.args(["if=/dev/zero", &format!("of={}", out.display()), "bs=48M", "count=1", "conv=fsync", "status=none"]);
    let mut polls = 0;
    let m = measure(&mut dd, Duration::from_millis(5), |_| polls += 1).unwrap();
    assert_eq!(m.exit_code, Some(0), "{m:?}");
    assert!(polls >= 2, "polled during the run and once after it: {polls}");

    let written = std::fs::read(&out).unwrap();
    assert_eq!(written.len() as u64, 48 * MIB);
    assert!(written.iter().all(|&b| b == 0));
    // Through write(2): exactly the file. To storage: the file, plus at most some metadata.
    assert_eq!(m.io.wchar, 48 * MIB, "{m:?}");
    assert!(m.io.write_bytes >= 48 * MIB && m.io.write_bytes <= 49 * MIB, "write_bytes {} for a 48 MiB file", m.io.write_bytes);
    assert!(m.peak_rss_bytes >= 48 * MIB && m.peak_rss_bytes < 200 * MIB, "peak RSS {} with a 48 MiB buffer", m.peak_rss_bytes);
    assert!(m.wall_s > 0.0 && m.user_s + m.system_s <= m.wall_s * 2.0 + 0.1, "{m:?}");
}

#[test]
fn reports_exit_code_and_signal() {
    let m = measure(Command::new("sh").args(["-c", "exit 3"]), Duration::from_millis(5), |_| {}).unwrap();
    assert_eq!((m.exit_code, m.signal), (Some(3), None));
    let m = measure(Command::new("sh").args(["-c", "kill -9 $$"]), Duration::from_millis(5), |_| {}).unwrap();
    assert_eq!((m.exit_code, m.signal), (None, Some(9)));
}

#[test]
fn e2e_reports_a_quickstart_run() {
    let dir = disk_dir("e2e-quickstart");
    let json = dir.join("e2e.json");
    let root = env!("CARGO_MANIFEST_DIR");
    let status = Command::new(env!("CARGO_BIN_EXE_sparseburn"))
        .current_dir(root)
        .args(["bench", "e2e", "configs/quickstart.toml", "--set", "train.epochs=2", "--set", "checkpoint.every=10", "--set", "logging.tensorboard=false"])
        .arg("--work-dir")
        .arg(&dir)
        .arg("--json")
        .arg(&json)
        .status()
        .unwrap();
    assert!(status.success());
    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let run = &report["runs"][0];
    let p = &run["process"];
    assert_eq!(p["exit_code"], 0);
    // The child wrote every checkpoint file we find afterwards (and the removed older ones).
    let ckpt = run["checkpoint_dir_bytes"].as_u64().unwrap();
    assert!(ckpt > 0);
    assert!(p["io"]["write_bytes"].as_u64().unwrap() >= ckpt, "{run}");
    let acc = run["accuracy"].as_f64().unwrap();
    assert!(acc > 0.2 && acc <= 1.0, "{acc}");
    let wall = p["wall_s"].as_f64().unwrap();
    let loop_s = run["loop_s"].as_f64().unwrap();
    assert!(loop_s > 0.0 && loop_s < wall, "loop {loop_s} within wall {wall}");
    let first = run["time_to_first_step_s"].as_f64().unwrap();
    assert!(first > 0.0 && first < wall, "first step {first} within wall {wall}");
    for w in run["observed"]["checkpoint_writes"].as_array().unwrap() {
        let (a, b) = (w[0].as_f64().unwrap(), w[1].as_f64().unwrap());
        assert!(0.0 <= a && a <= b && b <= wall, "staging period {w} within the run");
    }
    // The run folder was removed (no --keep).
    assert!(std::fs::read_dir(&dir).unwrap().flatten().all(|e| !e.file_name().to_string_lossy().starts_with(".bench-e2e-")));
}
