//! The layering guard: every `crate::` path in `src/` must point to a lower layer than the
//! module it is written in (or stay inside its own module), as docs/architecture.md draws
//! it. A new top-level module must be given a layer here, on purpose.
//!
//! It reads the source as text: comments are skipped, and `crate::{a, b::{c}}` groups are
//! expanded. `lib.rs` (the module list) and `main.rs` (the binary, which uses the library
//! through `switchboard::`) are not layers.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// The layers, from the ground up. A module may import only from layers below its own.
const LAYERS: &[&[&str]] = &[
    &["config", "telemetry::metrics", "bucket"],
    // `telemetry` itself is the tracing setup, which reads `[log]`.
    // `import` writes configuration text from AWS templates; it reads only `config`.
    &["connections", "telemetry", "import"],
    &["integrations"],
    &["routing"],
    &[
        "auth",
        "throttle",
        "cluster",
        "tls",
        "telemetry::access_log",
    ],
    &["api"],
    &["state"],
    &["edge", "management", "lifecycle"],
    &["app"],
];

/// The layer of a module key, or `None` for a module nobody placed.
fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|layer| layer.contains(&module))
}

/// The module key of a file under `src/`: its top-level module, or for `telemetry` its
/// submodule (`telemetry::metrics` is a leaf; `telemetry::access_log` is not).
fn module_of(relative: &Path) -> Option<String> {
    let parts: Vec<String> = relative
        .iter()
        .map(|p| p.to_string_lossy().trim_end_matches(".rs").to_owned())
        .collect();
    match parts.as_slice() {
        [file] if file == "lib" || file == "main" => None,
        [top, sub, ..] if top == "telemetry" && sub != "mod" => Some(format!("telemetry::{sub}")),
        [top, ..] => Some(top.clone()),
        [] => None,
    }
}

/// The code of a file without comments (line comments and doc comments; block comments
/// are not used in this crate).
fn code_of(text: &str) -> String {
    text.lines()
        .map(|line| {
            let trimmed = line.trim_start();
            if trimmed.starts_with("//") { "" } else { line }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every module key named by a `crate::` path in `code`.
fn imports(code: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        let before = rest[..at].chars().next_back();
        rest = &rest[at + "crate::".len()..];
        // `switchboard_crate::` or `some_crate::` are other names, not this crate.
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        expand(rest, &[], &mut found);
    }
    found
}

/// Reads the path that starts `text` (after `crate::` and any `prefix`), expanding a
/// `{…}` group into each of its items.
fn expand(text: &str, prefix: &[&str], found: &mut BTreeSet<String>) {
    if let Some(group) = text.strip_prefix('{') {
        let mut depth = 0;
        let mut start = 0;
        for (i, c) in group.char_indices() {
            match c {
                '{' => depth += 1,
                '}' if depth == 0 => {
                    item(&group[start..i], prefix, found);
                    return;
                }
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    item(&group[start..i], prefix, found);
                    start = i + 1;
                }
                _ => {}
            }
        }
        return;
    }
    item(text, prefix, found);
}

/// One path (it may end in a group). Only its first segment decides, but `telemetry` is
/// split by submodule.
fn item(text: &str, prefix: &[&str], found: &mut BTreeSet<String>) {
    let text = text.trim_start();
    let end = text
        .find(|c: char| !(c.is_alphanumeric() || c == '_'))
        .unwrap_or(text.len());
    let first = &text[..end];
    if first.is_empty() || !first.starts_with(|c: char| c.is_lowercase()) {
        return;
    }
    if prefix == ["telemetry"] {
        found.insert(format!("telemetry::{first}"));
        return;
    }
    if first == "telemetry"
        && let Some(after) = text[end..].strip_prefix("::")
    {
        return expand(after, &["telemetry"], found);
    }
    found.insert(first.to_owned());
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Every import in `src/` that does not point down, as readable lines.
fn violations() -> Vec<String> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    let mut problems = Vec::new();
    for file in &files {
        let relative = file.strip_prefix(&src).expect("under src");
        let Some(module) = module_of(relative) else {
            continue;
        };
        let Some(own) = layer_of(&module) else {
            problems.push(format!(
                "{}: module `{module}` has no layer in tests/layers.rs (place it on purpose)",
                relative.display()
            ));
            continue;
        };
        let code = code_of(&std::fs::read_to_string(file).expect("read file"));
        for target in imports(&code) {
            if target == module || (module.starts_with("telemetry") && target == "telemetry") {
                continue;
            }
            match layer_of(&target) {
                Some(theirs) if theirs < own => {}
                Some(_) => problems.push(format!(
                    "{}: `{module}` imports `crate::{target}`, which is not below it",
                    relative.display()
                )),
                None => problems.push(format!(
                    "{}: `crate::{target}` has no layer in tests/layers.rs",
                    relative.display()
                )),
            }
        }
    }
    problems
}

#[test]
fn imports_only_point_down() {
    let problems = violations();
    assert!(
        problems.is_empty(),
        "imports against the layers (docs/architecture.md):\n{}",
        problems.join("\n")
    );
}

#[test]
fn the_guard_reads_imports_as_written() {
    let code = code_of(
        "use crate::connections::{Close, ConnShared};\n\
         // use crate::edge::Nope;\n\
         /// [`crate::app::run`]\n\
         use crate::{edge, management::paths};\n\
         use crate::telemetry::{access_log::AccessLog, metrics};\n\
         let x = crate::state::AppState::new();\n\
         use other_crate::thing;\n",
    );
    let found: Vec<String> = imports(&code).into_iter().collect();
    assert_eq!(
        found,
        [
            "connections",
            "edge",
            "management",
            "state",
            "telemetry::access_log",
            "telemetry::metrics"
        ]
    );
}

#[test]
fn the_guard_catches_an_upward_import() {
    // The guard's own decision, on a made-up file: `cluster` reaching into `edge`.
    let own = layer_of("cluster").expect("cluster has a layer");
    let theirs = layer_of("edge").expect("edge has a layer");
    assert!(theirs >= own, "edge must sit above cluster");
    assert!(
        layer_of("edge") == layer_of("management"),
        "siblings share a layer"
    );
    assert_eq!(
        module_of(Path::new("telemetry/access_log.rs")).as_deref(),
        Some("telemetry::access_log")
    );
    assert_eq!(
        module_of(Path::new("edge/session/inbound.rs")).as_deref(),
        Some("edge")
    );
    assert_eq!(module_of(Path::new("lib.rs")), None);
}
