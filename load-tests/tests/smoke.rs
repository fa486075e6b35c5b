//! Smoke run of every load-test scenario at tiny sizes, so the benchmark code keeps
//! compiling and working in CI (the full suite, `load-tests/run-all`, is too heavy for CI).
//! Each test runs the real `loadgen` binary against the real debug `switchboard` binary of
//! this workspace (built here with `cargo build -p switchboard` if it is missing) and checks
//! the JSON line: expected keys, exact counts, no errors, nonzero throughput.

use std::io::Read as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;

/// Any one loadgen run may take this long before the test kills it and fails.
const RUN_LIMIT: Duration = Duration::from_secs(60);

/// The switchboard binary beside this test's own target directory (target/debug).
fn gateway() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(explicit) = std::env::var_os("SWITCHBOARD_BIN") {
            return PathBuf::from(explicit);
        }
        // This test runs as target/debug/deps/smoke-<hash>.
        let exe = std::env::current_exe().expect("current_exe");
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("test binary lives in <target>/<profile>/deps");
        let bin = profile_dir.join("switchboard");
        if !bin.is_file() {
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
            let status = Command::new(cargo)
                .args(["build", "-p", "switchboard"])
                .current_dir(&root)
                .status()
                .expect("running cargo build -p switchboard");
            assert!(
                status.success() && bin.is_file(),
                "{} is missing and `cargo build -p switchboard` did not make it; build the \
                 gateway first (cargo build -p switchboard) or set SWITCHBOARD_BIN",
                bin.display()
            );
        }
        bin
    })
}

/// Runs `loadgen <args>` with a time limit; returns its stdout (asserting exit 0).
fn loadgen(args: &[&str]) -> String {
    // Its own process group, so a run over the limit is killed with every server it started.
    let mut child = Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .args(args)
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn loadgen");
    let mut stdout = child.stdout.take().expect("stdout");
    let mut stderr = child.stderr.take().expect("stderr");
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + RUN_LIMIT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = Command::new("kill")
                .args(["-KILL", &format!("-{}", child.id())])
                .status();
            let _ = child.kill();
            panic!("loadgen {} ran over {RUN_LIMIT:?}", args.join(" "));
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let (out, err) = (out.join().unwrap(), err.join().unwrap());
    assert!(
        status.success(),
        "loadgen {} failed ({status}):\nstdout:\n{out}\nstderr:\n{err}",
        args.join(" ")
    );
    out
}

/// Runs a scenario at tiny size and returns its JSON line, checked for the common keys.
fn scenario(name: &str, sizes: &[&str]) -> Value {
    let gateway = gateway().to_str().expect("utf-8 path").to_owned();
    let mut args = vec![name];
    args.extend_from_slice(sizes);
    args.extend(["--gateway", &gateway, "--max-secs", "30"]);
    let out = loadgen(&args);
    let lines: Vec<Value> = out
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line {l}: {e}")))
        .collect();
    assert_eq!(lines.len(), 1, "exactly one JSON line expected:\n{out}");
    let v = lines.into_iter().next().unwrap();
    assert_eq!(v["scenario"], name, "{v}");
    assert_eq!(v["ok"], true, "the run reported errors: {v}");
    let throughput = v["throughput_per_s"].as_f64().expect("throughput_per_s");
    assert!(throughput > 0.0, "zero throughput: {v}");
    assert!(out.contains(&format!("== {name}")), "no table:\n{out}");
    v
}

fn f(v: &Value, path: &[&str]) -> f64 {
    path.iter()
        .fold(v, |v, k| &v[*k])
        .as_f64()
        .unwrap_or_else(|| panic!("missing number {} in {v}", path.join(".")))
}

fn latency_present(v: &Value, path: &[&str]) {
    let summary = path.iter().fold(v, |v, k| &v[*k]);
    for key in ["p50_ms", "p90_ms", "p99_ms", "p999_ms", "max_ms"] {
        assert!(
            summary[key].is_number(),
            "{} lacks {key}: {v}",
            path.join(".")
        );
    }
    assert!(summary["p50_ms"].as_f64() <= summary["p99_ms"].as_f64());
}

