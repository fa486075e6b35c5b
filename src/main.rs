//! The `switchboard` binary: parses arguments, loads configuration, starts tracing,
//! binds the listeners and hands them to [`switchboard::app::run`]. Exit codes: 0 after a
//! clean shutdown, 64 for a bad configuration, 1 for anything else. `import` exits 0 after
//! writing, 64 for a template it cannot import, 73 when it cannot write the file.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use switchboard::api::Api;
use switchboard::app::{self, Listeners};
use switchboard::config::{self, ConfigSource, Settings};
use switchboard::lifecycle::Control;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Exit code for a configuration error (EX_USAGE).
const EXIT_CONFIG: u8 = 64;
/// Exit code when the output file cannot be created (EX_CANTCREAT).
const EXIT_CANTCREAT: u8 = 73;

#[derive(Parser)]
#[command(name = "switchboard", version, about = "A WebSocket API gateway")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway (the default). Without --config, runs the embedded default.
    Serve {
        /// A TOML configuration file.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Check a configuration file and exit: 0 if valid, 64 with the bad key named if not.
    CheckConfig {
        /// The TOML file to check.
        file: PathBuf,
    },
    /// Write a configuration from an AWS SAM/CloudFormation template or a serverless.yml;
    /// what is not translated is reported on stderr and at the top of the file.
    Import(ImportArgs),
}

#[derive(clap::Args)]
struct ImportArgs {
    /// The template (YAML or JSON) or serverless.yml.
    template: PathBuf,
    /// Where to write the configuration (code_dir paths are relative to its directory).
    #[arg(long, default_value = "switchboard.toml")]
    out: PathBuf,
    /// AWS::Region and the SigV4 region [default: us-east-1, or serverless provider.region].
    #[arg(long)]
    region: Option<String>,
    /// What the template is; detected from its content when absent.
    #[arg(long, value_parser = ["sam", "serverless"])]
    format: Option<String>,
    /// AWS::StackName [default: switchboard].
    #[arg(long)]
    stack_name: Option<String>,
    /// The serverless stage (${opt:stage}, ${sls:stage}) [default: provider.stage, or dev].
    #[arg(long)]
    stage: Option<String>,
    /// The logical id of the WebSocket API to import when the template has several.
    #[arg(long)]
    api: Option<String>,
    /// Overwrite --out if it exists.
    #[arg(long)]
    force: bool,
}

fn load(path: Option<&PathBuf>) -> Result<Settings, config::ConfigError> {
    let source = path.map_or(ConfigSource::Embedded, |p| ConfigSource::File(p));
    let settings = config::load(source, std::env::vars())?;
    // Build the API once to check what needs parsing (selection expression, templates).
    Api::build(
        &settings,
        &switchboard::integrations::http::build_client(&settings.http_client),
    )?;
    // And the TLS certificate and key files, if any.
    switchboard::tls::Acceptors::build(&settings)?;
    Ok(settings)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command.unwrap_or(Command::Serve { config: None }) {
        Command::CheckConfig { file } => match load(Some(&file)) {
            Ok(_) => {
                println!("{}: ok", file.display());
                ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("{}: {error}", file.display());
                ExitCode::from(EXIT_CONFIG)
            }
        },
        Command::Import(args) => import(args),
        Command::Serve { config } => {
            let settings = match load(config.as_ref()) {
                Ok(settings) => settings,
                Err(error) => {
                    eprintln!("switchboard: {error}");
                    return ExitCode::from(EXIT_CONFIG);
                }
            };
            switchboard::telemetry::init(&settings.log);
            let runtime = match tokio::runtime::Runtime::new() {
                Ok(rt) => rt,
                Err(error) => {
                    eprintln!("switchboard: cannot start the runtime: {error}");
                    return ExitCode::FAILURE;
                }
            };
            match runtime.block_on(serve(settings, config)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => {
                    tracing::error!(error = %format!("{error:#}"), "switchboard stopped");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// `switchboard import`: the library does the work; this reads flags and writes the file.
fn import(args: ImportArgs) -> ExitCode {
    use switchboard::import::{self, AccessKey, Options};
    if args.out.exists() && !args.force {
        eprintln!(
            "switchboard import: {} exists; pass --force to overwrite it",
            args.out.display()
        );
        return ExitCode::from(EXIT_CANTCREAT);
    }
    let Ok(access_key) = AccessKey::generate() else {
        eprintln!("switchboard import: no randomness for the management key pair");
        return ExitCode::FAILURE;
    };
    let options = Options {
        format: args.format.as_deref().and_then(|f| f.parse().ok()),
        region: args.region,
        stack_name: args.stack_name,
        stage: args.stage,
        api: args.api,
        out_dir: args.out.parent().map(PathBuf::from).unwrap_or_default(),
        env: std::env::vars().collect(),
        access_key,
    };
    let imported = match import::import_file(&args.template, &options) {
        Ok(imported) => imported,
        Err(error) => {
            eprintln!("switchboard import: {error}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    eprint!("{}", imported.report.render());
    if let Err(error) = std::fs::write(&args.out, &imported.toml) {
        eprintln!(
            "switchboard import: cannot write {}: {error}",
            args.out.display()
        );
        return ExitCode::from(EXIT_CANTCREAT);
    }
    let out = args.out.display();
    eprintln!(
        "\nWrote {out}. Next: switchboard check-config {out}, then switchboard serve --config {out}"
    );
    ExitCode::SUCCESS
}

async fn serve(settings: Settings, path: Option<PathBuf>) -> anyhow::Result<()> {
    let listeners = Listeners {
        client: bind(settings.client.listen)?,
        management: bind(settings.management.listen)?,
    };
    let stop = CancellationToken::new();
    let reload_path = path.clone();
    let (mut control, reload) =
        Control::new(stop.clone(), Box::new(move || load(reload_path.as_ref())));
    control.watch = path;
    tokio::spawn(handle_signals(stop, reload));
    app::run(listeners, &settings, control).await
}

/// Binds a listener with a backlog of 1024 (tokio's default, 128, makes a burst of
/// handshakes wait for SYN retransmits).
fn bind(addr: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

/// SIGTERM or SIGINT cancels `stop` (drain, then exit); SIGHUP asks for a reload.
async fn handle_signals(stop: CancellationToken, reload: tokio::sync::mpsc::Sender<()>) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int), Ok(mut hup)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
    ) else {
        tracing::error!("cannot install signal handlers");
        return;
    };
    loop {
        tokio::select! {
            _ = term.recv() => {
                tracing::info!(signal = "SIGTERM", "shutdown requested");
                break;
            }
            _ = int.recv() => {
                tracing::info!(signal = "SIGINT", "shutdown requested");
                break;
            }
            _ = hup.recv() => {
                tracing::info!(signal = "SIGHUP", "reload requested");
                let _ = reload.try_send(());
            }
        }
    }
    stop.cancel();
}
