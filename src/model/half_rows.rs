//! Table rows stored in f32, bf16 or f16, always computed in f32.
//!
//! [`RowValue`] is what the bag and the row update are generic over: reading
//! a value widens it to f32 (the identity for f32, so that path compiles to
//! what it was), and writing an updated value back narrows it with
//! *stochastic rounding*, FBGEMM's scheme for half-precision embedding rows:
//! the value goes to one of its two neighbours with probability proportional
//! to its distance from the other, so the rounding is unbiased and small
//! updates accumulate in expectation instead of being rounded away.
//!
//! The random bits are a counter-based stream per row keyed by `(seed,
//! update step, row)` ([`RoundingKey::row_bits`]): a row's rounding never
//! depends on the thread count or on which other rows the step touched, so
//! runs repeat and a resumed run continues bit-identically.

use half::{bf16, f16};
use serde::{Deserialize, Serialize};

/// The element type of the table's rows (`[model] table_dtype`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TableDtype {
    #[default]
    F32,
    /// bfloat16: f32's exponent range, 8 significant bits.
    Bf16,
    /// IEEE half: 11 significant bits, values up to 65504.
    F16,
}

impl TableDtype {
    pub fn name(self) -> &'static str {
        match self {
            TableDtype::F32 => "f32",
            TableDtype::Bf16 => "bf16",
            TableDtype::F16 => "f16",
        }
    }
    /// Bytes of one stored value.
    pub fn size(self) -> usize {
        match self {
            TableDtype::F32 => 4,
            TableDtype::Bf16 | TableDtype::F16 => 2,
        }
    }
    pub fn is_f32(&self) -> bool {
        *self == TableDtype::F32
    }
    /// From its config spelling, with an error listing the choices.
    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "f32" => Ok(TableDtype::F32),
            "bf16" => Ok(TableDtype::Bf16),
            "f16" => Ok(TableDtype::F16),
            _ => Err(format!("unknown table dtype {s:?}: expected \"f32\", \"bf16\" or \"f16\"")),
        }
    }
}

/// A value type table rows can be stored in.
pub trait RowValue: bytemuck::Pod + Default + Send + Sync + PartialEq + std::fmt::Debug + 'static {
    const DTYPE: TableDtype;
    /// Random bits one stochastic rounding uses (it reads the top ones of its `r`).
    const RANDOM_BITS: u32;
    fn to_f32(self) -> f32;
    /// Round to nearest, ties to even (initial rows: deterministic, no bias to speak of).
    fn round_nearest(x: f32) -> Self;
    /// Stochastic rounding of `x` driven by 32 uniformly random bits `r`.
    fn round_stochastic(x: f32, r: u32) -> Self;
}

impl RowValue for f32 {
    const DTYPE: TableDtype = TableDtype::F32;
    const RANDOM_BITS: u32 = 32;
    #[inline(always)]
    fn to_f32(self) -> f32 {
        self
    }
    #[inline(always)]
    fn round_nearest(x: f32) -> Self {
        x
    }
    #[inline(always)]
    fn round_stochastic(x: f32, _: u32) -> Self {
        x
    }
}

impl RowValue for bf16 {
    const DTYPE: TableDtype = TableDtype::Bf16;
    const RANDOM_BITS: u32 = 16;
    /// The high half of an f32, exact for every value (NaN stays NaN). Written
    /// out because half's version checks for NaN, which keeps the bag's loop
    /// from vectorising (2× slower pooling).
    #[inline(always)]
    fn to_f32(self) -> f32 {
        f32::from_bits((self.to_bits() as u32) << 16)
    }
    #[inline(always)]
    fn round_nearest(x: f32) -> Self {
        bf16::from_f32(x)
    }
    /// FBGEMM's bf16 rounding: add 16 random bits below the kept 16, then
    /// truncate. The carry into the kept bits happens with probability
    /// `dropped / 2^16`, which is the distance to the lower neighbour in
    /// units of the gap; a carry into the exponent is the next binade's value,
    /// as it should be. Infinities have no dropped bits; NaN stays NaN.
    #[inline(always)]
    fn round_stochastic(x: f32, r: u32) -> Self {
        let rounded = (x.to_bits().wrapping_add(r >> 16) >> 16) as u16;
        // A select, not a branch, so that a row's loop vectorises.
        bf16::from_bits(if x.is_nan() { bf16::NAN.to_bits() } else { rounded })
    }
}

