//! The `--plot` picture of a run, as SVG written by hand (no plotting crate): receivers
//! complete over virtual time, and DATA symbols sent over virtual time against the lower
//! bound. Round starts are marked on both.

use std::fmt::Write as _;

use crate::run::RunReport;

const WIDTH: f64 = 900.0;
const PANEL_HEIGHT: f64 = 300.0;
const MARGIN_LEFT: f64 = 80.0;
const MARGIN_RIGHT: f64 = 30.0;
const MARGIN_TOP: f64 = 60.0;
const PANEL_GAP: f64 = 70.0;
/// Ticks per axis, roughly.
const TICKS: f64 = 6.0;

/// A step of 1, 2 or 5 times a power of ten giving about [`TICKS`] ticks over `span`.
fn tick_step(span: f64) -> f64 {
    if !(span.is_finite() && span > 0.0) {
        return 1.0;
    }
    let raw = span / TICKS;
    let power = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0].into_iter().map(|m| m * power).find(|s| *s >= raw).unwrap_or(10.0 * power);
    step.max(f64::MIN_POSITIVE)
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

fn label(value: f64) -> String {
    if value.abs() >= 1e6 {
        format!("{:.1}M", value / 1e6)
    } else if value.abs() >= 1e4 {
        format!("{:.0}k", value / 1e3)
    } else if value.fract() == 0.0 {
        format!("{value:.0}")
    } else {
        format!("{value:.1}")
    }
}

/// One chart area: maps data coordinates to the SVG's.
struct Panel {
    top: f64,
    x_max: f64,
    y_max: f64,
}

impl Panel {
    fn inner_width() -> f64 {
        WIDTH - MARGIN_LEFT - MARGIN_RIGHT
    }

    fn x(&self, value: f64) -> f64 {
        MARGIN_LEFT + (value / self.x_max).clamp(0.0, 1.0) * Self::inner_width()
    }

    fn y(&self, value: f64) -> f64 {
        self.top + PANEL_HEIGHT - (value / self.y_max).clamp(0.0, 1.0) * PANEL_HEIGHT
    }

