//! The markdown summary of a results file: the machine, caveats, every target of issue 6
//! with its measured value and pass / fail / not measured, each scenario's table, the
//! charts, and the exact commands.

use std::fmt::Write as _;

use serde_json::Value;

use crate::report::{Table, num};
use crate::scenarios::{callback, cluster, connect, echo, fanout, http_route, idle, resume};

/// How a target came out.
#[derive(Debug, PartialEq)]
pub enum Verdict {
    /// Met.
    Pass,
    /// Missed.
    Fail,
    /// Not measured at the size the target names (or the scenario failed); why.
    NotMeasured(String),
}

/// One target and what was measured.
pub struct Check {
    /// The target, as the issue states it.
    pub target: &'static str,
    /// The measured value, readable.
    pub measured: String,
    /// Pass, fail or not measured.
    pub verdict: Verdict,
}

fn find<'a>(scenarios: &'a [Value], name: &str) -> Option<&'a Value> {
    scenarios
        .iter()
        .find(|s| s["scenario"] == name && s.get("error").is_none())
}

fn check(
    target: &'static str,
    value: Option<f64>,
    shown: impl Fn(f64) -> String,
    pass: impl Fn(f64) -> bool,
    precondition: Result<(), String>,
) -> Check {
    match (value, precondition) {
        (None, _) => Check {
            target,
            measured: "–".into(),
            verdict: Verdict::NotMeasured("scenario missing or failed".into()),
        },
        (Some(v), Err(why)) => Check {
            target,
            measured: shown(v),
            verdict: Verdict::NotMeasured(why),
        },
        (Some(v), Ok(())) => Check {
            target,
            measured: shown(v),
            verdict: if pass(v) {
                Verdict::Pass
            } else {
                Verdict::Fail
            },
        },
    }
}

fn at_least(v: &Value, key: &str, n: u64, what: &str) -> Result<(), String> {
    match v[key].as_u64() {
        Some(x) if x >= n => Ok(()),
        Some(x) => Err(format!("only {x} {what} (target names {n})")),
        None => Err(format!("no {what} count")),
    }
}

