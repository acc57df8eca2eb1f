//! Statistics for the report: mean ± sd over seeds and the paired difference
//! against the baseline arm with a Student-t confidence interval.
//!
//! The t distribution's CDF and quantile come from `statrs`.

use serde::{Deserialize, Serialize};
use statrs::distribution::{ContinuousCDF, StudentsT};

/// Mean of `xs` (NaN when empty).
pub fn mean(xs: &[f64]) -> f64 {
    if xs.is_empty() {
        return f64::NAN;
    }
    xs.iter().sum::<f64>() / xs.len() as f64
}

/// Sample standard deviation (n − 1 in the denominator); `None` below 2 values.
pub fn sd(xs: &[f64]) -> Option<f64> {
    if xs.len() < 2 {
        return None;
    }
    let m = mean(xs);
    let ss: f64 = xs.iter().map(|x| (x - m) * (x - m)).sum();
    Some((ss / (xs.len() - 1) as f64).sqrt())
}

fn students_t(df: f64) -> StudentsT {
    StudentsT::new(0.0, 1.0, df).unwrap_or_else(|e| panic!("Student's t with {df} degrees of freedom: {e}"))
}

/// CDF of Student's t distribution with `df` degrees of freedom.
pub fn t_cdf(t: f64, df: f64) -> f64 {
    students_t(df).cdf(t)
}

/// The `p` quantile of Student's t with `df` degrees of freedom, e.g.
/// `t_quantile(0.975, 2.0)` = 4.302653 (the 95% two-sided critical value).
pub fn t_quantile(p: f64, df: f64) -> f64 {
    assert!(p > 0.0 && p < 1.0 && df > 0.0, "t_quantile({p}, {df})");
    students_t(df).inverse_cdf(p)
}

/// A metric over seeds: mean ± sample sd, with its range.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub n: usize,
    pub mean: f64,
    /// Sample standard deviation; `None` with a single seed.
    pub sd: Option<f64>,
    pub min: f64,
    pub max: f64,
}

impl Summary {
    /// `None` when there are no values.
    pub fn of(xs: &[f64]) -> Option<Summary> {
        if xs.is_empty() {
            return None;
        }
        Some(Summary { n: xs.len(), mean: mean(xs), sd: sd(xs), min: xs.iter().copied().fold(f64::INFINITY, f64::min), max: xs.iter().copied().fold(f64::NEG_INFINITY, f64::max) })
    }
}

/// Paired difference `arm − baseline` over the seeds both finished, with a
/// two-sided Student-t confidence interval on n − 1 degrees of freedom.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Paired {
    /// Seeds in the pair (both arms finished).
    pub n: usize,
    pub mean: f64,
    pub sd: Option<f64>,
    /// Confidence level of the interval, e.g. 0.95.
    pub level: f64,
    /// t_{(1+level)/2, n−1}; `None` with fewer than 2 pairs.
    pub t_crit: Option<f64>,
    pub ci_low: Option<f64>,
    pub ci_high: Option<f64>,
    /// Two-sided p-value of "mean difference = 0"; `None` below 2 pairs or when every difference is equal.
    pub p_value: Option<f64>,
}

impl Paired {
    /// `diffs[i]` = arm − baseline on the i-th shared seed; `None` when empty.
    pub fn of(diffs: &[f64], level: f64) -> Option<Paired> {
        if diffs.is_empty() {
            return None;
        }
        let n = diffs.len();
        let m = mean(diffs);
        let s = sd(diffs);
        let t_crit = (n >= 2).then(|| t_quantile(0.5 + level / 2.0, (n - 1) as f64));
        let half = match (t_crit, s) {
            (Some(t), Some(s)) => Some(t * s / (n as f64).sqrt()),
            _ => None,
        };
        let p_value = match s {
            Some(s) if s > 0.0 => {
                let t = m / (s / (n as f64).sqrt());
                Some(2.0 * (1.0 - t_cdf(t.abs(), (n - 1) as f64)))
            }
            _ => None,
        };
        Some(Paired { n, mean: m, sd: s, level, t_crit, ci_low: half.map(|h| m - h), ci_high: half.map(|h| m + h), p_value })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol
    }