impl RowValue for f16 {
    const DTYPE: TableDtype = TableDtype::F16;
    const RANDOM_BITS: u32 = 32;
    #[inline(always)]
    fn to_f32(self) -> f32 {
        self.to_f32()
    }
    #[inline(always)]
    fn round_nearest(x: f32) -> Self {
        f16::from_f32(x)
    }
    /// The f16 equivalent: `x` lies between two neighbouring f16 values `a`
    /// and `b`; return `b` with probability `(x - a) / (b - a)`. FBGEMM adds a
    /// random fraction of an f16 ulp and truncates, which is the same for
    /// normal values; comparing against the exact distance also keeps the
    /// subnormal range (|x| < 2^-14, where an ulp is 2^-24) unbiased.
    #[inline]
    fn round_stochastic(x: f32, r: u32) -> Self {
        let near = f16::from_f32(x);
        let a = near.to_f32();
        if a == x || !x.is_finite() {
            return near;
        }
        // The other neighbour is one step of magnitude from `near`, towards x:
        // away from zero if near is smaller in magnitude, else towards it.
        let bits = near.to_bits();
        let other = f16::from_bits(if a.abs() < x.abs() { bits + 1 } else { bits - 1 });
        let b = other.to_f32();
        // p has at most 24 significant bits, so comparing it with a 32-bit
        // uniform is exact: P(r < p·2^32) = p.
        let p = (x as f64 - a as f64) / (b as f64 - a as f64);
        if (r as f64) < p * 4_294_967_296.0 {
            other
        } else {
            near
        }
    }
}

/// The table's rows borrowed in their dtype (row-major, `dim` columns).
#[derive(Clone, Copy, Debug)]
pub enum TableView<'a> {
    F32(&'a [f32]),
    Bf16(&'a [bf16]),
    F16(&'a [f16]),
}

impl<'a> From<&'a [f32]> for TableView<'a> {
    fn from(values: &'a [f32]) -> Self {
        TableView::F32(values)
    }
}

impl<'a> TableView<'a> {
    pub fn dtype(&self) -> TableDtype {
        match self {
            TableView::F32(_) => TableDtype::F32,
            TableView::Bf16(_) => TableDtype::Bf16,
            TableView::F16(_) => TableDtype::F16,
        }
    }
    /// Values (not bytes) in the view.
    pub fn len(&self) -> usize {
        match self {
            TableView::F32(v) => v.len(),
            TableView::Bf16(v) => v.len(),
            TableView::F16(v) => v.len(),
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The stored bytes (little-endian values, as safetensors stores them).
    pub fn as_bytes(&self) -> &'a [u8] {
        match *self {
            TableView::F32(v) => bytemuck::cast_slice(v),
            TableView::Bf16(v) => bytemuck::cast_slice(v),
            TableView::F16(v) => bytemuck::cast_slice(v),
        }
    }
    /// Row `id` widened to f32 into `out` (`dim` values).
    pub fn row_into(&self, id: usize, out: &mut [f32]) {
        let dim = out.len();
        match *self {
            TableView::F32(v) => out.copy_from_slice(&v[id * dim..(id + 1) * dim]),
            TableView::Bf16(v) => load_row(out, &v[id * dim..(id + 1) * dim]),
            TableView::F16(v) => load_row(out, &v[id * dim..(id + 1) * dim]),
        }
    }
    /// Every value widened to f32.
    pub fn to_f32_vec(&self) -> Vec<f32> {
        match *self {
            TableView::F32(v) => v.to_vec(),
            TableView::Bf16(v) => v.iter().map(|x| x.to_f32()).collect(),
            TableView::F16(v) => v.iter().map(|x| x.to_f32()).collect(),
        }
    }
}

/// What the random bits of one update's rounding are keyed by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RoundingKey {
    pub seed: u64,
    /// The update step (the trainer's global step), so each step draws fresh bits.
    pub step: u64,
}

/// Keeps the rounding stream apart from other uses of the same seed.
const ROUNDING_SALT: u64 = 0x726f_756e_642d_7372;

/// SplitMix64's increment (2^64 / φ) and output function (Steele, Lea &
/// Flood 2014, with Stafford's "mix13" finaliser): consecutive counters give
/// outputs that pass BigCrush. A counter-based stream, so any row's bits are
/// computed directly. (ChaCha8 streams, one per row, cost 265 ns a row at
/// dim 64, three times the whole f32 row update of rowwise_adagrad.)
const GOLDEN: u64 = 0x9e37_79b9_7f4a_7c15;

#[inline(always)]
fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl RoundingKey {
    /// The random stream of `row` in this update: a SplitMix64 sequence whose
    /// start is a hash of (seed, step, row).
    #[inline]
    pub fn row_bits(&self, row: usize) -> RowBits {
        RowBits(mix64(mix64(mix64(self.seed ^ ROUNDING_SALT) ^ self.step) ^ row as u64))
    }
}

/// One row's stream of random bits (see [`RoundingKey::row_bits`]).
#[derive(Clone, Debug)]
pub struct RowBits(u64);

impl RowBits {
    #[inline(always)]
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(GOLDEN);
        mix64(self.0)
    }
}

