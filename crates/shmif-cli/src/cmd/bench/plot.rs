//! The throughput plot: frames per second per reader against frame size,
//! one line per mode and reader count, and the copy floor (SVG).

use anyhow::{anyhow, Result};
use plotters::prelude::*;
use std::path::Path;

/// How a line is drawn.
#[derive(Debug, Clone, Copy)]
pub enum Style {
    /// The library, with this many readers.
    Solid(usize),
    /// The baseline, with this many readers.
    Dashed(usize),
    /// The one-process copy floor.
    Floor,
}

/// One line of the plot.
#[derive(Debug, Clone)]
pub struct Series {
    /// Legend text.
    pub label: String,
    /// (frame bytes, Mframes/s) points.
    pub points: Vec<(f64, f64)>,
    /// Line style.
    pub style: Style,
}

fn colour(n: usize) -> RGBColor {
    match n {
        1 => RGBColor(31, 119, 180),
        2 => RGBColor(255, 127, 14),
        3 => RGBColor(44, 160, 44),
        _ => RGBColor(148, 103, 189),
    }
}

/// Writes the plot to `path` (log scale of Mframes/s).
pub fn write_svg(path: &Path, series: &[Series], quick: bool) -> Result<()> {
    let all = series.iter().flat_map(|s| s.points.iter());
    let (mut lo, mut hi) = (f64::MAX, 0.0f64);
    for &(_, y) in all {
        if y > 0.0 {
            lo = lo.min(y);
            hi = hi.max(y);
        }
    }
    if hi <= 0.0 {
        return Err(anyhow!("nothing to plot"));
    }
    // Room above the highest line for the legend.
    let (lo, hi) = (lo / 1.5, hi * 8.0);
    let root = SVGBackend::new(path, (860, 540)).into_drawing_area();
    let e = |e: DrawingAreaErrorKind<_>| anyhow!("plot: {e:?}");
    root.fill(&WHITE).map_err(e)?;
    let title = if quick {
        "shmif bus throughput per reader (RFC 2544, loss < 0.1 %; --quick)"
    } else {
        "shmif bus throughput per reader (RFC 2544, loss < 0.1 %)"
    };
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 18))
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(64)
        .build_cartesian_2d(0f64..1600f64, (lo..hi).log_scale())
        .map_err(e)?;
    chart
        .configure_mesh()
        .x_desc("frame size (bytes, Ethernet header included, no FCS)")
        .y_desc("Mframes/s delivered per reader")
        .x_label_formatter(&|v| format!("{v:.0}"))
        .y_label_formatter(&|v| format!("{v:.2}"))
        .draw()
        .map_err(e)?;
    for s in series {
        let pts: Vec<(f64, f64)> = s.points.iter().copied().filter(|p| p.1 > 0.0).collect();
        let (c, width, dashed) = match s.style {
            Style::Solid(n) => (colour(n), 2, false),
            Style::Dashed(n) => (colour(n), 1, true),
            Style::Floor => (RGBColor(0, 0, 0), 1, true),
        };
        let style = ShapeStyle::from(&c).stroke_width(width);
        let drawn = if dashed {
            chart.draw_series(DashedLineSeries::new(pts.clone(), 6, 4, style))
        } else {
            chart.draw_series(LineSeries::new(pts.clone(), style))
        }
        .map_err(e)?;
        drawn
            .label(s.label.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style));
        chart
            .draw_series(pts.iter().map(|&p| Circle::new(p, 3, c.filled())))
            .map_err(e)?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(e)?;
    root.present().map_err(e)?;
    Ok(())
}
