//! The import report: what became configuration, what did not and why, and the
//! environment variables each function expects, resolved or not.
//!
//! It is printed to stderr and written as comments at the top of the configuration file,
//! so the file says where it came from and what is still to do by hand.

use std::fmt::Write as _;

/// Everything an import has to tell its reader.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Report {
    /// The template and its format, e.g. `template.yaml (SAM)`.
    pub source: String,
    /// One line per route and integration written.
    pub translated: Vec<String>,
    /// One line per resource, property or section left out, with the reason.
    pub not_translated: Vec<String>,
    /// The environment variables of the functions, in the order the template lists them.
    pub environment: Vec<EnvLine>,
    /// Anything else the reader should know (defaults taken, values guessed on purpose).
    pub notes: Vec<String>,
}

/// One environment variable of one function.
#[derive(Debug, Clone, PartialEq)]
pub struct EnvLine {
    /// The function's logical id (or serverless key).
    pub function: String,
    /// The variable.
    pub name: String,
    /// Its value, or why it has none.
    pub value: Result<String, String>,
    /// How the value was reached (`!Ref ConnectionsTable → "…" (the table's TableName)`).
    pub how: Vec<String>,
}

impl Report {
    /// An empty report about `source`.
    pub fn new(source: impl Into<String>) -> Self {
        Self {
            source: source.into(),
            ..Self::default()
        }
    }

    /// Records something left out and why.
    pub fn skip(&mut self, what: impl AsRef<str>, why: impl AsRef<str>) {
        self.not_translated
            .push(format!("{}: {}", what.as_ref(), why.as_ref()));
    }

    /// Environment variables that have no value yet.
    pub fn unresolved_variables(&self) -> impl Iterator<Item = &EnvLine> {
        self.environment.iter().filter(|e| e.value.is_err())
    }

    /// The report as plain text, one item a line.
    pub fn render(&self) -> String {
        let mut out = format!("switchboard import: {}\n", self.source);
        section(&mut out, "Translated", &self.translated);
        section(&mut out, "Not translated", &self.not_translated);
        if !self.environment.is_empty() {
            out.push_str("\nEnvironment variables the functions expect:\n");
            for line in &self.environment {
                match &line.value {
                    Ok(value) => {
                        let _ = write!(out, "  - {}: {} = {value:?}", line.function, line.name);
                        if line.how.is_empty() {
                            out.push_str(" (as written)\n");
                        } else {
                            let _ = writeln!(out, " (resolved: {})", line.how.join("; "));
                        }
                    }
                    Err(why) => {
                        let _ = writeln!(
                            out,
                            "  - {}: {} NOT RESOLVED, set it by hand: {why}",
                            line.function, line.name
                        );
                    }
                }
            }
        }
        section(&mut out, "Notes", &self.notes);
        out
    }
}

fn section(out: &mut String, title: &str, lines: &[String]) {
    if lines.is_empty() {
        return;
    }
    let _ = writeln!(out, "\n{title}:");
    for line in lines {
        let _ = writeln!(out, "  - {line}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_section() {
        let mut report = Report::new("template.yaml (SAM)");
        report.translated.push("route $connect → onconnect".into());
        report.skip("ConnectionsTable (AWS::DynamoDB::Table)", "run it yourself");
        report.environment.push(EnvLine {
            function: "OnConnectFunction".into(),
            name: "TABLE_NAME".into(),
            value: Ok("chat".into()),
            how: vec!["!Ref ConnectionsTable → \"chat\"".into()],
        });
        report.environment.push(EnvLine {
            function: "OnConnectFunction".into(),
            name: "SHARED".into(),
            value: Err("Fn::ImportValue reads another stack's export".into()),
            how: Vec::new(),
        });
        let text = report.render();
        assert!(text.starts_with("switchboard import: template.yaml (SAM)\n"));
        assert!(text.contains("Translated:\n  - route $connect → onconnect\n"));
        assert!(text.contains("  - ConnectionsTable (AWS::DynamoDB::Table): run it yourself\n"));
        assert!(text.contains("TABLE_NAME = \"chat\" (resolved: !Ref ConnectionsTable"));
        assert!(text.contains("SHARED NOT RESOLVED, set it by hand: Fn::ImportValue"));
        assert!(!text.contains("Notes:"));
        assert_eq!(report.unresolved_variables().count(), 1);
    }
}
