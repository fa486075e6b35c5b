//! The warm pool of one function: `concurrency` worker slots fed by one bounded queue.
//!
//! Each slot is a supervisor task that keeps one worker process alive and runs one
//! invocation at a time on it: it starts the worker (a cold start, logged), hands it
//! events, enforces the function timeout by killing it, and replaces it when it times
//! out, crashes or fails its init: at once when the worker had completed an invocation,
//! else after a backoff and only once a call waits for it (no crash loop nobody asked
//! for). The slots start on the first call, as Lambda starts environments on
//! demand, and stop when the pool is dropped (the API holding it was replaced, or the
//! gateway stops): their workers are killed.
//!
//! The queue: at most `concurrency + queue` calls are admitted at once (a semaphore);
//! one more fails at once with `TooManyRequestsException`, as Lambda's throttle does.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument as _, error, info, info_span, warn};

use super::runtime_api::{Invocation, Outcome};
use super::spec::FunctionSpec;
use super::worker::Worker;

/// How long a worker may take to reach `/next` once it has an event (Lambda's init cap).
pub const INIT_TIMEOUT: Duration = Duration::from_secs(10);
/// The first delay before restarting a worker that failed before reaching `/next`; it
/// doubles with each failure in a row, up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// The longest delay between restarts.
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// What a call got: the handler's result, or Lambda's error.
pub type CallResult = Result<Bytes, Failure>;

/// An invocation that did not produce a result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// Lambda's `errorType`: the handler's own, or `Sandbox.Timeout`, `Runtime.ExitError`,
    /// `TooManyRequestsException`, …
    pub error_type: String,
    /// Lambda's `errorMessage`.
    pub message: String,
}

impl Failure {
    fn new(error_type: &str, message: impl Into<String>) -> Self {
        Self {
            error_type: error_type.to_owned(),
            message: message.into(),
        }
    }
}

/// One queued call.
struct Job {
    request_id: Arc<str>,
    payload: Bytes,
    reply: oneshot::Sender<CallResult>,
    /// Its place in the admission bound, held until the job is done.
    _permit: OwnedSemaphorePermit,
}

/// The workers of one function.
#[derive(Debug)]
pub struct Pool {
    spec: Arc<FunctionSpec>,
    /// Bounds calls admitted at once to `concurrency + queue`.
    admission: Arc<Semaphore>,
    /// The queue; never full, since admission is bounded by its capacity.
    jobs: mpsc::Sender<Job>,
    /// The slots' end of the queue, until the first call starts them. A std mutex: taken
    /// once, never across an await.
    unstarted: Mutex<Option<mpsc::Receiver<Job>>>,
    /// Cancelled when the pool is dropped: the slots kill their workers and end.
    stop: CancellationToken,
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Pool {
    /// A pool for `spec`; no worker runs until the first call.
    pub fn new(spec: FunctionSpec) -> Self {
        let capacity = spec.concurrency + spec.queue;
        let (jobs, rx) = mpsc::channel(capacity);
        Self {
            spec: Arc::new(spec),
            admission: Arc::new(Semaphore::new(capacity)),
            jobs,
            unstarted: Mutex::new(Some(rx)),
            stop: CancellationToken::new(),
        }
    }

    /// The function this pool runs.
    pub fn spec(&self) -> &FunctionSpec {
        &self.spec
    }

    /// Queues an invocation with `payload` and waits for its result. Fails at once when
    /// `concurrency + queue` calls are already admitted. Dropping the future abandons the
    /// call: a queued job is skipped, a running one runs on (as on Lambda).
    pub async fn invoke(&self, request_id: Arc<str>, payload: Bytes) -> CallResult {
        self.start();
        let permit = self.admission.clone().try_acquire_owned().map_err(|_| {
            Failure::new(
                "TooManyRequestsException",
                format!(
                    "Rate Exceeded: {} invocations running and {} waiting",
                    self.spec.concurrency, self.spec.queue
                ),
            )
        })?;
        let (reply, result) = oneshot::channel();
        let job = Job {
            request_id,
            payload,
            reply,
            _permit: permit,
        };
        if self.jobs.try_send(job).is_err() {
            return Err(Failure::new(
                "ServiceException",
                "the function's workers are stopped",
            ));
        }
        result.await.unwrap_or_else(|_| {
            Err(Failure::new(
                "ServiceException",
                "the function's workers are stopped",
            ))
        })
    }

    /// Starts the slots on the first call.
    fn start(&self) {
        let Some(rx) = self
            .unstarted
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        else {
            return;
        };
        let rx = Arc::new(tokio::sync::Mutex::new(rx));
        for index in 0..self.spec.concurrency {
            // A root span: the slot outlives the call that started it.
            let span = info_span!(parent: None, "lambda", function = %self.spec.name, slot = index);
            tokio::spawn(slot(self.spec.clone(), rx.clone(), self.stop.clone()).instrument(span));
        }
    }
}

/// Why a worker was retired.
enum Retired {
    /// The pool stopped.
    Stopped,
    /// It timed out, crashed or failed its init: start another.
    Replace,
}

/// One slot: keeps a worker and serves jobs on it until the pool stops.
async fn slot(
    spec: Arc<FunctionSpec>,
    jobs: Arc<tokio::sync::Mutex<mpsc::Receiver<Job>>>,
    stop: CancellationToken,
) {
    // Workers in a row that ended without completing an invocation.
    let mut failures: u32 = 0;
    loop {
        // After a failure, restart lazily: wait out the backoff, then for a call to run on
        // the new worker (as Lambda re-inits on the next invoke), so a function whose init
        // keeps failing is not restarted in a loop nobody asked for.
        let mut pending = None;
        if failures > 0 {
            let delay = FIRST_BACKOFF
                .saturating_mul(1 << (failures - 1).min(16))
                .min(MAX_BACKOFF);
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(delay) => {}
            }
            match next_job(&jobs, &stop).await {
                Some(job) => pending = Some(job),
                None => return,
            }
        }
        let mut worker = match Worker::spawn(&spec).await {
            Ok(worker) => worker,
            Err(e) => {
                failures = failures.saturating_add(1);
                error!(program = %spec.program.display(), error = %e, failures, "lambda worker could not be started");
                // Fail the call that waits for it rather than let it wait for a launcher
                // that is gone.
                let job = match pending {
                    Some(job) => Some(job),
                    None => next_job(&jobs, &stop).await,
                };
                if let Some(job) = job {
                    let _ = job.reply.send(Err(Failure::new(
                        "Runtime.StartError",
                        format!("cannot start {}: {e}", spec.program.display()),
                    )));
                }
                continue;
            }
        };
        let (retired, completed) = serve(&spec, &mut worker, &jobs, &stop, pending).await;
        worker.kill().await;
        match retired {
            Retired::Stopped => return,
            Retired::Replace if completed > 0 => failures = 0,
            Retired::Replace => failures = failures.saturating_add(1),
        }
    }
}

