//! Host-side plans for the device table's segment sums.
//!
//! Both the forward (rows → bags) and the backward (occurrence gradients →
//! unique rows) are *segment sums*: `out[s] = Σ_{i ∈ s} w_i · src[idx_i]`, where
//! the host already knows every index (it has the ids). The host turns that
//! into a fixed sequence of device ops once per batch; the device only runs
//! gathers, element-wise products and sums over a fixed-width axis.

use serde::{Deserialize, Serialize};

/// How the device adds up the rows of one segment (a bag in the forward, a
/// unique row in the backward).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum SegmentReduce {
    /// One `select_assign(.., IndexingUpdateOp::Add)` of every item into its
    /// segment, in item order: exactly the host path's order of summation, so
    /// on a CPU backend it reproduces the host numbers bit for bit. On CubeCL
    /// backends (CUDA, WGPU) Burn 0.21 runs that op with one thread per column
    /// looping over all items (burn-cubecl-0.21.0/src/kernel/index/select_assign.rs),
    /// i.e. `dim` threads, serial in the number of ids: use `Tree` there.
    Sequential,
    /// A chunked reduction tree: each level gathers up to `width` items of a
    /// segment into one row of a `[chunks, w, dim]` tensor (`select`) and sums
    /// over the middle axis (`sum_dim`), so every op is parallel over ids × dim
    /// and the depth is ⌈log_width(longest segment)⌉. Chunks are bucketed by
    /// power-of-two width, so padding at most doubles the gathered rows.
    /// Deterministic; sums in a different order from the host (see the tests
    /// for the resulting tolerance).
    Tree { width: usize },
}

impl Default for SegmentReduce {
    fn default() -> Self {
        SegmentReduce::Tree { width: DEFAULT_TREE_WIDTH }
    }
}

/// Default chunk width of [`SegmentReduce::Tree`].
pub const DEFAULT_TREE_WIDTH: usize = 32;

impl SegmentReduce {
    pub(crate) fn validate(self) {
        if let SegmentReduce::Tree { width } = self {
            assert!(width >= 2, "SegmentReduce::Tree width must be at least 2, got {width}");
        }
    }
}

/// One gather-and-sum over chunks of the same width.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Bucket {
    /// Items per chunk (1 = a plain gather, no sum).
    pub width: usize,
    pub chunks: usize,
    /// `chunks × width` row indices into the level's input.
    pub idx: Vec<i32>,
    /// Per-slot factors (`chunks × width`), only where some differ from 1
    /// (level 0 with weights, or padding that points at a real row).
    pub weights: Option<Vec<f32>>,
}

/// One level of the tree: its output is the buckets' results concatenated in
/// order (plus a zero row when the next level pads with it).
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Level {
    pub buckets: Vec<Bucket>,
    /// Append one zero row after the buckets' results (the next level's padding).
    pub zero_row: bool,
    /// Rows produced by the buckets (without the zero row).
    pub rows: usize,
}

/// A whole segment sum: run the levels in order on the source rows, then
/// gather `output` (segment → row of the last level), unless it is the identity.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct TreePlan {
    pub levels: Vec<Level>,
    pub output: Option<Vec<i32>>,
    pub segments: usize,
}

/// Widths of the buckets, ascending: 1, 2, 4, … (below `max_width`), then `max_width`.
fn bucket_widths(max_width: usize) -> Vec<usize> {
    let mut w = vec![1];
    let mut p = 2;
    while p < max_width {
        w.push(p);
        p *= 2;
    }
    w.push(max_width);
    w
}

/// Index into [`bucket_widths`] of the smallest width holding `k` items.
fn bucket_of(widths: &[usize], k: usize) -> usize {
    widths.iter().position(|&w| w >= k).expect("chunk no wider than max_width")
}