#[test]
fn idle_holds_every_connection_on_both_servers() {
    let v = scenario(
        "idle",
        &[
            "--connections",
            "20",
            "--workers",
            "2",
            "--steps",
            "2",
            "--settle-ms",
            "50",
        ],
    );
    for side in ["baseline", "gateway"] {
        assert_eq!(v[side]["connections"], 20, "{v}");
        assert_eq!(v[side]["failed"], 0, "{v}");
        assert_eq!(v[side]["steps"].as_array().map(Vec::len), Some(3), "{v}");
        assert!(f(&v, &[side, "rss_after_kib"]) > 0.0);
        assert!(v[side]["kib_per_connection"].is_number());
    }
    assert!(v["ratio_kib_per_connection"].is_number() || v["ratio_kib_per_connection"].is_null());
}

#[test]
fn connect_measures_three_servers_in_rounds() {
    let v = scenario(
        "connect",
        &[
            "--handshakes",
            "15",
            "--rounds",
            "2",
            "--warmup",
            "3",
            "--concurrency",
            "3",
        ],
    );
    for side in ["baseline", "gateway", "gateway_mock_connect"] {
        assert_eq!(v[side]["handshakes"], 30, "{v}");
        assert!(f(&v, &[side, "handshakes_per_s"]) > 0.0);
        latency_present(&v, &[side, "latency"]);
    }
    assert!(f(&v, &["ratio_no_connect"]) > 0.0);
    assert!(f(&v, &["ratio_mock_connect"]) > 0.0);
}

#[test]
fn echo_counts_every_round_trip() {
    let v = scenario(
        "echo",
        &[
            "--connections",
            "4",
            "--messages",
            "25",
            "--rounds",
            "2",
            "--warmup",
            "2",
        ],
    );
    for side in ["baseline", "gateway"] {
        assert_eq!(v[side]["messages"], 200, "{v}");
        assert_eq!(v[side]["errors"], 0, "{v}");
        latency_present(&v, &[side, "latency"]);
    }
    assert!(f(&v, &["ratio_throughput"]) > 0.0);
    assert!(f(&v, &["ratio_p99"]) > 0.0);
}

#[test]
fn http_route_compares_gateway_and_direct() {
    let v = scenario(
        "http-route",
        &[
            "--connections",
            "2",
            "--messages",
            "20",
            "--rounds",
            "2",
            "--warmup",
            "2",
        ],
    );
    for side in ["direct", "gateway", "direct_saturated", "gateway_saturated"] {
        assert_eq!(v[side]["messages"], 80, "{v}");
        latency_present(&v, &[side, "latency"]);
    }
    assert!(
        v["added_p50_ms"].is_number() && v["added_p99_ms"].is_number(),
        "{v}"
    );
}

#[test]
fn callback_delivers_every_post() {
    let v = scenario(
        "callback",
        &["--connections", "10", "--callers", "2", "--posts", "60"],
    );
    let g = &v["gateway"];
    assert_eq!(g["posts"], 60, "{v}");
    assert_eq!(g["accepted"], 60, "{v}");
    assert_eq!(g["delivered"], 60, "{v}");
    assert_eq!(g["statuses"]["200"], 60, "{v}");
    latency_present(&v, &["gateway", "post_latency"]);
    latency_present(&v, &["gateway", "delivery_latency"]);
}

#[test]
fn fanout_reaches_every_member() {
    let v = scenario("fanout", &["--members", "20", "--broadcasts", "2"]);
    for server in ["baseline", "gateway"] {
        let s = &v[server];
        assert_eq!(s["expected"], 40, "{server}: {v}");
        assert_eq!(s["delivered"], 40, "{server}: {v}");
        assert_eq!(s["per_broadcast"].as_array().map(Vec::len), Some(2), "{v}");
        assert!(f(&v, &[server, "deliveries_per_s"]) > 0.0);
        assert!(
            f(&v, &[server, "cpu_us_per_delivery", "server"]) > 0.0,
            "{v}"
        );
        latency_present(&v, &[server, "delivery_latency"]);
    }
    assert!(f(&v, &["ratio_throughput"]) > 0.0, "{v}");
}

