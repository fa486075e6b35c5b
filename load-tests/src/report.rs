//! Output: every scenario prints exactly one JSON line (an object with a `"scenario"` key) and
//! then a readable table built from that same JSON, so `run-all`'s markdown summary can
//! rebuild the table from the saved results.

use std::fmt::Write as _;
use std::io::Write as _;

use serde_json::Value;

/// A titled table of strings.
pub struct Table {
    /// Shown above the table.
    pub title: String,
    /// Column names.
    pub header: Vec<String>,
    /// Rows, as many cells as the header.
    pub rows: Vec<Vec<String>>,
}

impl Table {
    /// An empty table.
    pub fn new(title: impl Into<String>, header: &[&str]) -> Self {
        Table {
            title: title.into(),
            header: header.iter().map(|h| h.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    /// Adds a row: a label and one cell per remaining column.
    pub fn row(&mut self, label: &str, cells: Vec<String>) {
        let mut row = vec![label.to_owned()];
        row.extend(cells);
        row.resize(self.header.len(), String::new());
        self.rows.push(row);
    }

    /// Aligned plain text for a terminal.
    pub fn text(&self) -> String {
        let mut widths: Vec<usize> = self.header.iter().map(String::len).collect();
        for row in &self.rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.len());
            }
        }
        let mut out = format!("== {}\n", self.title);
        let line = |out: &mut String, cells: &[String]| {
            for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
                if i == 0 {
                    let _ = write!(out, "{cell:<w$}");
                } else {
                    let _ = write!(out, "  {cell:>w$}");
                }
            }
            out.push('\n');
        };
        line(&mut out, &self.header);
        for row in &self.rows {
            line(&mut out, row);
        }
        out
    }

    /// A markdown table (with the title as a bold line above it).
    pub fn markdown(&self) -> String {
        let mut out = format!("**{}**\n\n| {} |\n", self.title, self.header.join(" | "));
        let _ = writeln!(
            out,
            "|{}",
            self.header
                .iter()
                .enumerate()
                .map(|(i, _)| if i == 0 { " --- |" } else { " ---: |" })
                .collect::<String>()
        );
        for row in &self.rows {
            let _ = writeln!(out, "| {} |", row.join(" | "));
        }
        out
    }
}

/// A number for a table: integers with thousands separators, others with up to 3 decimals;
/// "–" for a missing value.
pub fn num(v: &Value) -> String {
    match v.as_f64() {
        None => "–".to_owned(),
        Some(x) if x.fract() == 0.0 && x.abs() < 1e15 => thousands(x as i64),
        Some(x) if x.abs() >= 1000.0 => thousands(x.round() as i64),
        Some(x) => {
            let s = format!("{x:.3}");
            s.trim_end_matches('0').trim_end_matches('.').to_owned()
        }
    }
}

fn thousands(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 { format!("-{out}") } else { out }
}

/// The usual latency cells of a `stats::summary` object: p50, p90, p99, p99.9, max.
pub fn latency_cells(summary: &Value) -> Vec<String> {
    ["p50_ms", "p90_ms", "p99_ms", "p999_ms", "max_ms"]
        .iter()
        .map(|k| num(&summary[k]))
        .collect()
}

/// Header for [`latency_cells`] after `first` columns.
pub fn latency_header<'a>(first: &[&'a str]) -> Vec<&'a str> {
    let mut h = first.to_vec();
    h.extend(["p50 ms", "p90 ms", "p99 ms", "p99.9 ms", "max ms"]);
    h
}

/// Prints the JSON line, then the table.
pub fn emit(result: &Value, table: &Table) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{result}");
    let _ = writeln!(out, "{}", table.text());
    let _ = out.flush();
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn numbers_read_well() {
        assert_eq!(num(&json!(1234567)), "1,234,567");
        assert_eq!(num(&json!(0.25)), "0.25");
        assert_eq!(num(&json!(12345.6)), "12,346");
        assert_eq!(num(&json!(3.0)), "3");
        assert_eq!(num(&Value::Null), "–");
    }

    #[test]
    fn tables_align_and_render_markdown() {
        let mut t = Table::new("echo", &["target", "msgs/s"]);
        t.row("baseline", vec!["85,000".into()]);
        assert_eq!(t.text(), "== echo\ntarget    msgs/s\nbaseline  85,000\n");
        assert!(t.markdown().contains("| baseline | 85,000 |"));
    }
}