/// Every target of the issue against `scenarios`.
pub fn checks(scenarios: &[Value]) -> Vec<Check> {
    let get = |name: &str, path: &[&str]| {
        find(scenarios, name).map(|s| path.iter().fold(s, |v, k| &v[*k]))
    };
    let f = |name: &str, path: &[&str]| get(name, path).and_then(Value::as_f64);
    let null = Value::Null;
    let idle_g = get("idle", &["gateway"]).unwrap_or(&null);
    let echo_p = get("echo", &["params"]).unwrap_or(&null);
    let fan_g = get("fanout", &["gateway"]).unwrap_or(&null);
    let cluster_p = get("cluster", &["cross_node_post"]).unwrap_or(&null);
    let rate_ok = || -> Result<(), String> {
        let target = cluster_p["target_rate"].as_f64().unwrap_or(0.0);
        if target < 5000.0 {
            return Err(format!("target rate {target} < 5,000/s"));
        }
        Ok(())
    };
    let kib = |v: f64| format!("{v:.2} KiB");
    let ratio = |v: f64| format!("{v:.2}×");
    let msf = |v: f64| format!("{v:.3} ms");
    let per_s = |v: f64| format!("{}/s", num(&Value::from(v.round())));
    vec![
        check(
            "idle: ≤ 5 KiB of gateway RSS per idle connection at 15,000 connections",
            f("idle", &["gateway", "kib_per_connection"]),
            kib,
            |v| v <= 5.0,
            at_least(idle_g, "connections", 15_000, "connections"),
        ),
        check(
            "idle: linear growth (R² of RSS against connections ≥ 0.99)",
            f("idle", &["gateway", "r2"]),
            |v| format!("R² = {v:.4}"),
            |v| v >= 0.99,
            at_least(idle_g, "connections", 15_000, "connections"),
        ),
        check(
            "connect: ≥ 80% of the baseline's handshakes/s without $connect",
            f("connect", &["ratio_no_connect"]),
            ratio,
            |v| v >= 0.8,
            Ok(()),
        ),
        check(
            "connect: ≥ 50% of the baseline's handshakes/s with a mock $connect",
            f("connect", &["ratio_mock_connect"]),
            ratio,
            |v| v >= 0.5,
            Ok(()),
        ),
        check(
            "echo: ≥ 80% of the baseline's round trips/s over 100 connections",
            f("echo", &["ratio_throughput"]),
            ratio,
            |v| v >= 0.8,
            at_least(echo_p, "connections", 100, "connections"),
        ),
        check(
            "echo: p99 ≤ 1.5× the baseline's",
            f("echo", &["ratio_p99"]),
            ratio,
            |v| v <= 1.5,
            at_least(echo_p, "connections", 100, "connections"),
        ),
        check(
            "http-route: the gateway adds ≤ 0.3 ms at p50",
            f("http-route", &["added_p50_ms"]),
            msf,
            |v| v <= 0.3,
            Ok(()),
        ),
        check(
            "http-route: the gateway adds ≤ 2 ms at p99",
            f("http-route", &["added_p99_ms"]),
            msf,
            |v| v <= 2.0,
            Ok(()),
        ),
        check(
            "fanout: a broadcast to 10,000 members delivers ≥ 300,000 messages/s",
            f("fanout", &["gateway", "deliveries_per_s"]),
            per_s,
            |v| v >= 300_000.0,
            at_least(fan_g, "members", 10_000, "members"),
        ),
        check(
            "fanout: delivery p99 < 50 ms",
            f("fanout", &["gateway", "delivery_latency", "p99_ms"]),
            msf,
            |v| v < 50.0,
            at_least(fan_g, "members", 10_000, "members"),
        ),
        check(
            "fanout (proposed in place of the two above): ≥ 80% of the baseline broadcast server's deliveries/s",
            f("fanout", &["ratio_throughput"]),
            ratio,
            |v| v >= 0.8,
            at_least(fan_g, "members", 10_000, "members"),
        ),
        check(
            "fanout (proposed): delivery p99 ≤ 1.5× the baseline's",
            f("fanout", &["ratio_p99"]),
            ratio,
            |v| v <= 1.5,
            at_least(fan_g, "members", 10_000, "members"),
        ),
        check(
            "cluster: cross-node POST p99 < 3 ms at 5,000 posts/s",
            f("cluster", &["cross_node_post", "latency", "p99_ms"]),
            msf,
            |v| {
                v < 3.0
                    && cluster_p["achieved_rate"].as_f64().unwrap_or(0.0)
                        >= 0.95 * cluster_p["target_rate"].as_f64().unwrap_or(f64::MAX)
            },
            rate_ok(),
        ),
    ]
}

/// The table of a scenario's result, by name.
pub fn table_for(v: &Value) -> Option<Table> {
    let table = match v["scenario"].as_str()? {
        _ if v.get("error").is_some() => return None,
        "idle" => idle::table,
        "connect" => connect::table,
        "echo" => echo::table,
        "http-route" => http_route::table,
        "callback" => callback::table,
        "fanout" => fanout::table,
        "cluster" => cluster::table,
        "resume" => resume::table,
        _ => return None,
    };
    Some(table(v))
}