    /// Frame, grid, tick labels, axis titles and round markers.
    fn axes(&self, out: &mut String, title: &str, x_title: &str, y_title: &str, rounds: &[f64]) {
        let (left, right, top, bottom) = (MARGIN_LEFT, WIDTH - MARGIN_RIGHT, self.top, self.top + PANEL_HEIGHT);
        let _ = writeln!(out, r#"<text x="{left}" y="{:.1}" font-size="15" font-weight="bold">{}</text>"#, top - 12.0, escape(title));
        let step = tick_step(self.x_max);
        // Bounded: at most about TICKS + 1 ticks per axis.
        for i in 0..=(TICKS as usize * 3) {
            let v = step * i as f64;
            if v > self.x_max * 1.0001 {
                break;
            }
            let x = self.x(v);
            let _ = writeln!(out, r##"<line x1="{x:.1}" y1="{top}" x2="{x:.1}" y2="{bottom}" stroke="#eee"/>"##);
            let _ = writeln!(out, r#"<text x="{x:.1}" y="{:.1}" font-size="11" text-anchor="middle">{}</text>"#, bottom + 15.0, label(v));
        }
        let step = tick_step(self.y_max);
        for i in 0..=(TICKS as usize * 3) {
            let v = step * i as f64;
            if v > self.y_max * 1.0001 {
                break;
            }
            let y = self.y(v);
            let _ = writeln!(out, r##"<line x1="{left}" y1="{y:.1}" x2="{right}" y2="{y:.1}" stroke="#eee"/>"##);
            let _ = writeln!(out, r#"<text x="{:.1}" y="{:.1}" font-size="11" text-anchor="end">{}</text>"#, left - 6.0, y + 4.0, label(v));
        }
        for (i, at) in rounds.iter().enumerate() {
            let x = self.x(*at);
            let _ = writeln!(out, r##"<line x1="{x:.1}" y1="{top}" x2="{x:.1}" y2="{bottom}" stroke="#c9a0dc" stroke-dasharray="2,3"/>"##);
            let _ = writeln!(out, r##"<text x="{:.1}" y="{:.1}" font-size="10" fill="#8a5aa8">r{i}</text>"##, x + 2.0, top + 11.0);
        }
        let _ = writeln!(
            out,
            r##"<rect x="{left}" y="{top}" width="{:.1}" height="{PANEL_HEIGHT}" fill="none" stroke="#333"/>"##,
            right - left
        );
        let _ = writeln!(
            out,
            r#"<text x="{:.1}" y="{:.1}" font-size="12" text-anchor="middle">{}</text>"#,
            (left + right) / 2.0,
            bottom + 32.0,
            escape(x_title)
        );
        let _ = writeln!(
            out,
            r#"<text x="18" y="{:.1}" font-size="12" text-anchor="middle" transform="rotate(-90 18 {:.1})">{}</text>"#,
            (top + bottom) / 2.0,
            (top + bottom) / 2.0,
            escape(y_title)
        );
    }
}

/// The SVG document for a run.
pub fn svg(report: &RunReport) -> String {
    let end = report.samples.last().map_or(0.0, |s| s.at_secs).max(report.virtual_seconds).max(1.0);
    let height = MARGIN_TOP + 2.0 * PANEL_HEIGHT + PANEL_GAP + 50.0;
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" font-family="sans-serif">"#
    );
    let _ = writeln!(out, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let heading = format!(
        "{} receivers, {} bytes, {}, {} fidelity, {}: efficiency {:.4}, seed {}",
        report.receivers, report.size_bytes, report.loss_model, report.fidelity, report.delivery, report.efficiency, report.seed
    );
    let _ = writeln!(out, r#"<text x="{MARGIN_LEFT}" y="22" font-size="13">{}</text>"#, escape(&heading));

    // Receivers complete over time: one step per completion.
    let completion = Panel { top: MARGIN_TOP, x_max: end, y_max: report.receivers.max(1) as f64 };
    completion.axes(&mut out, "Receivers complete", "virtual time (s)", "receivers", &report.round_starts);
    let mut points = format!("{:.1},{:.1}", completion.x(0.0), completion.y(0.0));
    for (i, at) in report.completion_times.iter().enumerate() {
        let _ = write!(
            points,
            " {:.1},{:.1} {:.1},{:.1}",
            completion.x(*at),
            completion.y(i as f64),
            completion.x(*at),
            completion.y(i as f64 + 1.0)
        );
    }
    let _ = write!(points, " {:.1},{:.1}", completion.x(end), completion.y(report.completion_times.len() as f64));
    let _ = writeln!(out, r##"<polyline points="{points}" fill="none" stroke="#1f77b4" stroke-width="2"/>"##);

    // DATA symbols sent over time against the bound and the source symbols.
    let sent_max = report.samples.iter().map(|s| s.symbols_sent).max().unwrap_or(0) as f64;
    let y_max = sent_max.max(report.lower_bound_symbols) * 1.08;
    let symbols = Panel { top: MARGIN_TOP + PANEL_HEIGHT + PANEL_GAP, x_max: end, y_max: y_max.max(1.0) };
    symbols.axes(&mut out, "DATA symbols sent against the lower bound", "virtual time (s)", "symbols", &report.round_starts);
    let points: Vec<String> =
        report.samples.iter().map(|s| format!("{:.1},{:.1}", symbols.x(s.at_secs), symbols.y(s.symbols_sent as f64))).collect();
    let _ = writeln!(out, r##"<polyline points="{}" fill="none" stroke="#d62728" stroke-width="2"/>"##, points.join(" "));
    for (value, colour, dash, name) in [
        (report.lower_bound_symbols, "#2ca02c", "6,4", format!("lower bound {:.0}", report.lower_bound_symbols)),
        (report.source_symbols as f64, "#7f7f7f", "2,3", format!("source symbols {}", report.source_symbols)),
    ] {
        let y = symbols.y(value);
        let _ = writeln!(
            out,
            r#"<line x1="{MARGIN_LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="{colour}" stroke-dasharray="{dash}" stroke-width="1.5"/>"#,
            WIDTH - MARGIN_RIGHT
        );
        let _ = writeln!(
            out,
            r#"<text x="{:.1}" y="{:.1}" font-size="11" fill="{colour}">{}</text>"#,
            MARGIN_LEFT + 6.0,
            y - 4.0,
            escape(&name)
        );
    }
    let legend = format!("sent {} (efficiency {:.4}); dashed purple: round starts", report.symbols_sent, report.efficiency);
    let _ = writeln!(
        out,
        r##"<text x="{:.1}" y="{:.1}" font-size="11" fill="#d62728" text-anchor="end">{}</text>"##,
        WIDTH - MARGIN_RIGHT - 6.0,
        symbols.top + PANEL_HEIGHT - 8.0,
        escape(&legend)
    );
    let _ = writeln!(out, "</svg>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round_numbers() {
        assert_eq!(tick_step(60.0), 10.0);
        assert_eq!(tick_step(37_000.0), 10_000.0);
        assert_eq!(tick_step(2.0), 0.5);
        assert_eq!(tick_step(0.0), 1.0);
    }
}
