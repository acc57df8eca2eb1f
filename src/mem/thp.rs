//! How much of this process transparent huge pages back, and what the
//! kernel did to provide them: a table advised with MADV_HUGEPAGE gets 2 MiB
//! pages only where the kernel found (or compacted) free 2 MiB blocks at
//! fault time, so a run's speed on a large table depends on it and a bench
//! reports it. Linux only (`None` elsewhere).

use serde::Serialize;

/// A snapshot of the process's huge-page backing and the system's THP
/// counters; the difference of two says what happened between them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ThpSnapshot {
    /// Anonymous memory of this process mapped by huge pages (AnonHugePages
    /// in /proc/self/smaps_rollup), in bytes.
    pub anon_huge_bytes: u64,
    /// Page faults served with a huge page (thp_fault_alloc in /proc/vmstat; system-wide).
    pub fault_alloc: u64,
    /// Page faults in a huge-page region that fell back to 4 KiB pages (thp_fault_fallback; system-wide).
    pub fault_fallback: u64,
    /// Allocations that stalled to compact memory (compact_stall; system-wide).
    pub compact_stall: u64,
}

impl ThpSnapshot {
    /// Now, or `None` where /proc/self/smaps_rollup cannot be read.
    pub fn now() -> Option<ThpSnapshot> {
        let rollup = std::fs::read_to_string("/proc/self/smaps_rollup").ok()?;
        let vmstat = std::fs::read_to_string("/proc/vmstat").unwrap_or_default();
        Some(ThpSnapshot {
            anon_huge_bytes: kib_field(&rollup, "AnonHugePages:")? * 1024,
            fault_alloc: vmstat_field(&vmstat, "thp_fault_alloc"),
            fault_fallback: vmstat_field(&vmstat, "thp_fault_fallback"),
            compact_stall: vmstat_field(&vmstat, "compact_stall"),
        })
    }

    /// What changed since `before` (taken with [`ThpSnapshot::now`]), if both can be read.
    pub fn gained_since(before: Option<ThpSnapshot>) -> Option<ThpSnapshot> {
        before.zip(ThpSnapshot::now()).map(|(before, after)| after.since(&before))
    }

    /// What changed from `earlier` to `self` (counters never go back; a
    /// shrinking backing counts as 0 gained).
    pub fn since(&self, earlier: &ThpSnapshot) -> ThpSnapshot {
        ThpSnapshot {
            anon_huge_bytes: self.anon_huge_bytes.saturating_sub(earlier.anon_huge_bytes),
            fault_alloc: self.fault_alloc.saturating_sub(earlier.fault_alloc),
            fault_fallback: self.fault_fallback.saturating_sub(earlier.fault_fallback),
            compact_stall: self.compact_stall.saturating_sub(earlier.compact_stall),
        }
    }
}

/// The value of a `Key:   123 kB` line (smaps, meminfo), in KiB.
fn kib_field(text: &str, key: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with(key))?;
    line[key.len()..].trim().trim_end_matches("kB").trim().parse().ok()
}

/// The value of a `name 123` line of /proc/vmstat (0 if absent: older kernels lack some).
fn vmstat_field(text: &str, name: &str) -> u64 {
    text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// AnonHugePages of the rollup equals the sum over every mapping in
    /// /proc/self/smaps, read here by a separate parser.
    #[test]
    #[cfg(target_os = "linux")]
    fn rollup_agrees_with_the_sum_over_mappings() {
        // A huge-page-advised buffer, written whole, so that some huge pages
        // exist where THP is enabled (the sums must agree either way).
        let mut buf = crate::mem::AlignedVec::<u64>::zeroed(8 << 20);
        crate::mem::prefault(&mut buf);
        let smaps_sum = || -> u64 {
            let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
            smaps.lines().filter_map(|l| l.strip_prefix("AnonHugePages:")).map(|v| v.split_whitespace().next().unwrap().parse::<u64>().unwrap() * 1024).sum()
        };
        // Other tests allocate on other threads: compare a rollup read between
        // two equal sums (retrying while the process's mappings change).
        let agreed = (0..20).any(|_| {
            let before = smaps_sum();
            let rollup = ThpSnapshot::now().expect("smaps_rollup on Linux").anon_huge_bytes;
            before == smaps_sum() && rollup == before
        });
        assert!(agreed, "AnonHugePages in smaps_rollup never matched the sum over smaps");
        std::hint::black_box(&buf);
    }

    #[test]
    fn fields_are_read_by_exact_name() {
        let vmstat = "thp_fault_alloc_extra 9\nthp_fault_alloc 42\nthp_fault_fallback 7\n";
        assert_eq!(vmstat_field(vmstat, "thp_fault_alloc"), 42);
        assert_eq!(vmstat_field(vmstat, "thp_fault_fallback"), 7);
        assert_eq!(vmstat_field(vmstat, "compact_stall"), 0);
        assert_eq!(kib_field("Rss:  10 kB\nAnonHugePages:    2048 kB\n", "AnonHugePages:"), Some(2048));
    }
}
