//! One worker: a Runtime Interface Client process and the Runtime API it talks to.
//!
//! Owns the child process (killed when the worker is dropped: no orphans), its Runtime
//! API server, and the two tasks that copy its stdout and stderr into the gateway's log,
//! line by line, with the function name and the request id being served. Decides nothing:
//! the pool says when to invoke, kill or replace it.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Instant;

use rand::RngExt as _;
use tokio::io::{AsyncBufReadExt as _, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tracing::{info, warn};

use super::runtime_api::RuntimeApi;
use super::spec::FunctionSpec;

/// util-linux `setpriv`, when installed: workers are started through
/// `setpriv --pdeathsig KILL --`, which asks the kernel to kill a worker when the gateway
/// dies without stopping it (SIGKILL, a crash). Without it such a worker outlives the
/// gateway, and the Node RIC, its Runtime API gone, spins. (`prctl` itself would need
/// unsafe code between fork and exec, which this crate forbids.)
static SETPRIV: LazyLock<Option<PathBuf>> = LazyLock::new(|| {
    let found = super::spec::find_program("setpriv");
    if found.is_none() {
        warn!(
            "setpriv (util-linux) not found: lambda workers are killed when the gateway stops, \
             but would outlive a gateway that is killed"
        );
    }
    found
});

/// The longest log line kept; the rest of a longer line is dropped (and said so).
const MAX_LOG_LINE: usize = 16 * 1024;

/// A running worker process.
#[derive(Debug)]
pub struct Worker {
    /// The RIC process (`kill_on_drop`); `child.wait()` tells when it exits.
    pub child: Child,
    /// The Runtime API it polls.
    pub api: RuntimeApi,
    /// Its process id, for logs.
    pub pid: u32,
    /// When it was started (cold-start duration).
    pub started: Instant,
    /// The request id its output lines are logged with: the invocation being served, or
    /// the last one (output is read asynchronously and may trail the answer).
    current: Arc<Mutex<Option<Arc<str>>>>,
}

impl Worker {
    /// Starts a worker of `spec`: a Runtime API on a free loopback port, then the RIC with
    /// the Lambda environment, in its own process group (a Ctrl-C at a terminal reaches
    /// the gateway, which stops its workers, not the workers directly), killed by the
    /// kernel if the gateway dies first (see [`SETPRIV`]).
    pub async fn spawn(spec: &FunctionSpec) -> std::io::Result<Worker> {
        let api = RuntimeApi::start(spec.arn.as_str().into()).await?;
        let stream = log_stream_name();
        let mut command = match &*SETPRIV {
            Some(setpriv) => {
                let mut command = Command::new(setpriv);
                command
                    .args(["--pdeathsig", "KILL", "--"])
                    .arg(&spec.program);
                command
            }
            None => Command::new(&spec.program),
        };
        command
            .args(&spec.args)
            .current_dir(&spec.code_dir)
            .env_clear()
            .envs(spec.env.iter().map(|(k, v)| (k, v)))
            .env("AWS_LAMBDA_RUNTIME_API", api.addr.to_string())
            .env("AWS_LAMBDA_LOG_STREAM_NAME", &stream)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        let mut child = command.spawn()?;
        let pid = child.id().unwrap_or_default();
        let current = Arc::new(Mutex::new(None));
        let name: Arc<str> = spec.name.as_str().into();
        if let Some(out) = child.stdout.take() {
            tokio::spawn(copy_lines(out, "stdout", name.clone(), current.clone()));
        }
        if let Some(err) = child.stderr.take() {
            tokio::spawn(copy_lines(err, "stderr", name, current.clone()));
        }
        info!(
            function = %spec.name,
            pid,
            runtime_api = %api.addr,
            log_stream = %stream,
            "lambda worker started"
        );
        Ok(Worker {
            child,
            api,
            pid,
            started: Instant::now(),
            current,
        })
    }

    /// Sets the request id its output is logged with.
    pub fn serving(&self, request_id: &Arc<str>) {
        *self.current.lock().unwrap_or_else(|p| p.into_inner()) = Some(request_id.clone());
    }

    /// Kills the process (SIGKILL: a RIC cannot abort a running handler) and reaps it.
    pub async fn kill(mut self) {
        if let Err(error) = self.child.kill().await {
            warn!(pid = self.pid, %error, "lambda worker: kill failed");
        }
    }
}

/// `2024/11/25/[$LATEST]<32 hex>`, as Lambda names a log stream.
fn log_stream_name() -> String {
    let random: [u8; 16] = rand::rng().random();
    let hex: String = random.iter().map(|b| format!("{b:02x}")).collect();
    format!("{}/[$LATEST]{hex}", chrono::Utc::now().format("%Y/%m/%d"))
}

/// Copies `stream`'s lines into the log until it ends (the process exited).
async fn copy_lines(
    stream: impl AsyncRead + Unpin,
    which: &'static str,
    function: Arc<str>,
    current: Arc<Mutex<Option<Arc<str>>>>,
) {
    let mut reader = BufReader::new(stream);
    let mut line = Vec::new();
    loop {
        line.clear();
        let truncated = match read_line(&mut reader, &mut line).await {
            Ok(None) => return,
            Ok(Some(truncated)) => truncated,
            Err(_) => return,
        };
        let text = String::from_utf8_lossy(&line);
        let text = text.trim_end_matches(['\n', '\r']);
        let request_id = current
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .unwrap_or_else(|| "".into());
        info!(
            target: "switchboard::lambda::output",
            function = %function,
            request_id = %request_id,
            stream = which,
            truncated,
            "{text}"
        );
    }
}

/// Reads one line into `line`, keeping at most [`MAX_LOG_LINE`] bytes of it: `None` at
/// the end of the stream, else whether the line was cut.
async fn read_line(
    reader: &mut (impl tokio::io::AsyncBufRead + Unpin),
    line: &mut Vec<u8>,
) -> std::io::Result<Option<bool>> {
    let mut truncated = false;
    let mut read_any = false;
    loop {
        let buf = reader.fill_buf().await?;
        if buf.is_empty() {
            return Ok(read_any.then_some(truncated));
        }
        read_any = true;
        let (chunk, done) = match buf.iter().position(|&b| b == b'\n') {
            Some(at) => (&buf[..=at], true),
            None => (buf, false),
        };
        let room = MAX_LOG_LINE.saturating_sub(line.len());
        if chunk.len() > room {
            truncated = true;
        }
        line.extend_from_slice(&chunk[..chunk.len().min(room)]);
        let used = chunk.len();
        reader.consume(used);
        if done {
            return Ok(Some(truncated));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn lines_are_split_and_capped() {
        let long = "x".repeat(MAX_LOG_LINE + 10);
        let input = format!("one\ntwo\r\n{long}\nlast");
        let mut reader = BufReader::with_capacity(64, input.as_bytes());
        let mut lines = Vec::new();
        let mut line = Vec::new();
        while let Some(truncated) = read_line(&mut reader, &mut line).await.unwrap() {
            lines.push((String::from_utf8(line.clone()).unwrap(), truncated));
            line.clear();
        }
        assert_eq!(lines[0], ("one\n".into(), false));
        assert_eq!(lines[1], ("two\r\n".into(), false));
        assert_eq!(lines[2].0.len(), MAX_LOG_LINE);
        assert!(lines[2].1);
        assert_eq!(lines[3], ("last".into(), false));
        assert_eq!(lines.len(), 4);
    }
}
