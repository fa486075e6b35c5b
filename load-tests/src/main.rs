//! `loadgen`: Switchboard's load generator. One subcommand per scenario (each starts the
//! servers it measures, prints one JSON line and a table, and stops by itself), the
//! bare baseline echo server, the helpers the scenarios start as child processes, and
//! `run-all` / `report`, which run the suite and write its results, summary and charts.
//! See load-tests/README.md.
#![warn(missing_docs)]
#![forbid(unsafe_code)]

mod charts;
mod client;
mod procs;
mod report;
mod run_all;
mod scenarios;
mod servers;
mod stats;
mod summary;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use scenarios::{
    callback, cluster, connect, echo, fanout, http_route, idle, resume, resume_cluster, scale,
};

#[derive(Parser)]
#[command(
    name = "loadgen",
    about = "Switchboard's load generator and benchmark suite"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Hold N idle connections; gateway RSS per connection and connect rate (vs baseline).
    Idle(idle::Args),
    /// Handshakes per second and handshake time, with and without $connect (vs baseline).
    Connect(connect::Args),
    /// Round trips through the mock echo route (vs baseline).
    Echo(echo::Args),
    /// Round trips through an HTTP proxy integration vs calling the backend directly.
    HttpRoute(http_route::Args),
    /// POST /@connections throughput and latency from several callers.
    Callback(callback::Args),
    /// Group broadcast to N members: deliveries/s and delivery latency.
    Fanout(fanout::Args),
    /// Three nodes and Redis: cross-node POST latency at a fixed rate, and a broadcast.
    Cluster(cluster::Args),
    /// Backplane bytes per node per group message at 1-8 nodes; one Redis vs Redis Cluster.
    Scale(scale::Args),
    /// Resumable sessions: memory per suspended session, resume latency, a herd of resumes.
    Resume(resume::Args),
    /// A node with N resumable sessions is SIGKILLed; every client resumes at once on the
    /// survivors: time to all resumed, 409 retries, lost messages, survivors' latency.
    ResumeCluster(resume_cluster::Args),
    /// The bare tokio-tungstenite server the ratios are measured against.
    BaselineServer {
        /// Listen address.
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: String,
        /// Per-connection read buffer in bytes.
        #[arg(long, default_value_t = 1024)]
        read_buffer: usize,
        /// Send every message to every connection instead of echoing it.
        #[arg(long)]
        broadcast: bool,
    },
    /// The HTTP backend of http-route (answers every request with a proxy response).
    HttpBackend {
        /// Listen address.
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: String,
    },
    /// A client process of `idle` (driven through stdin).
    #[command(hide = true)]
    IdleWorker(idle::WorkerArgs),
    /// Runs every scenario and writes results JSON, a markdown summary and PNG charts.
    RunAll(run_all::Args),
    /// Rewrites the summary and charts of an existing results JSON.
    Report(run_all::ReportArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if matches!(cli.command, Command::ResumeCluster(_))
        && let Err(e) = procs::raise_nofile_by_reexec()
    {
        // Run anyway: the scenario says how many files it needs if that is too few.
        eprintln!("loadgen: {e:#}");
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("loadgen: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(async {
        let (result, table): (serde_json::Value, fn(&serde_json::Value) -> report::Table) =
            match &cli.command {
                Command::Idle(a) => (idle::run(a).await?, idle::table),
                Command::Connect(a) => (connect::run(a).await?, connect::table),
                Command::Echo(a) => (echo::run(a).await?, echo::table),
                Command::HttpRoute(a) => (http_route::run(a).await?, http_route::table),
                Command::Callback(a) => (callback::run(a).await?, callback::table),
                Command::Fanout(a) => (fanout::run(a).await?, fanout::table),
                Command::Cluster(a) => (cluster::run(a).await?, cluster::table),
                Command::Scale(a) => (scale::run(a).await?, scale::table),
                Command::Resume(a) => (resume::run(a).await?, resume::table),
                Command::ResumeCluster(a) => (resume_cluster::run(a).await?, resume_cluster::table),
                Command::BaselineServer {
                    listen,
                    read_buffer,
                    broadcast,
                } => return servers::baseline(listen, *read_buffer, *broadcast).await,
                Command::HttpBackend { listen } => return servers::http_backend(listen).await,
                Command::IdleWorker(a) => return idle::worker(a).await,
                Command::RunAll(a) => return run_all::run(a).await,
                Command::Report(a) => return run_all::report(a),
            };
        report::emit(&result, &table(&result));
        Ok::<_, anyhow::Error>(())
    });
    // Helper tasks may still hold sockets; do not wait for them.
    runtime.shutdown_background();
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("loadgen: {e:#}");
            ExitCode::FAILURE
        }
    }
}