/// Writes `src` (f32) into `dst` with stochastic rounding, drawing
/// [`RowValue::RANDOM_BITS`] bits per value from the row's stream `bits`:
/// value `i` uses the `i`-th 16-bit (bf16) or 32-bit (f16) little-endian
/// part of the stream's words.
#[inline]
pub fn store_row<H: RowValue>(dst: &mut [H], src: &[f32], bits: &mut RowBits) {
    if H::DTYPE == TableDtype::F32 {
        dst.copy_from_slice(bytemuck::cast_slice(src));
        return;
    }
    // Words for 64 values at a time, then a loop without a dependency chain
    // between values (the stream's multiplies stay out of it).
    const WORDS: usize = 16;
    let per_block = WORDS * (64 / H::RANDOM_BITS as usize);
    let mut words = [0u64; WORDS];
    for (dst, src) in dst.chunks_mut(per_block).zip(src.chunks(per_block)) {
        let used = dst.len().div_ceil(64 / H::RANDOM_BITS as usize);
        words[..used].iter_mut().for_each(|w| *w = bits.next_u64());
        if H::RANDOM_BITS == 16 {
            let r: &[u16; 4 * WORDS] = bytemuck::cast_ref(&words);
            for ((d, &x), &r) in dst.iter_mut().zip(src).zip(r) {
                *d = H::round_stochastic(x, (r as u32) << 16);
            }
        } else {
            let r: &[u32; 2 * WORDS] = bytemuck::cast_ref(&words);
            for ((d, &x), &r) in dst.iter_mut().zip(src).zip(r) {
                *d = H::round_stochastic(x, r);
            }
        }
    }
}