/// Plans `out[s] = Σ_{i ∈ offsets[s]..offsets[s+1]} weights[i] · source[src[i]]`.
/// Every segment must be non-empty. Items of a segment are summed in chunks
/// of consecutive items, each chunk in item order.
pub(crate) fn plan_tree(offsets: &[usize], src: &[u32], weights: Option<&[f32]>, max_width: usize) -> TreePlan {
    assert!(max_width >= 2, "tree width must be at least 2");
    assert_eq!(*offsets.last().expect("offsets start at 0"), src.len());
    if let Some(w) = weights {
        assert_eq!(w.len(), src.len());
    }
    let segments = offsets.len() - 1;
    debug_assert!(offsets.windows(2).all(|o| o[1] > o[0]), "segments must be non-empty");
    let widths = bucket_widths(max_width);

    let mut levels: Vec<Level> = Vec::new();
    let mut offs = offsets.to_vec();
    let mut items: Vec<u32> = src.to_vec();
    loop {
        let first = levels.is_empty();
        // The previous level's zero row sits right after its rows.
        let zero_row = levels.last().map_or(0, |l| l.rows);
        let mut idx: Vec<Vec<i32>> = vec![Vec::new(); widths.len()];
        let mut wts: Vec<Vec<f32>> = vec![Vec::new(); widths.len()];
        let mut chunks = vec![0usize; widths.len()];
        let mut padded = vec![false; widths.len()];
        // (bucket, chunk within bucket) of every chunk, in segment order.
        let mut chunk_ref: Vec<(usize, usize)> = Vec::new();
        let mut next_offs = Vec::with_capacity(segments + 1);
        next_offs.push(0);
        for s in 0..segments {
            let (start, end) = (offs[s], offs[s + 1]);
            let mut c = start;
            while c < end {
                let e = (c + max_width).min(end);
                let b = bucket_of(&widths, e - c);
                for i in c..e {
                    idx[b].push(items[i] as i32);
                    wts[b].push(if first { weights.map_or(1.0, |w| w[i]) } else { 1.0 });
                }
                for _ in (e - c)..widths[b] {
                    padded[b] = true;
                    if first {
                        // Level 0 reads the caller's rows, which have no zero row:
                        // pad with the chunk's first row, weighted 0.
                        idx[b].push(items[c] as i32);
                        wts[b].push(0.0);
                    } else {
                        idx[b].push(zero_row as i32);
                        wts[b].push(1.0);
                    }
                }
                chunk_ref.push((b, chunks[b]));
                chunks[b] += 1;
                c = e;
            }
            next_offs.push(chunk_ref.len());
        }
        if !first && padded.iter().any(|&p| p) {
            levels.last_mut().expect("not the first level").zero_row = true;
        }

        let mut base = vec![0usize; widths.len()];
        let mut rows = 0;
        for b in 0..widths.len() {
            base[b] = rows;
            rows += chunks[b];
        }
        let positions: Vec<u32> = chunk_ref.iter().map(|&(b, k)| (base[b] + k) as u32).collect();
        let buckets = (0..widths.len())
            .filter(|&b| chunks[b] > 0)
            .map(|b| {
                let needs_weights = first && (padded[b] || weights.is_some());
                Bucket { width: widths[b], chunks: chunks[b], idx: std::mem::take(&mut idx[b]), weights: needs_weights.then(|| std::mem::take(&mut wts[b])) }
            })
            .collect();
        levels.push(Level { buckets, zero_row: false, rows });

        if chunk_ref.len() == segments {
            let identity = positions.iter().enumerate().all(|(s, &p)| p as usize == s);
            let output = (!identity).then(|| positions.iter().map(|&p| p as i32).collect());
            return TreePlan { levels, output, segments };
        }
        items = positions;
        offs = next_offs;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs a plan on the host in f64, exactly as the device executor does.
    fn run(plan: &TreePlan, source: &[Vec<f64>]) -> Vec<Vec<f64>> {
        let dim = source[0].len();
        let mut cur: Vec<Vec<f64>> = source.to_vec();
        for level in &plan.levels {
            let mut next = Vec::new();
            for b in &level.buckets {
                for c in 0..b.chunks {
                    let mut acc = vec![0.0; dim];
                    for j in 0..b.width {
                        let k = c * b.width + j;
                        let w = b.weights.as_ref().map_or(1.0, |w| w[k] as f64);
                        let row = &cur[b.idx[k] as usize];
                        acc.iter_mut().zip(row).for_each(|(a, r)| *a += w * r);
                    }
                    next.push(acc);
                }
            }
            assert_eq!(next.len(), level.rows);
            if level.zero_row {
                next.push(vec![0.0; dim]);
            }
            cur = next;
        }
        match &plan.output {
            None => cur,
            Some(o) => o.iter().map(|&p| cur[p as usize].clone()).collect(),
        }
    }

    #[test]
    fn tree_matches_direct_sums_for_every_width() {
        // Segment lengths chosen to hit single items, exact widths, padding and several levels.
        let lens = [1usize, 2, 3, 1, 7, 16, 17, 1, 100, 33, 4, 1, 1, 250];
        let n_src = 37;
        let source: Vec<Vec<f64>> = (0..n_src).map(|i| vec![i as f64 + 1.0, (i * i % 13) as f64 - 6.0]).collect();
        let mut offsets = vec![0];
        let mut src = Vec::new();
        let mut weights = Vec::new();
        for (s, &l) in lens.iter().enumerate() {
            for i in 0..l {
                src.push(((s * 7 + i * 5) % n_src) as u32);
                weights.push(0.5 + ((s + i) % 4) as f32 * 0.25);
            }
            offsets.push(src.len());
        }
        for width in [2, 3, 4, 8, 32, 300] {
            for w in [None, Some(weights.as_slice())] {
                let plan = plan_tree(&offsets, &src, w, width);
                let got = run(&plan, &source);
                assert_eq!(got.len(), lens.len());
                for s in 0..lens.len() {
                    for d in 0..2 {
                        let want: f64 = (offsets[s]..offsets[s + 1]).map(|i| w.map_or(1.0, |w| w[i] as f64) * source[src[i] as usize][d]).sum();
                        assert!((got[s][d] - want).abs() < 1e-9, "width {width} segment {s}: {} vs {want}", got[s][d]);
                    }
                }
                // Depth is logarithmic in the longest segment.
                let depth = plan.levels.len();
                let mut bound = 1;
                let mut cap = width;
                while cap < 250 {
                    cap *= width;
                    bound += 1;
                }
                assert!(depth <= bound, "width {width}: {depth} levels");
                // Padding at most doubles the gathered rows at level 0.
                let slots: usize = plan.levels[0].buckets.iter().map(|b| b.chunks * b.width).sum();
                assert!(slots <= 2 * src.len(), "width {width}: {slots} slots for {} items", src.len());
            }
        }
    }

    #[test]
    fn singletons_are_one_gather_in_order() {
        let plan = plan_tree(&[0, 1, 2, 3], &[5, 2, 9], None, 32);
        assert_eq!(plan.levels.len(), 1);
        assert_eq!(plan.levels[0].buckets, vec![Bucket { width: 1, chunks: 3, idx: vec![5, 2, 9], weights: None }]);
        assert_eq!(plan.output, None);
    }
}