/// The next job nobody has abandoned, or `None` when the pool stops.
async fn next_job(
    jobs: &tokio::sync::Mutex<mpsc::Receiver<Job>>,
    stop: &CancellationToken,
) -> Option<Job> {
    loop {
        let job = tokio::select! {
            _ = stop.cancelled() => return None,
            job = async { jobs.lock().await.recv().await } => job?,
        };
        if !job.reply.is_closed() {
            return Some(job);
        }
    }
}

/// Serves `pending`, then jobs from the queue, on `worker` until it must be replaced or
/// the pool stops. Returns why, and how many invocations it completed (answered by the
/// runtime, result or handler error).
async fn serve(
    spec: &FunctionSpec,
    worker: &mut Worker,
    jobs: &tokio::sync::Mutex<mpsc::Receiver<Job>>,
    stop: &CancellationToken,
    mut pending: Option<Job>,
) -> (Retired, usize) {
    let mut cold = true;
    let mut completed = 0;
    loop {
        let job = match pending.take() {
            Some(job) => job,
            None => match idle(worker, jobs, stop).await {
                Ok(job) => job,
                Err(retired) => return (retired, completed),
            },
        };
        let (result, retired) = run(spec, worker, &job, &mut cold, stop).await;
        if let Err(failure) = &result {
            warn!(
                request_id = %job.request_id,
                error_type = %failure.error_type,
                error_message = %failure.message,
                "lambda invocation failed"
            );
        }
        let _ = job.reply.send(result);
        match retired {
            Some(retired) => return (retired, completed),
            None => completed += 1,
        }
    }
}

/// Waits for a job while `worker` is idle, watching it: `Err` when it died or failed its
/// init meanwhile, or the pool stopped.
async fn idle(
    worker: &mut Worker,
    jobs: &tokio::sync::Mutex<mpsc::Receiver<Job>>,
    stop: &CancellationToken,
) -> Result<Job, Retired> {
    tokio::select! {
        biased;
        _ = stop.cancelled() => Err(Retired::Stopped),
        status = worker.child.wait() => {
            let status = exit_text(status);
            match worker.api.init_error() {
                Some((kind, message)) => warn!(pid = worker.pid, %status, error_type = %kind, error_message = %message, "lambda worker failed its init"),
                None if !worker.api.polled() => warn!(pid = worker.pid, %status, "lambda worker exited during its init"),
                None => warn!(pid = worker.pid, %status, "lambda worker exited while idle"),
            }
            Err(Retired::Replace)
        }
        _ = worker.api.init_failed() => {
            if let Some((kind, message)) = worker.api.init_error() {
                warn!(pid = worker.pid, error_type = %kind, error_message = %message, "lambda worker failed its init");
            }
            Err(Retired::Replace)
        }
        job = next_job(jobs, stop) => job.ok_or(Retired::Stopped),
    }
}

