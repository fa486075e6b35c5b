//! PNG charts of a results file, drawn with plotters' bitmap backend: latency percentiles
//! (log scale) per scenario, and gateway and baseline RSS against connection count from
//! `idle`'s steps. Text is rendered with ab_glyph from a TrueType file read at run time
//! (DejaVu Sans from Debian's fonts-dejavu-core, or `$LOADGEN_FONT`), so nothing links
//! against fontconfig or freetype.

use std::path::Path;
use std::sync::OnceLock;

use plotters::prelude::*;
use plotters::style::FontStyle;
use serde_json::Value;

/// Where the font is looked for when `$LOADGEN_FONT` is not set.
const FONT_PATHS: [&str; 2] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
];

/// Registers the font once; the error says how to get one.
fn font() -> Result<(), String> {
    static REGISTERED: OnceLock<Result<(), String>> = OnceLock::new();
    REGISTERED
        .get_or_init(|| {
            let candidates: Vec<String> = std::env::var("LOADGEN_FONT")
                .ok()
                .into_iter()
                .chain(FONT_PATHS.iter().map(|p| p.to_string()))
                .collect();
            let bytes = candidates
                .iter()
                .find_map(|p| std::fs::read(p).ok())
                .ok_or_else(|| {
                    format!(
                        "no font found at {} (install Debian's fonts-dejavu-core or set LOADGEN_FONT to a .ttf file)",
                        candidates.join(", ")
                    )
                })?;
            // plotters keeps fonts for the life of the process.
            let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
            plotters::style::register_font("sans-serif", FontStyle::Normal, bytes)
                .map_err(|_| "the font file is not a usable TrueType font".to_owned())
        })
        .clone()
}

/// Line colours, in series order (high contrast on white).
const COLORS: [RGBColor; 4] = [
    RGBColor(214, 39, 40),
    RGBColor(31, 119, 180),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
];

/// Percentile columns of a latency summary, in order.
const PERCENTILES: [(&str, &str); 5] = [
    ("p50", "p50_ms"),
    ("p90", "p90_ms"),
    ("p99", "p99_ms"),
    ("p99.9", "p999_ms"),
    ("max", "max_ms"),
];

/// A line per series over the percentiles, on a log-scale y axis in ms.
fn latency_chart(path: &Path, title: &str, series: &[(String, &Value)]) -> Result<(), String> {
    let points: Vec<(String, Vec<(i32, f64)>)> = series
        .iter()
        .map(|(label, summary)| {
            let pts = PERCENTILES
                .iter()
                .enumerate()
                .filter_map(|(i, (_, key))| {
                    summary[*key].as_f64().map(|v| (i as i32, v.max(0.001)))
                })
                .collect();
            (label.clone(), pts)
        })
        .filter(|(_, pts): &(String, Vec<(i32, f64)>)| !pts.is_empty())
        .collect();
    if points.is_empty() {
        return Err("no latency data".into());
    }
    let values = points.iter().flat_map(|(_, p)| p.iter().map(|x| x.1));
    let (lo, hi) = values.fold((f64::MAX, 0.0f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
    let root = BitMapBackend::new(path, (960, 560)).into_drawing_area();
    let e = |e: DrawingAreaErrorKind<_>| e.to_string();
    root.fill(&WHITE).map_err(e)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 24))
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(80)
        .build_cartesian_2d(
            -0.3f64..(PERCENTILES.len() as f64 - 0.7),
            (lo * 0.7..hi * 1.5).log_scale(),
        )
        .map_err(e)?;
    chart
        .configure_mesh()
        .x_labels(PERCENTILES.len())
        .x_label_formatter(&|x| {
            let i = x.round();
            if (x - i).abs() < 0.05 && i >= 0.0 && (i as usize) < PERCENTILES.len() {
                PERCENTILES[i as usize].0.to_owned()
            } else {
                String::new()
            }
        })
        .y_desc("latency (ms, log scale)")
        .y_label_formatter(&|y| format!("{y}"))
        .label_style(("sans-serif", 16))
        .axis_desc_style(("sans-serif", 17))
        .draw()
        .map_err(e)?;
    let lines: Vec<(String, Vec<(f64, f64)>)> = points
        .iter()
        .map(|(label, pts)| {
            (
                label.clone(),
                pts.iter().map(|(x, y)| (*x as f64, *y)).collect(),
            )
        })
        .collect();
    draw_lines(&mut chart, &lines)?;
    root.present().map_err(e)?;
    Ok(())
}

