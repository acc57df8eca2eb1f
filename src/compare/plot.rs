//! Plots of the eval curves: one line per arm (mean over seeds) with a band
//! from the lowest to the highest seed, as SVG and PNG.
//!
//! PNG text is drawn with a bundled DejaVu Sans subset (assets/fonts, see its
//! license there), so no system fonts or libraries are needed.

use std::path::Path;
use std::sync::Once;

use plotters::coord::ranged1d::{AsRangedCoord, ValueFormatter};
use plotters::coord::Shift;
use plotters::prelude::*;

use super::report::{CurvePoint, Report};

static FONT: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans-subset.ttf");

pub(crate) fn register_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if plotters::style::register_font("sans-serif", FontStyle::Normal, FONT).is_err() {
            log::warn!("the bundled plot font did not load; PNG plots will have no text");
        }
    });
}

/// Tableau 10.
const COLORS: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

#[derive(Clone, Copy)]
enum XAxis {
    Step,
    Seconds,
}

#[derive(Clone, Copy)]
enum YAxis {
    Accuracy,
    Loss,
}

struct Spec {
    file: &'static str,
    x: XAxis,
    y: YAxis,
}

const PLOTS: [Spec; 3] = [
    Spec { file: "accuracy_vs_step", x: XAxis::Step, y: YAxis::Accuracy },
    Spec { file: "accuracy_vs_time", x: XAxis::Seconds, y: YAxis::Accuracy },
    Spec { file: "loss_vs_step", x: XAxis::Step, y: YAxis::Loss },
];

/// (x, mean, min, max) of one curve point.
fn point(p: &CurvePoint, x: XAxis, y: YAxis) -> (f64, f64, f64, f64) {
    let x = match x {
        XAxis::Step => p.step as f64,
        XAxis::Seconds => p.seconds,
    };
    let s = match y {
        YAxis::Accuracy => &p.accuracy,
        YAxis::Loss => &p.loss,
    };
    (x, s.mean, s.min, s.max)
}

fn title(r: &Report, spec: &Spec) -> String {
    let y = match spec.y {
        YAxis::Accuracy => "eval accuracy",
        YAxis::Loss => "eval loss",
    };
    let x = match spec.x {
        XAxis::Step => "step",
        XAxis::Seconds => "training time",
    };
    format!("{}: {y} vs {x}", r.name)
}

type Curves<'a> = Vec<(usize, &'a str, Vec<(f64, f64, f64, f64)>)>;

fn draw<DB: DrawingBackend>(root: DrawingArea<DB, Shift>, r: &Report, spec: &Spec) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    root.fill(&WHITE)?;
    let curves: Curves = r
        .arms
        .iter()
        .enumerate()
        .filter(|(_, a)| !a.curve.is_empty())
        .map(|(i, a)| (i, a.name.as_str(), a.curve.iter().map(|p| point(p, spec.x, spec.y)).filter(|p| p.0.is_finite() && p.2.is_finite() && p.3.is_finite()).collect()))
        .collect();
    let (mut x_min, mut x_max, mut y_min, mut y_max) = (f64::INFINITY, 0.0f64, f64::INFINITY, f64::NEG_INFINITY);
    for &(x, _, lo, hi) in curves.iter().flat_map(|(_, _, c)| c.iter()) {
        if x > 0.0 {
            x_min = x_min.min(x);
        }
        x_max = x_max.max(x);
        y_min = y_min.min(lo);
        y_max = y_max.max(hi);
    }
    if !y_min.is_finite() {
        (y_min, y_max) = (0.0, 1.0);
    }
    let pad = ((y_max - y_min) * 0.08).max(0.005);
    let y = (y_min - pad)..(y_max + pad);
    let x_hi = if x_max > 0.0 { x_max * 1.03 } else { 1.0 };
    // Arms whose times differ by orders of magnitude (dense vs lazy updates of a
    // huge table) would crowd the fast ones against the axis: use a log scale.
    let log_x = matches!(spec.x, XAxis::Seconds) && x_min.is_finite() && x_max / x_min > 30.0;
    if log_x {
        let lo = 10f64.powf((x_min / 1.3).log10().floor());
        chart(root, r, spec, &curves, (lo..x_max * 1.3).log_scale(), y, true)
    } else {
        chart(root, r, spec, &curves, 0.0..x_hi, y, false)
    }
}

