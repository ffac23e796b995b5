//! `--plot out.svg`: slowdown (P50 and P99) against message length, log-log, one pair of
//! lines per transport, in the style of the Homa papers' figures.

use std::path::Path;

use plotters::prelude::*;

use crate::error::PerfError;
use crate::stats::BucketRow;

/// A transport's points: `(length, slowdown P50, slowdown P99)`.
type Points<'a> = (&'a str, Vec<(f64, f64, f64)>);

/// Draws `series` (transport name, bucket rows) into an SVG at `path`. Each bucket is one
/// point at its median length.
pub fn slowdown_svg(
    path: &Path,
    title: &str,
    series: &[(&str, &[BucketRow])],
) -> Result<(), PerfError> {
    let fail = |e: &dyn std::fmt::Display| PerfError::Plot {
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    let points: Vec<Points> = series
        .iter()
        .map(|(name, rows)| {
            (
                *name,
                rows.iter()
                    .filter(|r| r.count > 0 && r.slow_p50.is_finite() && r.slow_p99.is_finite())
                    .map(|r| (r.median_len.max(1) as f64, r.slow_p50, r.slow_p99))
                    .collect(),
            )
        })
        .collect();
    let all = points.iter().flat_map(|(_, p)| p.iter());
    let (mut x_lo, mut x_hi, mut y_hi) = (f64::MAX, 1.0f64, 2.0f64);
    let mut y_lo = f64::MAX;
    for &(x, p50, p99) in all {
        x_lo = x_lo.min(x);
        x_hi = x_hi.max(x);
        y_lo = y_lo.min(p50);
        y_hi = y_hi.max(p99);
    }
    if x_lo == f64::MAX {
        return Err(fail(&"no completed RPCs to plot"));
    }
    let y_lo = y_lo.clamp(0.1, 1.0) * 0.8;
    let root = SVGBackend::new(path, (900, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| fail(&e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(60)
        .build_cartesian_2d(
            (x_lo * 0.8..x_hi * 1.25).log_scale(),
            (y_lo..y_hi * 4.0).log_scale(),
        )
        .map_err(|e| fail(&e))?;
    chart
        .configure_mesh()
        .x_desc("message length (bytes, bucket median)")
        .y_desc("slowdown (RTT / unloaded RTT)")
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&|y| format!("{y:.1}"))
        .draw()
        .map_err(|e| fail(&e))?;
    let colors = [BLUE, RED, GREEN, MAGENTA];
    for (i, (name, pts)) in points.iter().enumerate() {
        let color = colors[i % colors.len()];
        for (pct, dashed) in [("P50", false), ("P99", true)] {
            let line: Vec<(f64, f64)> = pts
                .iter()
                .map(|&(x, p50, p99)| (x, if dashed { p99 } else { p50 }))
                .collect();
            let label = format!("{name} {pct}");
            if dashed {
                let style = color.stroke_width(1);
                chart
                    .draw_series(DashedLineSeries::new(line.clone(), 6, 4, style))
                    .map_err(|e| fail(&e))?
                    .label(label)
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style));
            } else {
                let style = color.stroke_width(2);
                chart
                    .draw_series(LineSeries::new(line.clone(), style))
                    .map_err(|e| fail(&e))?
                    .label(label)
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style));
            }
            chart
                .draw_series(line.iter().map(|&p| Circle::new(p, 3, color.filled())))
                .map_err(|e| fail(&e))?;
        }
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperLeft)
        .draw()
        .map_err(|e| fail(&e))?;
    root.present().map_err(|e| fail(&e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_an_svg() {
        let rows = |f: f64| {
            vec![
                BucketRow {
                    upper: 100,
                    share: 0.5,
                    count: 10,
                    median_len: 80,
                    rtt_p50_us: 20.0,
                    rtt_p99_us: 40.0,
                    slow_p50: 1.1 * f,
                    slow_p99: 2.0 * f,
                },
                BucketRow {
                    upper: 1_000_000,
                    share: 0.5,
                    count: 10,
                    median_len: 500_000,
                    rtt_p50_us: 900.0,
                    rtt_p99_us: 2000.0,
                    slow_p50: 1.3 * f,
                    slow_p99: 3.0 * f,
                },
            ]
        };
        let (h, t) = (rows(1.0), rows(4.0));
        let dir = std::env::temp_dir().join(format!("homa-plot-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("s.svg");
        slowdown_svg(&path, "test", &[("homa", &h), ("tcp", &t)]).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        assert!(svg.starts_with("<svg") && svg.contains("homa P50") && svg.contains("tcp P99"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
