//! Order statistics of timing samples.

use serde::Serialize;

/// Summary of repeated timings, in milliseconds.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct Summary {
    pub n: usize,
    pub median_ms: f64,
    pub min_ms: f64,
    pub p90_ms: f64,
    pub mean_ms: f64,
}

impl Summary {
    pub fn of(samples_ms: &[f64]) -> Summary {
        if samples_ms.is_empty() {
            return Summary::default();
        }
        let mut s = samples_ms.to_vec();
        s.sort_by(f64::total_cmp);
        let at = |q: f64| s[((s.len() - 1) as f64 * q).round() as usize];
        let median = if s.len() % 2 == 1 { s[s.len() / 2] } else { (s[s.len() / 2 - 1] + s[s.len() / 2]) / 2.0 };
        Summary { n: s.len(), median_ms: median, min_ms: s[0], p90_ms: at(0.9), mean_ms: s.iter().sum::<f64>() / s.len() as f64 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_even_and_odd() {
        assert_eq!(Summary::of(&[3.0, 1.0, 2.0]).median_ms, 2.0);
        assert_eq!(Summary::of(&[4.0, 1.0, 2.0, 3.0]).median_ms, 2.5);
        assert_eq!(Summary::of(&[4.0, 1.0, 2.0, 3.0]).min_ms, 1.0);
    }
}