#[allow(clippy::too_many_arguments)]
fn chart<DB, X>(
    root: DrawingArea<DB, Shift>,
    r: &Report,
    spec: &Spec,
    curves: &Curves,
    x: X,
    y: std::ops::Range<f64>,
    log_x: bool,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>>
where
    DB: DrawingBackend,
    X: AsRangedCoord<Value = f64>,
    X::CoordDescType: ValueFormatter<f64>,
{
    let seeds = r.seeds.len();
    let caption = if seeds > 1 { format!("{}  (mean of {seeds} seeds, band: min–max)", title(r, spec)) } else { title(r, spec) };
    let mut chart = ChartBuilder::on(&root).caption(caption, ("sans-serif", 20)).margin(16).x_label_area_size(48).y_label_area_size(64).build_cartesian_2d(x, y)?;
    let x_desc = match spec.x {
        XAxis::Step => "training step".to_string(),
        XAxis::Seconds => format!("training time, s{} (mean over seeds; evaluations excluded)", if log_x { ", log scale" } else { "" }),
    };
    let y_desc = match spec.y {
        YAxis::Accuracy => "eval accuracy",
        YAxis::Loss => "eval loss",
    };
    let step_labels = |x: &f64| format!("{x:.0}");
    let second_labels = |x: &f64| if *x >= 1.0 { format!("{x:.0}") } else { format!("{x}") };
    let mut mesh = chart.configure_mesh();
    match (spec.x, log_x) {
        (XAxis::Step, _) => {
            mesh.x_label_formatter(&step_labels);
        }
        (XAxis::Seconds, true) => {
            mesh.x_label_formatter(&second_labels);
        }
        _ => {}
    }
    mesh.x_desc(x_desc)
        .y_desc(y_desc)
        .label_style(("sans-serif", 14))
        .axis_desc_style(("sans-serif", 15))
        .light_line_style(RGBColor(235, 235, 235))
        .bold_line_style(RGBColor(205, 205, 205))
        .draw()?;
    for (i, name, c) in curves {
        let color = COLORS[*i % COLORS.len()];
        if c.len() > 1 && seeds > 1 {
            let mut outline: Vec<(f64, f64)> = c.iter().map(|p| (p.0, p.3)).collect();
            outline.extend(c.iter().rev().map(|p| (p.0, p.2)));
            chart.draw_series(std::iter::once(Polygon::new(outline, color.mix(0.18).filled())))?;
        }
        chart
            .draw_series(LineSeries::new(c.iter().map(|p| (p.0, p.1)), color.stroke_width(2)))?
            .label(name.to_string())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 22, y)], color.stroke_width(3)));
        chart.draw_series(c.iter().map(|p| Circle::new((p.0, p.1), 3, color.filled())))?;
    }
    let position = match spec.y {
        YAxis::Accuracy => SeriesLabelPosition::LowerRight,
        YAxis::Loss => SeriesLabelPosition::UpperRight,
    };
    chart.configure_series_labels().position(position).label_font(("sans-serif", 15)).background_style(WHITE.mix(0.85)).border_style(RGBColor(160, 160, 160)).draw()?;
    root.present()
}

const SIZE: (u32, u32) = (960, 600);

/// Writes every plot as `<name>.svg` and `<name>.png` into `dir`; returns (title, svg file name) pairs.
pub fn write(r: &Report, dir: &Path) -> anyhow::Result<Vec<(String, String)>> {
    register_font();
    let mut written = Vec::new();
    for spec in &PLOTS {
        let svg = dir.join(format!("{}.svg", spec.file));
        draw(SVGBackend::new(&svg, SIZE).into_drawing_area(), r, spec).map_err(|e| anyhow::anyhow!("drawing {}: {e:?}", svg.display()))?;
        let png = dir.join(format!("{}.png", spec.file));
        draw(BitMapBackend::new(&png, SIZE).into_drawing_area(), r, spec).map_err(|e| anyhow::anyhow!("drawing {}: {e:?}", png.display()))?;
        written.push((title(r, spec), format!("{}.svg", spec.file)));
    }
    Ok(written)
}