#[test]
fn cluster_posts_across_nodes_and_broadcasts_to_all() {
    let v = scenario(
        "cluster",
        &[
            "--nodes",
            "3",
            "--connections-per-node",
            "4",
            "--rate",
            "100",
            "--duration-secs",
            "1",
            "--callers",
            "3",
            "--broadcasts",
            "1",
        ],
    );
    let p = &v["cross_node_post"];
    assert_eq!(p["posts"], p["accepted"], "{v}");
    assert_eq!(p["delivered"], p["accepted"], "{v}");
    assert!(f(&v, &["cross_node_post", "accepted"]) >= 60.0, "{v}");
    latency_present(&v, &["cross_node_post", "latency"]);
    assert_eq!(v["broadcast"]["expected"], 12, "{v}");
    assert_eq!(v["broadcast"]["delivered"], 12, "{v}");
}

#[test]
fn scale_sees_no_group_bytes_on_non_member_nodes() {
    let v = scenario(
        "scale",
        &[
            "--nodes",
            "1,2,3",
            "--members",
            "3",
            "--messages",
            "5",
            "--kind-messages",
            "2",
            "--memory-connections",
            "20",
            "--memory-group-size",
            "5",
            "--tp-groups",
            "3",
            "--tp-members",
            "2",
            "--tp-callers",
            "2",
            "--tp-secs",
            "1",
            "--tp-rounds",
            "1",
        ],
    );
    assert_eq!(v["interest"]["verdict"], "pass", "{v}");
    let rows = v["by_nodes"].as_array().expect("by_nodes");
    assert_eq!(rows.len(), 3, "{v}");
    for r in rows {
        assert_eq!(r["delivered"], 15, "{v}");
        assert!(f(r, &["member_bytes_per_msg"]) > 0.0, "{v}");
        assert_eq!(f(r, &["nonmember_total_bytes_per_msg"]), 0.0, "{v}");
    }
    let k = &v["kinds"];
    assert!(
        f(k, &["cross_node_post", "request_in_bytes_per_msg"]) > 0.0,
        "{v}"
    );
    let by_node = k["broadcast_all"]["in_bytes_per_msg_by_node"]
        .as_array()
        .expect("broadcast bytes by node");
    assert_eq!(by_node.len(), 3, "{v}");
    assert!(by_node.iter().all(|b| b.as_f64() > Some(0.0)), "{v}");
    assert!(
        f(&v, &["redis_memory", "bytes_per_connection_record"]) > 0.0,
        "{v}"
    );
    let one = &v["throughput"]["one_redis"];
    assert!(f(one, &["accepted"]) > 0.0, "{v}");
    assert_eq!(one["delivered"], one["expected"], "{v}");
    // The Redis Cluster half runs where the gateway accepts `cluster.redis_cluster_nodes`;
    // otherwise it says why it did not.
    let rc = &v["throughput"]["redis_cluster"];
    if rc["measured"] == true {
        assert_eq!(rc["delivered"], rc["expected"], "{v}");
        assert_eq!(rc["masters"], 3, "{v}");
    } else {
        assert!(rc["why"].as_str().is_some_and(|w| !w.is_empty()), "{v}");
    }
}

#[test]
fn resume_suspends_and_resumes_every_session() {
    let v = scenario(
        "resume",
        &[
            "--sessions",
            "30",
            "--sample",
            "5",
            "--spread-ms",
            "100",
            "--survivors",
            "2",
            "--settle-ms",
            "100",
        ],
    );
    assert_eq!(v["memory"]["sessions"], 30, "{v}");
    assert_eq!(v["resume_latency"]["resumed"], 5, "{v}");
    assert_eq!(v["herd"]["result"]["resumed"], 25, "{v}");
    assert_eq!(v["herd"]["lost"], 0, "{v}");
    assert_eq!(v["herd"]["suspended_left"], 0, "{v}");
    latency_present(&v, &["resume_latency", "latency"]);
    latency_present(&v, &["survivors_during", "latency"]);
}

