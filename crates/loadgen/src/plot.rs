//! Draws sweep curves as one SVG (plotters): orders/s ended, and p50/p99 POST → confirmed,
//! against the offered rate — one colour per curve, so tracing on/off or one worker against
//! the default read at a glance. Curves come from a sweep just run or from its CSV files.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use plotters::prelude::*;

/// The columns of a sweep's CSV, in order: `sweep --csv` writes them, [`Curve::read`] reads
/// the ones a curve needs — one list, so the two cannot drift apart.
pub const CSV_COLUMNS: [&str; 14] = [
    "offered_per_sec",
    "ended_per_sec",
    "errors",
    "accept_p50_ms",
    "accept_p99_ms",
    "confirmed_p50_ms",
    "confirmed_p90_ms",
    "confirmed_p99_ms",
    "confirmed_p999_ms",
    "confirmed_max_ms",
    "notified_p50_ms",
    "notified_p99_ms",
    "writes_per_order",
    "r",
];

/// One step of a curve.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    pub offered: f64,
    pub ended: f64,
    pub confirmed_p50_ms: f64,
    pub confirmed_p99_ms: f64,
}

/// A named throughput/latency curve.
#[derive(Debug, Clone, PartialEq)]
pub struct Curve {
    pub label: String,
    pub points: Vec<Point>,
}

impl Curve {
    /// A curve from the CSV `sweep --csv` writes, named after the file.
    pub fn read(path: &Path) -> anyhow::Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        Self::parse(&label_of(path), &text).with_context(|| format!("parsing {}", path.display()))
    }

    fn parse(label: &str, text: &str) -> anyhow::Result<Self> {
        let mut lines = text.lines().filter(|l| !l.trim().is_empty());
        let header: Vec<&str> = lines.next().context("empty file")?.split(',').collect();
        let column = |name: &str| {
            header
                .iter()
                .position(|h| h.trim() == name)
                .with_context(|| format!("no column {name}"))
        };
        let (offered, ended, p50, p99) = (
            column(CSV_COLUMNS[0])?,
            column(CSV_COLUMNS[1])?,
            column(CSV_COLUMNS[5])?,
            column(CSV_COLUMNS[7])?,
        );
        let points = lines
            .enumerate()
            .map(|(row, line)| {
                let fields: Vec<&str> = line.split(',').collect();
                let number = |index: usize| -> anyhow::Result<f64> {
                    let field = fields.get(index).copied().unwrap_or("");
                    field
                        .trim()
                        .parse()
                        .with_context(|| format!("row {}: not a number: {field:?}", row + 2))
                };
                Ok(Point {
                    offered: number(offered)?,
                    ended: number(ended)?,
                    confirmed_p50_ms: number(p50)?,
                    confirmed_p99_ms: number(p99)?,
                })
            })
            .collect::<anyhow::Result<_>>()?;
        Ok(Self {
            label: label.to_owned(),
            points,
        })
    }
}

/// A curve's name: its file's name without the extension.
pub fn label_of(path: &Path) -> String {
    path.file_stem()
        .map_or_else(|| "sweep".into(), |s| s.to_string_lossy().into_owned())
}

/// The bottom of the latency axis (a log scale has no zero).
const LATENCY_FLOOR_MS: f64 = 0.5;

/// Writes `curves` to `path` as an SVG: throughput above, latency below.
pub fn draw(curves: &[Curve], path: &PathBuf) -> anyhow::Result<()> {
    let max = |value: fn(&Point) -> f64| {
        curves
            .iter()
            .flat_map(|c| c.points.iter().map(value))
            .fold(0.0_f64, f64::max)
    };
    let offered_max = (max(|p| p.offered) * 1.05).max(1.0);
    let ended_max = (max(|p| p.ended).max(max(|p| p.offered)) * 1.05).max(1.0);
    // Log scale: the knee at saturation would flatten everything below it on a linear one.
    let latency_max = (max(|p| p.confirmed_p99_ms) * 1.5).max(10.0);
    let floored = |ms: f64| ms.max(LATENCY_FLOOR_MS);

    let root = SVGBackend::new(path, (900, 760)).into_drawing_area();
    let drawn = (|| -> Result<(), Box<dyn std::error::Error>> {
        root.fill(&WHITE)?;
        let (top, bottom) = root.split_vertically(380);
        let mut throughput = ChartBuilder::on(&top)
            .caption("orders/s ended vs offered", ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(60)
            .build_cartesian_2d(0.0..offered_max, 0.0..ended_max)?;
        throughput
            .configure_mesh()
            .x_desc("offered orders/s")
            .y_desc("ended orders/s")
            .draw()?;
        let mut latency = ChartBuilder::on(&bottom)
            .caption(
                "POST → confirmed, p50 (dots) and p99 (line), ms (log scale)",
                ("sans-serif", 20),
            )
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(60)
            .build_cartesian_2d(
                0.0..offered_max,
                (LATENCY_FLOOR_MS..latency_max).log_scale(),
            )?;
        latency
            .configure_mesh()
            .x_desc("offered orders/s")
            .y_desc("ms")
            .draw()?;
        for (index, curve) in curves.iter().enumerate() {
            let colour = Palette99::pick(index).to_rgba();
            let points = &curve.points;
            throughput
                .draw_series(LineSeries::new(
                    points.iter().map(|p| (p.offered, p.ended)),
                    colour.stroke_width(2),
                ))?
                .label(curve.label.as_str())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2))
                });
            throughput.draw_series(
                points
                    .iter()
                    .map(|p| Circle::new((p.offered, p.ended), 3, colour.filled())),
            )?;
            latency.draw_series(LineSeries::new(
                points
                    .iter()
                    .map(|p| (p.offered, floored(p.confirmed_p99_ms))),
                colour.stroke_width(2),
            ))?;
            latency.draw_series(points.iter().map(|p| {
                Circle::new((p.offered, floored(p.confirmed_p50_ms)), 3, colour.filled())
            }))?;
        }
        throughput
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.9))
            .border_style(BLACK)
            .draw()?;
        root.present()?;
        Ok(())
    })();
    drawn.map_err(|e| anyhow::anyhow!("drawing {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const CSV: &str = "offered_per_sec,ended_per_sec,errors,confirmed_p50_ms,confirmed_p99_ms\n\
                       1000,1000,0,7.1,16.9\n\
                       2000,1935,0,146.4,280.3\n";

    #[test]
    fn a_sweep_csv_reads_as_a_curve() {
        let curve = Curve::parse("off", CSV).unwrap();
        assert_eq!(curve.points.len(), 2);
        assert_eq!(
            curve.points[1],
            Point {
                offered: 2000.0,
                ended: 1935.0,
                confirmed_p50_ms: 146.4,
                confirmed_p99_ms: 280.3
            }
        );
    }

    #[test]
    fn a_csv_without_the_columns_is_refused_with_the_missing_one() {
        let error = Curve::parse("bad", "offered_per_sec,ended_per_sec\n1,1\n").unwrap_err();
        assert!(
            format!("{error:#}").contains("confirmed_p50_ms"),
            "{error:#}"
        );
    }

    #[test]
    fn curves_are_drawn_as_an_svg_with_their_labels() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("curve.svg");
        let curves = [
            Curve::parse("tracing-off", CSV).unwrap(),
            Curve::parse("tracing-on", CSV).unwrap(),
        ];
        draw(&curves, &path).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        assert!(svg.starts_with("<svg"), "{svg}");
        assert!(svg.contains("tracing-off") && svg.contains("tracing-on"));
        assert!(svg.contains("<polyline"), "no curve drawn");
    }
}
