//! `--plot`: slowdown against message length as an SVG (text as SVG text elements, so no
//! fonts are needed to draw it).

use crate::report::Report;
use plotters::prelude::*;
use std::path::Path;

const COLORS: [RGBColor; 4] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
];

/// Why [`plot_svg`] wrote no plot.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlotError {
    /// No message was measured (a run too short for any to finish): nothing to draw.
    #[error("nothing to plot: no message was measured")]
    Empty,
    /// Drawing or writing the file failed.
    #[error("{0}")]
    Write(String),
}

/// Draw P50 (thin) and P99 (thick) slowdown per length bucket, log-log, one colour per
/// labelled report, into an SVG file at `path`.
pub fn plot_svg(series: &[(&str, &Report)], path: &Path) -> Result<(), PlotError> {
    let points = |r: &Report, p99: bool| -> Vec<(f64, f64)> {
        r.buckets
            .iter()
            .filter(|b| b.p50.is_finite())
            .map(|b| (b.max_len as f64, if p99 { b.p99 } else { b.p50 }))
            .collect()
    };
    let all: Vec<(f64, f64)> = series
        .iter()
        .flat_map(|(_, r)| points(r, true).into_iter().chain(points(r, false)))
        .collect();
    if all.is_empty() {
        return Err(PlotError::Empty);
    }
    let xmin = all
        .iter()
        .map(|p| p.0)
        .fold(f64::INFINITY, f64::min)
        .max(1.0);
    let xmax = all.iter().map(|p| p.0).fold(0.0, f64::max).max(xmin * 10.0);
    let ymax = all.iter().map(|p| p.1).fold(1.0, f64::max) * 1.5;
    let first = series[0].1;
    let title = format!(
        "{} at load {:.2}, {} hosts: slowdown by message length",
        first.workload, first.load, first.hosts
    );
    let root = SVGBackend::new(path, (900, 560)).into_drawing_area();
    let e = |x: DrawingAreaErrorKind<std::io::Error>| PlotError::Write(x.to_string());
    root.fill(&WHITE).map_err(e)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(15)
        .x_label_area_size(50)
        .y_label_area_size(60)
        .build_cartesian_2d(
            (xmin * 0.8..xmax * 1.25).log_scale(),
            (1.0..ymax).log_scale(),
        )
        .map_err(e)?;
    chart
        .configure_mesh()
        .x_desc("message length, bytes (bucket upper bound; buckets hold equal message counts)")
        .y_desc("slowdown")
        .x_labels(8)
        .y_labels(16)
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&|y| format!("{y:.1}"))
        .draw()
        .map_err(e)?;
    for (i, (label, r)) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        for p99 in [true, false] {
            let pts = points(r, p99);
            let style = color.stroke_width(if p99 { 3 } else { 1 });
            chart
                .draw_series(LineSeries::new(pts.clone(), style))
                .map_err(e)?
                .label(format!("{label} P{}", if p99 { 99 } else { 50 }))
                .legend(move |(x, y)| {
                    PathElement::new(
                        vec![(x, y), (x + 20, y)],
                        color.stroke_width(if p99 { 3 } else { 1 }),
                    )
                });
            chart
                .draw_series(pts.into_iter().map(|p| Circle::new(p, 3, color.filled())))
                .map_err(e)?;
        }
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperLeft)
        .draw()
        .map_err(e)?;
    root.present().map_err(e)?;
    Ok(())
}
