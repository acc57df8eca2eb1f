//! EmbeddingBag forward/backward against an f64 reference and finite differences.

use sparseburn::model::{bag_backward, bag_forward, Bags, EmbeddingTable, Pooling, SparseGrad, TableInit};

const DIM: usize = 4;

/// Bags with duplicates within a bag, rows shared across bags, and an empty bag.
fn bags() -> (Vec<u32>, Vec<usize>) {
    (vec![3, 1, 3, 0, 5, 1, 1, 2, 7, 7, 7], vec![0, 3, 6, 6, 8, 11])
}

fn pool_f64(table: &[f64], ids: &[u32], offsets: &[usize], pooling: Pooling) -> Vec<f64> {
    let mut out = vec![0.0; (offsets.len() - 1) * DIM];
    for b in 0..offsets.len() - 1 {
        let bag = &ids[offsets[b]..offsets[b + 1]];
        let scale = match (pooling, bag.len()) {
            (_, 0) => 0.0,
            (Pooling::Sum, _) => 1.0,
            (Pooling::Mean, n) => 1.0 / n as f64,
            (Pooling::Sqrtn, n) => 1.0 / (n as f64).sqrt(),
        };
        for &id in bag {
            for j in 0..DIM {
                out[b * DIM + j] += scale * table[id as usize * DIM + j];
            }
        }
    }
    out
}

/// A non-linear loss of the pooled output: Σ c·p + ½ Σ p².
fn loss(pooled: &[f64]) -> f64 {
    pooled.iter().enumerate().map(|(i, p)| (i as f64 * 0.37).sin() * p + 0.5 * p * p).sum()
}
fn d_loss(pooled: &[f64]) -> Vec<f64> {
    pooled.iter().enumerate().map(|(i, p)| (i as f64 * 0.37).sin() + p).collect()
}

#[test]
fn forward_matches_f64_reference() {
    let table = EmbeddingTable::new(8, DIM, TableInit::Normal { std: 1.0 }, 3);
    let (ids, offsets) = bags();
    for pooling in [Pooling::Mean, Pooling::Sum, Pooling::Sqrtn] {
        let mut out = vec![0.0f32; 5 * DIM];
        bag_forward(table.as_slice(), DIM, Bags::new(&ids, &offsets), pooling, &mut out);
        let t64: Vec<f64> = table.as_slice().iter().map(|&x| x as f64).collect();
        let want = pool_f64(&t64, &ids, &offsets, pooling);
        for (g, w) in out.iter().zip(&want) {
            assert!((*g as f64 - w).abs() < 1e-5, "{pooling:?}: {g} vs {w}");
        }
        assert!(out[2 * DIM..3 * DIM].iter().all(|&x| x == 0.0), "empty bag pools to zero");
    }
}

#[test]
fn backward_matches_finite_differences() {
    let table = EmbeddingTable::new(8, DIM, TableInit::Normal { std: 1.0 }, 5);
    let t64: Vec<f64> = table.as_slice().iter().map(|&x| x as f64).collect();
    let (ids, offsets) = bags();
    for pooling in [Pooling::Mean, Pooling::Sum, Pooling::Sqrtn] {
        let pooled = pool_f64(&t64, &ids, &offsets, pooling);
        let d_pooled: Vec<f32> = d_loss(&pooled).iter().map(|&x| x as f32).collect();
        let mut grad = SparseGrad::new(DIM);
        bag_backward(Bags::new(&ids, &offsets), pooling, &d_pooled, &mut grad);

        let mut touched: Vec<u32> = ids.clone();
        touched.sort();
        touched.dedup();
        assert_eq!(grad.rows(), &touched[..], "sorted unique rows");

        let h = 1e-5;
        for row in 0..8u32 {
            for j in 0..DIM {
                let mut plus = t64.clone();
                let mut minus = t64.clone();
                plus[row as usize * DIM + j] += h;
                minus[row as usize * DIM + j] -= h;
                let fd = (loss(&pool_f64(&plus, &ids, &offsets, pooling)) - loss(&pool_f64(&minus, &ids, &offsets, pooling))) / (2.0 * h);
                let got = match grad.rows().binary_search(&row) {
                    Ok(k) => grad.row_values(k)[j] as f64,
                    Err(_) => 0.0,
                };
                assert!((got - fd).abs() < 1e-4 * (1.0 + fd.abs()), "{pooling:?} row {row} col {j}: backward {got}, finite difference {fd}");
            }
        }
    }
}

#[test]
fn backward_is_deterministic_and_reuses_buffers() {
    let (ids, offsets) = bags();
    let d: Vec<f32> = (0..5 * DIM).map(|i| i as f32 * 0.1 - 0.7).collect();
    let mut a = SparseGrad::new(DIM);
    bag_backward(Bags::new(&ids, &offsets), Pooling::Mean, &d, &mut a);
    let first = a.clone();
    bag_backward(Bags::new(&ids, &offsets), Pooling::Mean, &d, &mut a);
    assert_eq!(a.rows(), first.rows());
    assert_eq!(a.values(), first.values());
}
