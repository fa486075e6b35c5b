//! `run-all`: runs every scenario as a child `loadgen` process at the suite's sizes (or tiny
//! ones with `--quick`), keeps each one's JSON line and exact command, and writes
//! `<out>/<run>.json`, `<out>/<run>.md`, the charts under `<out>/<run>/` and `<out>/LATEST.md`.
//! `report` rewrites the summary and charts from a results file.

use std::io::{BufRead as _, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, Result, anyhow, bail};
use serde_json::{Value, json};

use crate::{charts, summary};

/// `loadgen run-all` options.
#[derive(clap::Args, Clone, Debug)]
pub struct Args {
    /// Where results go.
    #[arg(long, default_value = "load-tests/results")]
    pub out_dir: PathBuf,
    /// Name of this run (default: today's date, UTC, YYYY-MM-DD).
    #[arg(long)]
    pub run: Option<String>,
    /// Tiny sizes: seconds instead of minutes (to try the pipeline; the smoke test uses it).
    #[arg(long)]
    pub quick: bool,
    /// The switchboard binary passed to every scenario.
    #[arg(long)]
    pub gateway: Option<PathBuf>,
    /// A caveat for the summary (repeatable), e.g. "other test suites ran at the same time".
    #[arg(long)]
    pub note: Vec<String>,
    /// Only these scenarios (comma-separated names).
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<String>,
}

/// `loadgen report` options.
#[derive(clap::Args, Clone, Debug)]
pub struct ReportArgs {
    /// A results file written by run-all (`<out>/<run>.json`).
    #[arg(long)]
    pub results: PathBuf,
}

/// Each scenario with its suite-size and quick-size arguments.
fn plan(quick: bool) -> Vec<(&'static str, Vec<&'static str>)> {
    const FULL: [(&str, &str); 10] = [
        (
            "idle",
            "--connections 15000 --workers 4 --concurrency 24 --steps 6 --settle-ms 1500",
        ),
        (
            "connect",
            "--handshakes 6000 --rounds 5 --warmup 1000 --concurrency 32",
        ),
        (
            "echo",
            "--connections 100 --messages 1000 --rounds 5 --warmup 100",
        ),
        (
            "http-route",
            "--connections 16 --messages 1000 --rounds 5 --warmup 100",
        ),
        ("callback", "--connections 1000 --callers 16 --posts 200000"),
        ("fanout", "--members 10000 --broadcasts 10"),
        (
            "cluster",
            "--nodes 3 --connections-per-node 1000 --rate 5000 --duration-secs 20 --callers 32 --broadcasts 3",
        ),
        (
            "scale",
            "--nodes 1,2,4,8 --members 100 --messages 200 --kind-messages 50 --memory-connections 5000 --tp-secs 10",
        ),
        (
            "resume",
            "--sessions 10000 --sample 500 --spread-ms 1000 --survivors 50",
        ),
        (
            "resume-cluster",
            "--nodes 3 --sessions 10000 --messages 4 --read 2 --spread-ms 1000 --retry-ms 500 --survivors 50 --lease-ttl-ms 1000 --max-secs 60",
        ),
    ];
    const QUICK: [(&str, &str); 10] = [
        (
            "idle",
            "--connections 40 --workers 2 --steps 2 --settle-ms 100",
        ),
        (
            "connect",
            "--handshakes 20 --rounds 2 --warmup 5 --concurrency 4",
        ),
        (
            "echo",
            "--connections 4 --messages 10 --rounds 2 --warmup 2",
        ),
        (
            "http-route",
            "--connections 2 --messages 10 --rounds 2 --warmup 2",
        ),
        ("callback", "--connections 10 --callers 2 --posts 50"),
        ("fanout", "--members 20 --broadcasts 2"),
        (
            "cluster",
            "--nodes 3 --connections-per-node 5 --rate 200 --duration-secs 1 --callers 4 --broadcasts 1",
        ),
        (
            "scale",
            "--nodes 1,2 --members 3 --messages 5 --kind-messages 2 --memory-connections 20 --memory-group-size 5 --tp-groups 3 --tp-members 2 --tp-callers 2 --tp-secs 1 --no-redis-cluster",
        ),
        (
            "resume",
            "--sessions 30 --sample 5 --spread-ms 100 --survivors 2 --settle-ms 100",
        ),
        (
            "resume-cluster",
            "--nodes 3 --sessions 30 --messages 2 --read 1 --callers 2 --spread-ms 100 --retry-ms 200 --survivors 2 --before-ms 300 --lease-ttl-ms 500 --max-secs 30",
        ),
    ];
    let chosen = if quick { QUICK } else { FULL };
    chosen
        .iter()
        .map(|(name, args)| (*name, args.split_whitespace().collect()))
        .collect()
}