    #[test]
    fn t_quantiles_match_the_table() {
        // Two-sided 95% critical values, from standard tables (6 decimals).
        let table = [
            (1.0, 12.706205),
            (2.0, 4.302653),
            (3.0, 3.182446),
            (4.0, 2.776445),
            (5.0, 2.570582),
            (9.0, 2.262157),
            (10.0, 2.228139),
            (29.0, 2.045230),
            (30.0, 2.042272),
            (100.0, 1.983972),
        ];
        for (df, want) in table {
            let got = t_quantile(0.975, df);
            assert!(close(got, want, 5e-6), "t_0.975,{df} = {got}, want {want}");
        }
        assert!(close(t_quantile(0.995, 4.0), 4.604095, 5e-6));
        assert!(close(t_quantile(0.95, 1.0), 6.313752, 5e-6));
        assert!(close(t_quantile(0.025, 2.0), -4.302653, 5e-6));
        // Towards the normal quantile (1.959964) as df grows. (statrs inverts an
        // incomplete beta near 1 and loses digits past ~1e5 degrees of freedom;
        // a report's df is its number of seeds minus one.)
        assert!(close(t_quantile(0.975, 1000.0), 1.962339, 5e-6));
    }

    #[test]
    fn t_cdf_is_symmetric_and_inverts_the_quantile() {
        for df in [1.0, 2.0, 3.5, 7.0, 50.0] {
            assert!(close(t_cdf(0.0, df), 0.5, 1e-12));
            for t in [0.1, 1.0, 2.5, 10.0] {
                assert!(close(t_cdf(t, df) + t_cdf(-t, df), 1.0, 1e-12));
            }
            for p in [0.6, 0.9, 0.975, 0.999] {
                assert!(close(t_cdf(t_quantile(p, df), df), p, 1e-10));
            }
        }
        // df = 1 is the Cauchy distribution: F(t) = 1/2 + atan(t)/π.
        for t in [-3.0, -0.5, 0.7, 4.0] {
            assert!(close(t_cdf(t, 1.0), 0.5 + f64::atan(t) / std::f64::consts::PI, 1e-12));
        }
    }

    #[test]
    fn summary_and_paired_ci() {
        let s = Summary::of(&[1.0, 2.0, 3.0, 4.0]).unwrap();
        assert_eq!((s.n, s.mean, s.min, s.max), (4, 2.5, 1.0, 4.0));
        assert!(close(s.sd.unwrap(), (5.0f64 / 3.0).sqrt(), 1e-12));
        assert_eq!(Summary::of(&[7.0]).unwrap().sd, None);
        assert!(Summary::of(&[]).is_none());

        // d = [0.01, 0.03, 0.02]: mean 0.02, sd 0.01, half-width 4.302653 · 0.01 / √3.
        let p = Paired::of(&[0.01, 0.03, 0.02], 0.95).unwrap();
        let half = 4.302653 * 0.01 / 3f64.sqrt();
        assert!(close(p.mean, 0.02, 1e-12));
        assert!(close(p.ci_low.unwrap(), 0.02 - half, 1e-7));
        assert!(close(p.ci_high.unwrap(), 0.02 + half, 1e-7));
        // t = 0.02 / (0.01/√3) = 3.4641, df 2 → p = 0.07418.
        assert!(close(p.p_value.unwrap(), 0.074180, 1e-5));

        let one = Paired::of(&[0.5], 0.95).unwrap();
        assert_eq!((one.ci_low, one.t_crit, one.p_value), (None, None, None));
        let same = Paired::of(&[0.1, 0.1], 0.95).unwrap();
        assert!(close(same.ci_low.unwrap(), 0.1, 1e-12) && same.p_value.is_none());
    }
}
