//! The sweep plot: the chosen metric against each swept key, one panel per
//! key, every finished trial a point and the best one ringed, as SVG and PNG.
//!
//! Numeric keys get a numeric axis (logarithmic when the values are positive
//! and span more than a factor of 20, as learning rates do); other values
//! (strings, lists, booleans) one slot each, in plan order.

use std::path::Path;

use plotters::coord::ranged1d::{AsRangedCoord, ValueFormatter};
use plotters::coord::Shift;
use plotters::prelude::*;

use super::report::{Report, TrialRow};

const BLUE: RGBColor = RGBColor(31, 119, 180);
const ORANGE: RGBColor = RGBColor(255, 127, 14);
const PANEL: (u32, u32) = (560, 420);
pub const FILE: &str = "sweep_metric_vs_params";

/// The x positions of one key: numbers, or slots with their labels.
enum Axis {
    Numeric { log: bool },
    Slots(Vec<String>),
}

fn value_label(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// (x, metric, is best) of every finished trial for `key`, and the axis kind.
fn points(r: &Report, key: &str) -> (Axis, Vec<(f64, f64, bool)>) {
    // In plan order, so that slots keep the order the values were listed in.
    let mut done: Vec<&TrialRow> = r.trials.iter().filter(|t| t.metric.is_some()).collect();
    done.sort_by(|a, b| a.trial.cmp(&b.trial));
    let numeric = !done.is_empty() && done.iter().all(|t| t.params.get(key).is_some_and(|v| v.is_number()));
    let best = |t: &TrialRow| t.rank == Some(1);
    if numeric {
        let xs: Vec<f64> = done.iter().map(|t| t.params[key].as_f64().unwrap_or(f64::NAN)).collect();
        let (lo, hi) = xs.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &x| (a.min(x), b.max(x)));
        let log = lo > 0.0 && hi / lo > 20.0;
        let pts = done.iter().zip(xs).map(|(t, x)| (x, t.metric.unwrap_or(f64::NAN), best(t))).collect();
        (Axis::Numeric { log }, pts)
    } else {
        let mut labels: Vec<String> = Vec::new();
        let mut pts = Vec::new();
        for t in &done {
            let l = t.params.get(key).map(value_label).unwrap_or_default();
            let i = labels.iter().position(|x| *x == l).unwrap_or_else(|| {
                labels.push(l);
                labels.len() - 1
            });
            pts.push((i as f64, t.metric.unwrap_or(f64::NAN), best(t)));
        }
        (Axis::Slots(labels), pts)
    }
}

fn panel<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, r: &Report, key: &str) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    let (axis, pts) = points(r, key);
    let (mut y_lo, mut y_hi) = pts.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), p| (a.min(p.1), b.max(p.1)));
    if !y_lo.is_finite() {
        (y_lo, y_hi) = (0.0, 1.0);
    }
    let pad = ((y_hi - y_lo) * 0.08).max(0.005);
    let y = (y_lo - pad)..(y_hi + pad);
    match axis {
        Axis::Numeric { log } => {
            let (lo, hi) = pts.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), p| (a.min(p.0), b.max(p.0)));
            let (lo, hi) = if lo.is_finite() { (lo, hi) } else { (0.0, 1.0) };
            if log {
                draw(area, r, key, &pts, (lo / 1.5..hi * 1.5).log_scale(), y, None)
            } else {
                let pad = if hi > lo { (hi - lo) * 0.06 } else { lo.abs().max(1.0) * 0.5 };
                draw(area, r, key, &pts, (lo - pad)..(hi + pad), y, None)
            }
        }
        Axis::Slots(labels) => {
            let n = labels.len().max(1) as f64;
            draw(area, r, key, &pts, -0.5..(n - 0.5), y, Some(&labels))
        }
    }
}

fn draw<DB, X>(
    area: &DrawingArea<DB, Shift>,
    r: &Report,
    key: &str,
    pts: &[(f64, f64, bool)],
    x: X,
    y: std::ops::Range<f64>,
    slots: Option<&[String]>,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>>
where
    DB: DrawingBackend,
    X: AsRangedCoord<Value = f64>,
    X::CoordDescType: ValueFormatter<f64>,
{
    let mut chart =
        ChartBuilder::on(area).caption(format!("{} vs {key}", r.metric), ("sans-serif", 17)).margin(14).x_label_area_size(44).y_label_area_size(60).build_cartesian_2d(x, y)?;
    let slot_label = |v: &f64| {
        let i = v.round();
        match slots {
            Some(l) if (v - i).abs() < 1e-6 && i >= 0.0 && (i as usize) < l.len() => l[i as usize].clone(),
            _ => String::new(),
        }
    };
    let number_label = |v: &f64| format!("{v}");
    let mut mesh = chart.configure_mesh();
    if let Some(l) = slots {
        mesh.x_labels(l.len() * 2 + 1).x_label_formatter(&slot_label);
    } else {
        mesh.x_labels(6).x_label_formatter(&number_label);
    }
    mesh.x_desc(key)
        .y_desc(r.metric.as_str())
        .label_style(("sans-serif", 13))
        .axis_desc_style(("sans-serif", 14))
        .light_line_style(RGBColor(235, 235, 235))
        .bold_line_style(RGBColor(205, 205, 205))
        .draw()?;
    chart.draw_series(pts.iter().filter(|p| p.0.is_finite() && p.1.is_finite()).map(|p| Circle::new((p.0, p.1), 4, BLUE.mix(0.75).filled())))?;
    chart.draw_series(pts.iter().filter(|p| p.2).map(|p| Circle::new((p.0, p.1), 8, ORANGE.stroke_width(2))))?;
    Ok(())
}

fn figure<DB: DrawingBackend>(root: DrawingArea<DB, Shift>, r: &Report, cols: usize) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    root.fill(&WHITE)?;
    let rows = r.keys.len().div_ceil(cols);
    let areas = root.split_evenly((rows, cols));
    for (key, area) in r.keys.iter().zip(&areas) {
        panel(area, r, key)?;
    }
    root.present()
}

/// Writes `sweep_metric_vs_params.{svg,png}` into `dir`; returns (title, svg file) for the Markdown report.
pub fn write(r: &Report, dir: &Path) -> anyhow::Result<Vec<(String, String)>> {
    crate::compare::plot::register_font();
    let cols = r.keys.len().clamp(1, 2);
    let size = (PANEL.0 * cols as u32, PANEL.1 * r.keys.len().div_ceil(cols).max(1) as u32);
    let svg = dir.join(format!("{FILE}.svg"));
    figure(SVGBackend::new(&svg, size).into_drawing_area(), r, cols).map_err(|e| anyhow::anyhow!("drawing {}: {e:?}", svg.display()))?;
    let png = dir.join(format!("{FILE}.png"));
    figure(BitMapBackend::new(&png, size).into_drawing_area(), r, cols).map_err(|e| anyhow::anyhow!("drawing {}: {e:?}", png.display()))?;
    Ok(vec![(format!("{} vs each swept key", r.metric), format!("{FILE}.svg"))])
}