/// The whole summary. `charts` are (title, file name relative to `<run>/`).
pub fn markdown(
    results: &Value,
    run: &str,
    charts: &Result<Vec<(String, String)>, String>,
) -> String {
    let empty = Vec::new();
    let scenarios = results["scenarios"].as_array().unwrap_or(&empty);
    let m = &results["machine"];
    let mut md = format!("# Switchboard load tests — {run}\n\n");
    if results["quick"] == true {
        md.push_str("**Quick run (tiny sizes): these numbers say nothing about performance.**\n\n");
    }
    let _ = writeln!(
        md,
        "Machine: {} cores (`nproc`), {} (`lscpu` model name), {} GiB memory, Linux {}; open-files hard limit {}. \
         Gateway commit {}{}. The gateway, the baseline server and the load generator all ran on this one machine.\n",
        num(&m["nproc"]),
        m["cpu_model"].as_str().unwrap_or("unknown CPU"),
        num(&m["memory_gib"]),
        m["kernel"].as_str().unwrap_or("?"),
        m["nofile_hard_limit"].as_str().unwrap_or("?"),
        m["git_commit"].as_str().unwrap_or("unknown"),
        if m["git_dirty"] == true {
            " (with uncommitted changes)"
        } else {
            ""
        },
    );
    let notes: Vec<&str> = results["notes"]
        .as_array()
        .map(|n| n.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    if !notes.is_empty() {
        md.push_str("Caveats:\n");
        for n in notes {
            let _ = writeln!(md, "- {n}");
        }
        md.push('\n');
    }

    md.push_str("## Targets (issue 6)\n\nThroughput targets are ratios to the bare baseline server (echo, or a broadcast room for fanout) measured in the same run. The two \"proposed\" fanout targets replace the issue's absolute ones, which the bare baseline itself does not reach on this machine (see load-tests/README.md, \"Fanout: what bounds it\").\n\n| Target | Measured | Result |\n| --- | ---: | --- |\n");
    let quick = results["quick"] == true;
    for c in checks(scenarios) {
        let verdict = match &c.verdict {
            _ if quick => "not measured (quick run)".to_owned(),
            Verdict::Pass => "**pass**".to_owned(),
            Verdict::Fail => "**FAIL**".to_owned(),
            Verdict::NotMeasured(why) => format!("not measured ({why})"),
        };
        let _ = writeln!(md, "| {} | {} | {} |", c.target, c.measured, verdict);
    }

    md.push_str("\n## Scenarios\n\n");
    for s in scenarios {
        let name = s["scenario"].as_str().unwrap_or("?");
        let _ = writeln!(md, "### {name}\n");
        if let Some(e) = s["error"].as_str() {
            let _ = writeln!(md, "**Failed:** {e}\n");
        } else if s["ok"] != true {
            md.push_str("**Errors during the run** — see `errors` / `first_error` / `statuses` in the JSON.\n\n");
        }
        if let Some(t) = table_for(s) {
            md.push_str(&t.markdown());
            md.push('\n');
        }
        let _ = writeln!(
            md,
            "Wall time {} s; load average before: {}.\n",
            num(&s["wall_s"]),
            s["loadavg_before"].as_str().unwrap_or("?")
        );
    }

    md.push_str("## Charts\n\n");
    match charts {
        Ok(list) => {
            for (title, file) in list {
                let _ = writeln!(md, "![{title}]({run}/{file})\n");
            }
        }
        Err(why) => {
            let _ = writeln!(md, "Charts were not drawn: {why}\n");
        }
    }

    md.push_str("## Commands\n\nThe suite (`load-tests/run-all` builds the release binaries, then runs):\n\n```sh\n");
    let _ = writeln!(md, "{}", results["suite_command"].as_str().unwrap_or("?"));
    md.push_str("```\n\nwhich ran each scenario as:\n\n```sh\n");
    for s in scenarios {
        let _ = writeln!(md, "{}", s["command"].as_str().unwrap_or("?"));
    }
    let _ = writeln!(
        md,
        "```\n\nTotal wall time {} s. Raw numbers: [{run}.json]({run}.json).",
        num(&results["total_wall_s"])
    );
    md
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn targets_pass_fail_and_wait_for_their_size() {
        let scenarios = vec![
            json!({"scenario": "echo", "params": {"connections": 100},
                   "ratio_throughput": 0.9, "ratio_p99": 2.0}),
            json!({"scenario": "idle", "gateway": {"connections": 40, "kib_per_connection": 3.0, "r2": 1.0}}),
        ];
        let c = checks(&scenarios);
        let by = |prefix: &str| c.iter().find(|c| c.target.starts_with(prefix)).unwrap();
        assert_eq!(by("echo: ≥ 80%").verdict, Verdict::Pass);
        assert_eq!(by("echo: p99").verdict, Verdict::Fail);
        assert!(matches!(by("idle: ≤ 5").verdict, Verdict::NotMeasured(_)));
        assert!(matches!(
            by("fanout: a broadcast").verdict,
            Verdict::NotMeasured(_)
        ));
        assert_eq!(by("echo: p99").measured, "2.00×");
    }
}
