//! Measures a child process from outside, as a user waiting for it sees it:
//! wall time from spawn to exit, the bytes it sent to storage
//! (`/proc/<pid>/io`, read while it runs and once more after it exited but
//! before it is reaped), its peak RSS and CPU time (`wait4`'s rusage), and how
//! much of the machine other processes used meanwhile. Linux only.

use std::path::Path;
use std::process::Command;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde::Serialize;

use super::CpuSnapshot;

/// The counters of `/proc/<pid>/io` (bytes).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ProcIo {
    /// Bytes passed to write(2) and friends (page cache included).
    pub wchar: u64,
    pub rchar: u64,
    /// Bytes the process caused to be sent to the storage layer (dirtied page-cache pages).
    pub write_bytes: u64,
    pub read_bytes: u64,
    /// Dirty pages dropped before write-back (e.g. a file truncated or deleted while dirty).
    pub cancelled_write_bytes: u64,
}

impl ProcIo {
    /// Parses the text of `/proc/<pid>/io`; every counter must be present.
    pub fn parse(text: &str) -> Result<ProcIo, String> {
        let get = |key: &str| -> Result<u64, String> {
            let line = text.lines().find(|l| l.split(':').next() == Some(key)).ok_or_else(|| format!("/proc/<pid>/io: no `{key}` line"))?;
            let value = line[key.len() + 1..].trim();
            value.parse().map_err(|_| format!("/proc/<pid>/io: `{key}` is {value:?}, not a byte count"))
        };
        Ok(ProcIo {
            wchar: get("wchar")?,
            rchar: get("rchar")?,
            write_bytes: get("write_bytes")?,
            read_bytes: get("read_bytes")?,
            cancelled_write_bytes: get("cancelled_write_bytes")?,
        })
    }

    pub fn read(pid: u32) -> anyhow::Result<ProcIo> {
        let path = format!("/proc/{pid}/io");
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
        ProcIo::parse(&text).map_err(anyhow::Error::msg)
    }

    /// Bytes that reached (or will reach) storage: written minus cancelled.
    pub fn net_write_bytes(&self) -> u64 {
        self.write_bytes.saturating_sub(self.cancelled_write_bytes)
    }
}

/// What [`measure`] saw of one child process.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ChildMeasurement {
    /// From just before spawn to the moment the child exited.
    pub wall_s: f64,
    /// Exit code, or `None` when a signal ended it (see `signal`).
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    /// The child's I/O counters at exit (itself only: its own children are not included).
    pub io: ProcIo,
    /// ru_maxrss of the child.
    pub peak_rss_bytes: u64,
    pub user_s: f64,
    pub system_s: f64,
    /// Share of the machine's CPU used by processes other than the child and this one.
    pub other_processes_cpu: Option<f64>,
}

impl ChildMeasurement {
    pub fn success(&self) -> bool {
        self.exit_code == Some(0)
    }
}

mod sys {
    //! The three libc calls std does not wrap: waitid without reaping, wait4
    //! with rusage, and the clock-tick rate of /proc/stat. std links libc on Linux.
    use std::ffi::{c_int, c_long};

    pub const P_PID: c_int = 1;
    pub const WEXITED: c_int = 4;
    pub const WNOWAIT: c_int = 0x0100_0000;
    pub const SC_CLK_TCK: c_int = 2;

    #[repr(C)]
    #[derive(Default)]
    pub struct Timeval {
        pub sec: c_long,
        pub usec: c_long,
    }

    /// `struct rusage` of Linux: two timevals, then 14 longs, ru_maxrss (KiB) first.
    #[repr(C)]
    #[derive(Default)]
    pub struct Rusage {
        pub utime: Timeval,
        pub stime: Timeval,
        pub maxrss: c_long,
        pub rest: [c_long; 13],
    }

    /// `siginfo_t` is 128 bytes on Linux; we never read it, only give the kernel room.
    #[repr(C, align(8))]
    pub struct SigInfo(pub [u8; 128]);

    unsafe extern "C" {
        pub fn waitid(idtype: c_int, id: u32, infop: *mut SigInfo, options: c_int) -> c_int;
        pub fn wait4(pid: c_int, status: *mut c_int, options: c_int, rusage: *mut Rusage) -> c_int;
        pub fn sysconf(name: c_int) -> c_long;
    }
}