#[test]
fn resume_cluster_takes_over_every_session_of_a_killed_node() {
    let v = scenario(
        "resume-cluster",
        &[
            "--nodes",
            "3",
            "--sessions",
            "30",
            "--messages",
            "3",
            "--read",
            "1",
            "--callers",
            "2",
            "--spread-ms",
            "100",
            "--retry-ms",
            "200",
            "--survivors",
            "2",
            "--before-ms",
            "300",
            "--lease-ttl-ms",
            "500",
        ],
    );
    let h = &v["herd"];
    assert_eq!(h["sessions"], 30, "{v}");
    assert_eq!(h["resumed"], 30, "{v}");
    assert_eq!(h["lost"], 0, "{v}");
    assert_eq!(h["unresumed"], 0, "{v}");
    assert_eq!(h["broadcast_after"]["received"], 30, "{v}");
    assert_eq!(v["setup"]["posts"]["statuses"]["200"], 90, "{v}");
    // Both survivors took their share (client i resumes on survivor i mod 2).
    assert_eq!(h["by_node"], serde_json::json!([15, 15]), "{v}");
    assert_eq!(v["survivor_nodes"]["resumes_total"]["resumed"], 30.0, "{v}");
    assert!(
        f(&v, &["herd", "time_to_all_resumed_s"]) >= f(&v, &["herd", "kill_to_first_answer_s"]),
        "{v}"
    );
    latency_present(&v, &["herd", "resume_latency"]);
    latency_present(&v, &["survivors_before", "latency"]);
    latency_present(&v, &["survivors_during", "latency"]);
}

#[test]
fn run_all_quick_writes_results_summary_and_charts() {
    let dir = std::env::temp_dir().join(format!("loadgen-smoke-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let gateway = gateway().to_str().expect("utf-8 path").to_owned();
    let dir_s = dir.to_str().expect("utf-8 path").to_owned();
    loadgen(&[
        "run-all",
        "--quick",
        "--out-dir",
        &dir_s,
        "--run",
        "smoke",
        "--gateway",
        &gateway,
        "--note",
        "smoke test",
    ]);
    let results: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("smoke.json")).unwrap()).unwrap();
    let names: Vec<&str> = results["scenarios"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["scenario"].as_str().unwrap())
        .collect();
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
    for s in results["scenarios"].as_array().unwrap() {
        assert_eq!(s["ok"], true, "{s}");
        assert!(
            s["command"].as_str().unwrap().contains(" --gateway "),
            "{s}"
        );
    }
    let md = std::fs::read_to_string(dir.join("smoke.md")).unwrap();
    assert!(md.contains("## Targets (issues 6 and 13)"), "{md}");
    assert!(md.contains("- smoke test"), "{md}");
    assert!(md.contains("idle --connections 40"), "{md}");
    assert!(
        std::fs::read_to_string(dir.join("LATEST.md"))
            .unwrap()
            .contains("[smoke](smoke.md)")
    );
    // Charts need a TrueType font (Debian's fonts-dejavu-core); without one the summary says so.
    let font = Path::new("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf").is_file()
        || std::env::var_os("LOADGEN_FONT").is_some();
    let charts = ["idle-rss.png", "latency-echo.png", "latency-cluster.png"];
    if font {
        for chart in charts {
            let bytes = std::fs::read(dir.join("smoke").join(chart))
                .unwrap_or_else(|e| panic!("{chart}: {e}"));
            assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "{chart} is not a PNG");
        }
        assert!(
            md.contains("![idle: RSS against idle connections](smoke/idle-rss.png)"),
            "{md}"
        );
    } else {
        assert!(md.contains("Charts were not drawn: no font found"), "{md}");
    }
    // `report` rebuilds the summary from the JSON alone.
    std::fs::remove_file(dir.join("smoke.md")).unwrap();
    let results_path = dir.join("smoke.json");
    loadgen(&["report", "--results", results_path.to_str().unwrap()]);
    assert_eq!(std::fs::read_to_string(dir.join("smoke.md")).unwrap(), md);
    let _ = std::fs::remove_dir_all(&dir);
}