/// Runs one job on `worker`: the result, and whether the worker must go.
async fn run(
    spec: &FunctionSpec,
    worker: &mut Worker,
    job: &Job,
    cold: &mut bool,
    stop: &CancellationToken,
) -> (CallResult, Option<Retired>) {
    let request_id = &job.request_id;
    worker.serving(request_id);
    let (picked_tx, picked_rx) = oneshot::channel();
    let (outcome_tx, outcome_rx) = oneshot::channel();
    let invocation = Invocation {
        request_id: request_id.clone(),
        payload: job.payload.clone(),
        timeout: spec.timeout,
        picked_up: picked_tx,
        outcome: outcome_tx,
    };
    if worker.api.submit(invocation).is_err() {
        return (
            Err(Failure::new("ServiceException", "the worker was busy")),
            Some(Retired::Replace),
        );
    }
    let stopped = || Err(Failure::new("ServiceException", "the gateway is stopping"));
    // Until the runtime fetches the event (a cold worker is still initialising).
    let deadline = tokio::select! {
        biased;
        deadline = picked_rx => match deadline {
            Ok(deadline) => deadline,
            Err(_) => return (Err(exit_failure(request_id, "the Runtime API stopped")), Some(Retired::Replace)),
        },
        _ = stop.cancelled() => return (stopped(), Some(Retired::Stopped)),
        status = worker.child.wait() => {
            let failure = match worker.api.init_error() {
                Some((error_type, message)) => Failure { error_type, message },
                None => exit_failure(request_id, &exit_text(status)),
            };
            return (Err(failure), Some(Retired::Replace));
        }
        _ = worker.api.init_failed() => {
            let (error_type, message) = worker.api.init_error().unwrap_or_default();
            return (Err(Failure { error_type, message }), Some(Retired::Replace));
        }
        _ = tokio::time::sleep(INIT_TIMEOUT) => {
            return (
                Err(Failure::new("Sandbox.Timeout", format!("RequestId: {request_id} Error: init did not finish within {} seconds", INIT_TIMEOUT.as_secs()))),
                Some(Retired::Replace),
            );
        }
    };
    if std::mem::take(cold) {
        info!(
            %request_id,
            pid = worker.pid,
            init_ms = worker.started.elapsed().as_millis() as u64,
            "lambda cold start"
        );
    }
    // Until the runtime answers, dies, or runs out of time.
    tokio::select! {
        biased;
        outcome = outcome_rx => match outcome {
            Ok(Outcome::Response(body)) => (Ok(body), None),
            Ok(Outcome::Error { error_type, message }) => (Err(Failure { error_type, message }), None),
            Err(_) => (Err(exit_failure(request_id, "the Runtime API stopped")), Some(Retired::Replace)),
        },
        status = worker.child.wait() => {
            (Err(exit_failure(request_id, &exit_text(status))), Some(Retired::Replace))
        }
        _ = tokio::time::sleep_until(deadline) => {
            warn!(%request_id, pid = worker.pid, "lambda invocation timed out; killing the worker");
            let seconds = spec.timeout.as_secs_f64();
            (
                Err(Failure::new("Sandbox.Timeout", format!("RequestId: {request_id} Error: Task timed out after {seconds:.2} seconds"))),
                Some(Retired::Replace),
            )
        }
        _ = stop.cancelled() => (stopped(), Some(Retired::Stopped)),
    }
}

/// Lambda's error for a runtime that died during an invocation.
fn exit_failure(request_id: &str, status: &str) -> Failure {
    Failure::new(
        "Runtime.ExitError",
        format!("RequestId: {request_id} Error: Runtime exited with error: {status}"),
    )
}

fn exit_text(status: std::io::Result<std::process::ExitStatus>) -> String {
    use std::os::unix::process::ExitStatusExt as _;
    match status {
        Ok(s) => match (s.code(), s.signal()) {
            (Some(code), _) => format!("exit status {code}"),
            (None, Some(signal)) => format!("signal {signal}"),
            _ => s.to_string(),
        },
        Err(e) => e.to_string(),
    }
}