/// Widens a stored row into `dst`.
#[inline]
pub fn load_row<H: RowValue>(dst: &mut [f32], src: &[H]) {
    for (d, &x) in dst.iter_mut().zip(src) {
        *d = x.to_f32();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Both neighbours of `x` in dtype H, as f64: (below, above), equal when x is exact.
    fn neighbours<H: RowValue>(x: f32) -> (f64, f64) {
        // Candidates from rounding x and its f32 neighbours; bracket x with the closest.
        let mut below = f64::NEG_INFINITY;
        let mut above = f64::INFINITY;
        let n = H::round_nearest(x).to_f32();
        for k in -3i64..=3 {
            // The f16/bf16 values around n, found by stepping n's own bits.
            let cand = step_bits::<H>(n, k);
            let c = cand as f64;
            if c <= x as f64 && c > below {
                below = c;
            }
            if c >= x as f64 && c < above {
                above = c;
            }
        }
        (below, above)
    }

    fn step_bits<H: RowValue>(v: f32, k: i64) -> f32 {
        match H::DTYPE {
            TableDtype::Bf16 => {
                let s = bf16::from_f32(v);
                // Signed-magnitude to a monotone integer and back.
                let i = monotone(s.to_bits() as i64, 16) + k;
                bf16::from_bits(unmonotone(i, 16) as u16).to_f32()
            }
            TableDtype::F16 => {
                let s = f16::from_f32(v);
                let i = monotone(s.to_bits() as i64, 16) + k;
                f16::from_bits(unmonotone(i, 16) as u16).to_f32()
            }
            TableDtype::F32 => v,
        }
    }

    fn monotone(bits: i64, width: u32) -> i64 {
        let sign = 1i64 << (width - 1);
        if bits & sign != 0 {
            -(bits & (sign - 1))
        } else {
            bits
        }
    }
    fn unmonotone(i: i64, width: u32) -> i64 {
        let sign = 1i64 << (width - 1);
        if i < 0 {
            sign | -i
        } else {
            i
        }
    }

    /// The mean of many stochastic roundings of x is x, within 5 standard
    /// errors computed from the exact Bernoulli variance; every result is one
    /// of x's two neighbours (computed independently by stepping bit patterns).
    fn check_unbiased<H: RowValue>(values: &[f32]) {
        let mut rng = RoundingKey { seed: 3, step: 11 }.row_bits(0);
        const N: usize = 40_000;
        for &x in values {
            let (lo, hi) = neighbours::<H>(x);
            assert!(lo <= x as f64 && x as f64 <= hi, "{x}: bracket {lo} {hi}");
            let mut sum = 0f64;
            for _ in 0..N {
                let y = H::round_stochastic(x, (rng.next_u64() >> 32) as u32).to_f32() as f64;
                assert!(y == lo || y == hi, "{:?} rounding of {x} gave {y}, not {lo} or {hi}", H::DTYPE);
                sum += y;
            }
            let mean = sum / N as f64;
            if lo == hi {
                assert_eq!(mean, x as f64);
                continue;
            }
            let p = (x as f64 - lo) / (hi - lo);
            let se = (hi - lo) * (p * (1.0 - p) / N as f64).sqrt();
            assert!((mean - x as f64).abs() <= 5.0 * se + 1e-300, "{:?}: mean of roundings of {x} is {mean}, off by {} > 5 se = {}", H::DTYPE, (mean - x as f64).abs(), 5.0 * se);
        }
    }

    const VALUES: [f32; 10] = [0.1, -0.1, 1.0 / 3.0, -2.71, 1e-3, 123.456, 1.0, -0.0, 3.0e-6, -7.0e-8];

    #[test]
    fn bf16_stochastic_rounding_is_unbiased_and_picks_a_neighbour() {
        check_unbiased::<bf16>(&VALUES);
        check_unbiased::<bf16>(&[1e-39, -3.3e-38, 1.0e30]);
    }

    #[test]
    fn f16_stochastic_rounding_is_unbiased_and_picks_a_neighbour() {
        // 3e-6 and 7e-8 are f16 subnormals; 65000 is near the top of the range.
        check_unbiased::<f16>(&VALUES);
        check_unbiased::<f16>(&[65000.3, -1.0e-5]);
    }

    #[test]
    fn nearest_rounding_and_specials() {
        assert!(bf16::round_stochastic(f32::NAN, 0xffff_ffff).to_f32().is_nan());
        assert_eq!(bf16::round_stochastic(f32::INFINITY, 0xffff_ffff).to_f32(), f32::INFINITY);
        assert_eq!(f16::round_stochastic(f32::NEG_INFINITY, 7).to_f32(), f32::NEG_INFINITY);
        // A value exact in the dtype never moves, whatever the bits.
        for r in [0, 1 << 31, u32::MAX] {
            assert_eq!(bf16::round_stochastic(0.5, r).to_f32(), 0.5);
            assert_eq!(f16::round_stochastic(-0.75, r).to_f32(), -0.75);
        }
    }

    #[test]
    fn row_streams_depend_only_on_seed_step_and_row() {
        let draw = |seed: u64, step: u64, row: usize| {
            let mut bits = RoundingKey { seed, step }.row_bits(row);
            (0..4).map(|_| bits.next_u64()).collect::<Vec<_>>()
        };
        let a = draw(5, 9, 17);
        assert_eq!(draw(5, 9, 17), a);
        for other in [draw(5, 9, 18), draw(5, 10, 17), draw(6, 9, 17)] {
            assert!(other.iter().all(|w| !a.contains(w)), "streams overlap");
        }
        // Each bit of the stream is set about half the time (64k bits; 5 standard errors).
        let mut bits = RoundingKey { seed: 1, step: 2 }.row_bits(3);
        let ones: u32 = (0..1024).map(|_| bits.next_u64().count_ones()).sum();
        assert!((ones as f64 - 32768.0).abs() < 5.0 * 128.0, "{ones} ones in 65536 bits");
    }
}