/// Today's date (UTC) as YYYY-MM-DD, from the system clock (days-to-civil conversion).
fn today() -> String {
    let days = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() / 86_400)
        .unwrap_or(0) as i64;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

/// `arg` as a POSIX shell word (quoted only when it needs to be).
fn shell_word(arg: &str) -> String {
    let plain = !arg.is_empty()
        && arg
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_./=:,@%+-".contains(c));
    if plain {
        arg.to_owned()
    } else {
        format!("'{}'", arg.replace('\'', r"'\''"))
    }
}

/// A command line as it can be pasted into a shell.
fn shell_line<S: AsRef<str>>(words: impl IntoIterator<Item = S>) -> String {
    words
        .into_iter()
        .map(|w| shell_word(w.as_ref()))
        .collect::<Vec<_>>()
        .join(" ")
}

fn command_output(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// What the results were measured on.
fn machine() -> Value {
    let model = command_output("lscpu", &[]).and_then(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("Model name:").map(|m| m.trim().to_owned()))
    });
    let mem_kib = std::fs::read_to_string("/proc/meminfo").ok().and_then(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
    });
    json!({
        "nproc": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "cpu_model": model,
        "memory_gib": mem_kib.map(|k| ((k as f64 / 1024.0 / 1024.0) * 10.0).round() / 10.0),
        "kernel": std::fs::read_to_string("/proc/sys/kernel/osrelease").ok().map(|s| s.trim().to_owned()),
        "nofile_hard_limit": command_output("sh", &["-c", "ulimit -Hn"]),
        "git_commit": command_output("git", &["rev-parse", "--short", "HEAD"]),
        "git_dirty": command_output("git", &["status", "--porcelain"]).map(|s| !s.is_empty()),
    })
}

fn loadavg() -> Option<String> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
}

/// Runs one scenario as a child process, echoing its output; returns its JSON line.
fn run_scenario(exe: &Path, args: &[String]) -> Result<Value> {
    let mut child = Command::new(exe)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("starting {}", exe.display()))?;
    let stdout = child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
    let mut found = None;
    let mut out = std::io::stdout();
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        if line.starts_with('{')
            && let Ok(v) = serde_json::from_str::<Value>(&line)
            && v.get("scenario").is_some()
        {
            found = Some(v);
            continue;
        }
        let _ = writeln!(out, "{line}");
    }
    let status = child.wait()?;
    if !status.success() {
        bail!("exited with {status}");
    }
    found.ok_or_else(|| anyhow!("printed no JSON line"))
}