/// Blocks until `pid` has exited, leaving it unreaped (a zombie), so that
/// `/proc/<pid>/io` can still be read.
fn wait_exited_unreaped(pid: u32) -> std::io::Result<()> {
    loop {
        let mut info = sys::SigInfo([0; 128]);
        // SAFETY: `info` is a live, writable buffer of siginfo_t's size and alignment;
        // waitid only writes into it. WNOWAIT leaves the child for wait4 below.
        let rc = unsafe { sys::waitid(sys::P_PID, pid, &mut info, sys::WEXITED | sys::WNOWAIT) };
        if rc == 0 {
            return Ok(());
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Reaps `pid`; returns its wait status and rusage.
fn reap(pid: u32) -> std::io::Result<(i32, sys::Rusage)> {
    let mut status = 0;
    let mut usage = sys::Rusage::default();
    loop {
        // SAFETY: both pointers are to live, writable values of the types wait4 expects.
        let rc = unsafe { sys::wait4(pid as i32, &mut status, 0, &mut usage) };
        if rc == pid as i32 {
            return Ok((status, usage));
        }
        let e = std::io::Error::last_os_error();
        if rc != -1 || e.kind() != std::io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Clock ticks per second of /proc/stat's counters (USER_HZ).
pub fn clock_ticks_per_second() -> f64 {
    // SAFETY: sysconf takes a plain integer and has no memory effects.
    let hz = unsafe { sys::sysconf(sys::SC_CLK_TCK) };
    if hz > 0 {
        hz as f64
    } else {
        100.0
    }
}

/// Runs `command` to completion and measures it. `on_poll(elapsed)` is called
/// about every `poll` while the child runs (to watch its files); the child's
/// I/O counters are sampled at the same time and once more after it exited.
pub fn measure(command: &mut Command, poll: Duration, mut on_poll: impl FnMut(Duration)) -> anyhow::Result<ChildMeasurement> {
    if !Path::new("/proc/self/io").exists() {
        bail!("measuring a child process needs Linux's /proc/<pid>/io");
    }
    let cpu_start = CpuSnapshot::now();
    let start = Instant::now();
    let child = command.spawn().with_context(|| format!("cannot start {:?}", command.get_program()))?;
    let pid = child.id();
    // A helper thread blocks until the child exits and notes the moment exactly;
    // this thread keeps polling meanwhile.
    let (tx, rx) = mpsc::channel();
    let waiter = std::thread::spawn(move || {
        let r = wait_exited_unreaped(pid);
        let _ = tx.send((Instant::now(), r));
    });
    let mut io = ProcIo::default();
    let exited_at = loop {
        if let Ok(now) = ProcIo::read(pid) {
            io = now;
        }
        on_poll(start.elapsed());
        match rx.recv_timeout(poll) {
            Ok((at, Ok(()))) => break at,
            Ok((_, Err(e))) => return Err(e).with_context(|| format!("waiting for child {pid}")),
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => bail!("the thread waiting for child {pid} died"),
        }
    };
    let _ = waiter.join();
    on_poll(exited_at - start);
    // The zombie still has its counters; they can only have grown since the last sample.
    if let Ok(last) = ProcIo::read(pid) {
        io = last;
    }
    let (status, usage) = reap(pid).with_context(|| format!("reaping child {pid}"))?;
    // `child` was reaped above: dropping it neither waits nor kills.
    drop(child);
    let seconds = |t: &sys::Timeval| t.sec as f64 + t.usec as f64 / 1e6;
    let (user_s, system_s) = (seconds(&usage.utime), seconds(&usage.stime));
    let (exit_code, signal) = if status & 0x7f == 0 { (Some((status >> 8) & 0xff), None) } else { (None, Some(status & 0x7f)) };
    Ok(ChildMeasurement {
        wall_s: (exited_at - start).as_secs_f64(),
        exit_code,
        signal,
        io,
        peak_rss_bytes: usage.maxrss.max(0) as u64 * 1024,
        user_s,
        system_s,
        other_processes_cpu: cpu_start.and_then(|c| c.others_since_excluding((user_s + system_s) * clock_ticks_per_second())),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_io_and_names_what_is_missing() {
        let text = "rchar: 7347008\nwchar: 7340032\nsyscr: 17\nsyscw: 7\nread_bytes: 94208\nwrite_bytes: 7344128\ncancelled_write_bytes: 4096\n";
        let io = ProcIo::parse(text).unwrap();
        assert_eq!(io, ProcIo { wchar: 7340032, rchar: 7347008, write_bytes: 7344128, read_bytes: 94208, cancelled_write_bytes: 4096 });
        assert_eq!(io.net_write_bytes(), 7340032);
        let e = ProcIo::parse("rchar: 1\nwchar: 2\n").unwrap_err();
        assert!(e.contains("write_bytes"), "{e}");
        let e = ProcIo::parse(&text.replace("write_bytes: 7344128", "write_bytes: lots")).unwrap_err();
        assert!(e.contains("`write_bytes` is \"lots\""), "{e}");
    }
}
