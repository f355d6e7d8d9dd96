//! SVG plots of results (plotters): scheduling throughput over time for a workload's
//! runs, and a sweep's throughput against placement quality.

use anyhow::{anyhow, Result};
use plotters::prelude::*;
use std::path::Path;

const PALETTE: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

fn failed(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow!("drawing: {e}")
}

/// One line per run: pods bound per second against seconds into the measurement.
pub fn throughput_over_time(path: &Path, title: &str, runs: &[(String, Vec<f64>)]) -> Result<()> {
    let root = SVGBackend::new(path, (900, 480)).into_drawing_area();
    root.fill(&WHITE).map_err(failed)?;
    let seconds = runs.iter().map(|(_, s)| s.len()).max().unwrap_or(1).max(1);
    let top = runs.iter().flat_map(|(_, s)| s.iter().copied()).fold(1.0f64, f64::max) * 1.1;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..seconds as f64, 0f64..top)
        .map_err(failed)?;
    chart
        .configure_mesh()
        .x_desc("seconds into the measurement")
        .y_desc("pods bound per second")
        .draw()
        .map_err(failed)?;
    for (i, (label, series)) in runs.iter().enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        // Each sample covers the second that ends at its x.
        let points = series.iter().enumerate().map(|(s, v)| ((s + 1) as f64, *v));
        chart
            .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))
            .map_err(failed)?
            .label(label.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2)));
        chart.draw_series(points.map(|p| Circle::new(p, 3, color.filled()))).map_err(failed)?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .position(SeriesLabelPosition::LowerRight)
        .draw()
        .map_err(failed)?;
    root.present().map_err(failed)?;
    Ok(())
}

/// A point of a sweep: its label, throughput, and the two placement figures.
pub struct SweepPoint {
    pub label: String,
    pub throughput: f64,
    pub score_regret: Option<f64>,
    pub cpu_stddev: Option<f64>,
}

type Panel<'a> = DrawingArea<SVGBackend<'a>, plotters::coord::Shift>;
/// Which placement figure a panel puts on its x axis.
type XOf = fn(&SweepPoint) -> Option<f64>;

/// Two panels: throughput against score regret, and against the spread of per-node
/// CPU allocation; up and to the left is better in both.
pub fn sweep(path: &Path, title: &str, points: &[SweepPoint]) -> Result<()> {
    let root = SVGBackend::new(path, (1100, 500)).into_drawing_area();
    root.fill(&WHITE).map_err(failed)?;
    let root = root.titled(title, ("sans-serif", 20)).map_err(failed)?;
    let (left, right) = root.split_horizontally(550);
    let panels: [(&Panel, &str, XOf); 2] = [
        (&left, "score regret (1 - chosen/best score, audited)", |p| p.score_regret),
        (&right, "stddev of per-node CPU allocation", |p| p.cpu_stddev),
    ];
    let top = points.iter().map(|p| p.throughput).fold(1.0f64, f64::max) * 1.15;
    for (area, x_desc, x_of) in panels {
        let xs: Vec<f64> = points.iter().filter_map(x_of).collect();
        let x_max = xs.iter().copied().fold(0.0f64, f64::max);
        let x_max = if x_max > 0.0 { x_max * 1.2 } else { 1e-3 };
        let mut chart = ChartBuilder::on(area)
            .margin(14)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d(0f64..x_max, 0f64..top)
            .map_err(failed)?;
        chart.configure_mesh().x_desc(x_desc).y_desc("pods/s (average)").draw().map_err(failed)?;
        for (i, point) in points.iter().enumerate() {
            let Some(x) = x_of(point) else { continue };
            let color = PALETTE[i % PALETTE.len()];
            let at = (x, point.throughput);
            chart
                .draw_series(std::iter::once(
                    EmptyElement::at(at)
                        + Circle::new((0, 0), 5, color.filled())
                        + Text::new(point.label.clone(), (8, -14), ("sans-serif", 13)),
                ))
                .map_err(failed)?;
        }
    }
    root.present().map_err(failed)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plots_are_svg_files() {
        let dir = tempfile::tempdir().unwrap();
        let over_time = dir.path().join("t.svg");
        throughput_over_time(&over_time, "basic", &[("run 1".into(), vec![100.0, 250.0, 240.0])]).unwrap();
        let text = std::fs::read_to_string(&over_time).unwrap();
        assert!(text.starts_with("<svg") && text.contains("run 1"), "{}", &text[..200.min(text.len())]);
        let swept = dir.path().join("s.svg");
        let point = |label: &str, t: f64, r: f64| SweepPoint {
            label: label.into(),
            throughput: t,
            score_regret: Some(r),
            cpu_stddev: Some(r / 2.0),
        };
        sweep(&swept, "sweep", &[point("5", 900.0, 0.08), point("100", 400.0, 0.0)]).unwrap();
        assert!(std::fs::read_to_string(&swept).unwrap().contains("score regret"));
    }
}