/// RSS (MiB) against connections for each server's idle steps.
fn rss_chart(path: &Path, title: &str, series: &[(String, &Value)]) -> Result<(), String> {
    let lines: Vec<(String, Vec<(f64, f64)>)> = series
        .iter()
        .map(|(label, steps)| {
            let pts = steps
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|s| {
                            Some((s["connections"].as_f64()?, s["rss_kib"].as_f64()? / 1024.0))
                        })
                        .collect()
                })
                .unwrap_or_default();
            (label.clone(), pts)
        })
        .collect();
    let max_x = lines
        .iter()
        .flat_map(|(_, p)| p.iter().map(|x| x.0))
        .fold(1.0f64, f64::max);
    let max_y = lines
        .iter()
        .flat_map(|(_, p)| p.iter().map(|x| x.1))
        .fold(1.0f64, f64::max);
    let root = BitMapBackend::new(path, (960, 560)).into_drawing_area();
    let e = |e: DrawingAreaErrorKind<_>| e.to_string();
    root.fill(&WHITE).map_err(e)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 24))
        .margin(16)
        .x_label_area_size(48)
        .y_label_area_size(80)
        .build_cartesian_2d(0f64..max_x * 1.05, 0f64..max_y * 1.15)
        .map_err(e)?;
    chart
        .configure_mesh()
        .x_desc("idle connections held")
        .y_desc("process RSS (MiB)")
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&|y| format!("{y:.0}"))
        .label_style(("sans-serif", 16))
        .axis_desc_style(("sans-serif", 17))
        .draw()
        .map_err(e)?;
    draw_lines(&mut chart, &lines)?;
    root.present().map_err(e)?;
    Ok(())
}

/// Draws each `(label, points)` as a coloured line with dots, and the legend.
fn draw_lines<'a, X, Y>(
    chart: &mut ChartContext<'a, BitMapBackend<'a>, Cartesian2d<X, Y>>,
    lines: &[(String, Vec<(f64, f64)>)],
) -> Result<(), String>
where
    X: Ranged<ValueType = f64>,
    Y: Ranged<ValueType = f64>,
{
    let e = |e: DrawingAreaErrorKind<_>| e.to_string();
    for (i, (label, pts)) in lines.iter().enumerate() {
        let color = COLORS[i % COLORS.len()].to_rgba();
        chart
            .draw_series(LineSeries::new(pts.clone(), color.stroke_width(3)))
            .map_err(e)?
            .label(label.as_str())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 22, y)], color.stroke_width(3))
            });
        chart
            .draw_series(pts.iter().map(|p| Circle::new(*p, 5, color.filled())))
            .map_err(e)?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 17))
        .draw()
        .map_err(e)
}

/// Draws every chart the results allow into `dir`; returns (title, file name) of each, or
/// why none could be drawn.
pub fn draw_all(results: &Value, dir: &Path) -> Result<Vec<(String, String)>, String> {
    font()?;
    let empty = Vec::new();
    let scenarios = results["scenarios"].as_array().unwrap_or(&empty);
    let mut drawn = Vec::new();
    for s in scenarios.iter().filter(|s| s.get("error").is_none()) {
        let name = s["scenario"].as_str().unwrap_or("?");
        let series: Vec<(String, &Value)> = match name {
            "connect" => vec![
                ("baseline".into(), &s["baseline"]["latency"]),
                ("gateway".into(), &s["gateway"]["latency"]),
                (
                    "gateway + mock $connect".into(),
                    &s["gateway_mock_connect"]["latency"],
                ),
            ],
            "echo" => vec![
                ("baseline".into(), &s["baseline"]["latency"]),
                ("gateway".into(), &s["gateway"]["latency"]),
            ],
            "http-route" => vec![
                ("backend directly, paced".into(), &s["direct"]["latency"]),
                (
                    "through the gateway, paced".into(),
                    &s["gateway"]["latency"],
                ),
                (
                    "backend directly, closed-loop".into(),
                    &s["direct_saturated"]["latency"],
                ),
                (
                    "through the gateway, closed-loop".into(),
                    &s["gateway_saturated"]["latency"],
                ),
            ],
            "callback" => vec![
                ("POST to 200".into(), &s["gateway"]["post_latency"]),
                ("delivery".into(), &s["gateway"]["delivery_latency"]),
            ],
            "fanout" => vec![
                ("baseline".into(), &s["baseline"]["delivery_latency"]),
                ("gateway".into(), &s["gateway"]["delivery_latency"]),
            ],
            "cluster" => vec![
                (
                    "cross-node POST (from schedule)".into(),
                    &s["cross_node_post"]["latency"],
                ),
                (
                    "cross-node POST delivery".into(),
                    &s["cross_node_post"]["delivery_latency"],
                ),
                (
                    "broadcast delivery".into(),
                    &s["broadcast"]["delivery_latency"],
                ),
            ],
            "resume-cluster" => vec![
                ("resume after the kill".into(), &s["herd"]["resume_latency"]),
                (
                    "survivors before the kill".into(),
                    &s["survivors_before"]["latency"],
                ),
                (
                    "survivors during the herd".into(),
                    &s["survivors_during"]["latency"],
                ),
            ],
            "idle" => {
                let file = "idle-rss.png".to_owned();
                let g = &s["gateway"];
                let b = &s["baseline"];
                let series = [
                    (
                        format!(
                            "gateway ({} KiB/conn)",
                            crate::report::num(&g["slope_kib_per_connection"])
                        ),
                        &g["steps"],
                    ),
                    (
                        format!(
                            "baseline ({} KiB/conn)",
                            crate::report::num(&b["slope_kib_per_connection"])
                        ),
                        &b["steps"],
                    ),
                ];
                let title = "idle: RSS against idle connections".to_owned();
                rss_chart(&dir.join(&file), &title, &series)?;
                drawn.push((title, file));
                continue;
            }
            _ => continue,
        };
        let file = format!("latency-{name}.png");
        let title = format!("{name}: latency percentiles");
        latency_chart(&dir.join(&file), &title, &series)?;
        drawn.push((title, file));
    }
    Ok(drawn)
}