/// Runs the plan and writes everything.
pub async fn run(args: &Args) -> Result<()> {
    let exe = std::env::current_exe().context("locating loadgen itself")?;
    let cwd = std::env::current_dir()?;
    let shown = exe.strip_prefix(&cwd).unwrap_or(&exe).display().to_string();
    let run_name = args.run.clone().unwrap_or_else(today);
    std::fs::create_dir_all(&args.out_dir)
        .with_context(|| format!("creating {}", args.out_dir.display()))?;
    let mut scenarios = Vec::new();
    let mut failed = Vec::new();
    let started = Instant::now();
    for (name, sizes) in plan(args.quick) {
        if !args.only.is_empty() && !args.only.iter().any(|o| o == name) {
            continue;
        }
        let mut argv: Vec<String> = std::iter::once(name.to_owned())
            .chain(sizes.iter().map(|s| s.to_string()))
            .collect();
        if let Some(gateway) = &args.gateway {
            argv.push("--gateway".into());
            argv.push(gateway.display().to_string());
        }
        let command =
            shell_line(std::iter::once(shown.as_str()).chain(argv.iter().map(String::as_str)));
        eprintln!("run-all: {command}");
        let load_before = loadavg();
        let t0 = Instant::now();
        let exe2 = exe.clone();
        let argv2 = argv.clone();
        let outcome = tokio::task::spawn_blocking(move || run_scenario(&exe2, &argv2)).await?;
        let mut v = match outcome {
            Ok(v) => v,
            Err(e) => {
                eprintln!("run-all: {name} failed: {e:#}");
                failed.push(name);
                json!({"scenario": name, "ok": false, "error": format!("{e:#}")})
            }
        };
        v["command"] = json!(command);
        v["wall_s"] = json!((t0.elapsed().as_secs_f64() * 10.0).round() / 10.0);
        v["loadavg_before"] = json!(load_before);
        scenarios.push(v);
    }
    let results = json!({
        "run": run_name,
        "quick": args.quick,
        "machine": machine(),
        "notes": args.note,
        "suite_command": shell_line(std::env::args()),
        "total_wall_s": (started.elapsed().as_secs_f64() * 10.0).round() / 10.0,
        "scenarios": scenarios,
    });
    let json_path = args.out_dir.join(format!("{run_name}.json"));
    std::fs::write(&json_path, serde_json::to_string_pretty(&results)? + "\n")
        .with_context(|| format!("writing {}", json_path.display()))?;
    eprintln!("run-all: wrote {}", json_path.display());
    write_report(&results, &args.out_dir, &run_name)?;
    if !failed.is_empty() {
        bail!("scenarios failed: {}", failed.join(", "));
    }
    Ok(())
}

/// Writes `<dir>/<run>.md`, the charts in `<dir>/<run>/` and `<dir>/LATEST.md`.
fn write_report(results: &Value, dir: &Path, run_name: &str) -> Result<()> {
    let chart_dir = dir.join(run_name);
    std::fs::create_dir_all(&chart_dir)?;
    let charts = charts::draw_all(results, &chart_dir);
    let md_path = dir.join(format!("{run_name}.md"));
    std::fs::write(&md_path, summary::markdown(results, run_name, &charts))
        .with_context(|| format!("writing {}", md_path.display()))?;
    std::fs::write(
        dir.join("LATEST.md"),
        format!(
            "# Latest load-test results\n\n[{run_name}]({run_name}.md) — summary, targets and charts; raw numbers in [{run_name}.json]({run_name}.json).\n"
        ),
    )?;
    eprintln!(
        "run-all: wrote {} and charts in {}",
        md_path.display(),
        chart_dir.display()
    );
    Ok(())
}

/// `loadgen report`.
pub fn report(args: &ReportArgs) -> Result<()> {
    let text = std::fs::read_to_string(&args.results)
        .with_context(|| format!("reading {}", args.results.display()))?;
    let results: Value = serde_json::from_str(&text)?;
    let run_name = args
        .results
        .file_stem()
        .and_then(|s| s.to_str())
        .ok_or_else(|| anyhow!("bad results file name"))?;
    let dir = args.results.parent().unwrap_or(Path::new("."));
    write_report(&results, dir, run_name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn today_is_a_plausible_date() {
        let d = today();
        assert_eq!(d.len(), 10);
        assert!(d.starts_with("20"), "{d}");
        assert_eq!(&d[4..5], "-");
    }

    #[test]
    fn commands_are_quoted_for_the_shell() {
        assert_eq!(
            shell_line([
                "loadgen",
                "run-all",
                "--note",
                "it's busy",
                "--only",
                "echo,idle"
            ]),
            r"loadgen run-all --note 'it'\''s busy' --only echo,idle"
        );
        assert_eq!(shell_word(""), "''");
    }

    #[test]
    fn plans_cover_every_scenario_in_both_sizes() {
        let names: Vec<_> = plan(false).iter().map(|p| p.0).collect();
        assert_eq!(
            names,
            [
                "idle",
                "connect",
                "echo",
                "http-route",
                "callback",
                "fanout",
                "cluster",
                "scale",
                "resume",
                "resume-cluster"
            ]
        );
        assert_eq!(plan(true).len(), 10);
    }
}
