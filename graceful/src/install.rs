//! `install()`: the panic hook and the graceful exit it starts.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use cluster_worker::Worker;
use tokio::sync::watch;

use crate::report::{PanicReport, payload_message};

/// A step of the graceful exit, for logs (the seed prints one line for each).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Step {
    /// Every server has stopped accepting (the seed's `close N servers!`).
    ServersClosed(usize),
    /// `worker.disconnect()` was called (the seed's `worker disconnect!`).
    WorkerDisconnected,
    /// Every connection is finished; the process exits with code 0 now.
    Drained,
    /// The kill timeout fired before the drain ended; the process exits with code 1 now
    /// (the seed's `kill timeout, exit now.`).
    KillTimeout,
}

type ErrorCallback = Box<dyn Fn(&PanicReport) + Send + Sync>;
type StepCallback = Box<dyn Fn(Step) + Send + Sync>;
type LastWords = Box<dyn Fn(PanicReport) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

/// How graceful behaves; made with [`install`]'s builder methods.
pub struct Options {
    kill_timeout: Duration,
    idle_grace: Duration,
    handover_timeout: Duration,
    last_words_timeout: Duration,
    report_only: Vec<String>,
    panic_message_in_body: bool,
    on_error: Option<ErrorCallback>,
    on_step: Option<StepCallback>,
    last_words: Option<LastWords>,
    worker: Option<Worker>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            kill_timeout: Duration::from_secs(30),
            idle_grace: Duration::from_secs(1),
            handover_timeout: Duration::from_secs(2),
            last_words_timeout: Duration::from_secs(2),
            report_only: Vec::new(),
            panic_message_in_body: false,
            on_error: None,
            on_step: None,
            last_words: None,
            worker: None,
        }
    }
}

impl Options {
    /// The defaults: 30 s kill timeout, 1 s idle grace, 2 s hand-over timeout.
    pub fn new() -> Self {
        Self::default()
    }

    /// The longest the exit may take after the first panic; then the process exits with
    /// code 1 (default 30 s; the seed uses 10 s). Counted from the end of the panic's report
    /// (the panic hook that was installed before graceful's, e.g. the default one printing a
    /// backtrace), so a slow report does not shorten the drain.
    pub fn kill_timeout(mut self, timeout: Duration) -> Self {
        self.kill_timeout = timeout;
        self
    }

    /// While draining, a keep-alive connection that has sent nothing for this long is
    /// closed (default 1 s). Connections that keep sending get `Connection: close` on their
    /// next response instead, so no client sees a reset.
    pub fn idle_grace(mut self, grace: Duration) -> Self {
        self.idle_grace = grace;
        self
    }

    /// How long a failing worker keeps accepting while it waits for a replacement to accept
    /// on the same address (default 2 s).
    pub fn handover_timeout(mut self, timeout: Duration) -> Self {
        self.handover_timeout = timeout;
        self
    }

    /// Panics whose message contains `text` are reported to `on_error` and nothing else.
    pub fn report_only(mut self, text: impl Into<String>) -> Self {
        self.report_only.push(text.into());
        self
    }

    /// With `true`, the 500 that [`crate::serve`] answers to a panicking request names the
    /// panic's message in its body (default `false`: a generic body, the message goes to
    /// `on_error` / the log only). For development: a panic message can hold anything the
    /// code had at hand.
    pub fn panic_message_in_body(mut self, message_in_body: bool) -> Self {
        self.panic_message_in_body = message_in_body;
        self
    }

    /// Called for every panic (with its count), on the panicking thread, before anything
    /// else. Keep it short: log, count, alert.
    pub fn on_error(mut self, callback: impl Fn(&PanicReport) + Send + Sync + 'static) -> Self {
        self.on_error = Some(Box::new(callback));
        self
    }

    /// Called at each step of the exit.
    pub fn on_step(mut self, callback: impl Fn(Step) + Send + Sync + 'static) -> Self {
        self.on_step = Some(Box::new(callback));
        self
    }

    /// An async hook run once, after the servers stopped accepting and before the worker
    /// disconnects, awaited at most `timeout`: the place to send a last log line or alert.
    pub fn last_words<F, Fut>(mut self, timeout: Duration, hook: F) -> Self
    where
        F: Fn(PanicReport) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.last_words_timeout = timeout;
        self.last_words = Some(Box::new(move |report| Box::pin(hook(report))));
        self
    }

    /// The worker to disconnect (default: [`Worker::current`]).
    pub fn worker(mut self, worker: Worker) -> Self {
        self.worker = Some(worker);
        self
    }
}

/// Why [`install`] failed.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    /// graceful is installed once per process.
    #[error("graceful is already installed in this process")]
    AlreadyInstalled,
    /// It must be installed inside a tokio runtime.
    #[error("graceful must be installed inside a tokio runtime")]
    NoRuntime,
}

pub(crate) struct State {
    pub(crate) options: Options,
    worker: Option<Worker>,
    runtime: tokio::runtime::Handle,
    panics: AtomicUsize,
    exiting: AtomicBool,
    first: Mutex<Option<PanicReport>>,
    /// True once the exit has begun: responses carry `Connection: close`, servers stop
    /// accepting once relieved.
    pub(crate) draining: watch::Sender<bool>,
    pub(crate) servers: watch::Sender<ServerCount>,
}

/// How many servers are registered, and how many still accept.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct ServerCount {
    pub(crate) registered: usize,
    pub(crate) accepting: usize,
}

static STATE: OnceLock<Arc<State>> = OnceLock::new();

pub(crate) fn state() -> Option<&'static Arc<State>> {
    STATE.get()
}

/// Installs graceful in this process: from now on, the first panic on any thread starts the
/// graceful exit (see the crate docs). Call once, inside the tokio runtime, before serving.
///
/// Install your `tracing` subscriber first: without one, `install` writes one line to
/// stderr saying so, and graceful's own warnings and errors go to stderr (see the crate
/// docs, "Logs").
///
/// ```no_run
/// # async fn demo() -> Result<(), graceful::InstallError> {
/// use std::time::Duration;
/// graceful::install(
///     graceful::Options::new()
///         .kill_timeout(Duration::from_secs(10))
///         .on_error(|report| eprintln!("[uncaughtException] throw error {} times", report.count)),
/// )?;
/// # Ok(()) }
/// ```
pub fn install(mut options: Options) -> Result<(), InstallError> {
    let runtime = tokio::runtime::Handle::try_current().map_err(|_| InstallError::NoRuntime)?;
    let worker = options.worker.take().or_else(Worker::current);
    let shared = Arc::new(State {
        options,
        worker,
        runtime,
        panics: AtomicUsize::new(0),
        exiting: AtomicBool::new(false),
        first: Mutex::new(None),
        draining: watch::Sender::new(false),
        servers: watch::Sender::new(ServerCount::default()),
    });
    STATE
        .set(shared)
        .map_err(|_| InstallError::AlreadyInstalled)?;
    crate::log::hint_without_subscriber();
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        // Graceful's part first: printing a backtrace in the previous hook can take tens of
        // milliseconds (seconds, symbolising a debug build on a loaded machine), and the
        // master should start the replacement now. The kill timer starts after it, so that
        // time is not taken from the drain (a request's own 500 included).
        let first = state().filter(|state| state.on_panic(info));
        previous(info);
        if let Some(state) = first {
            state.arm_kill_timer();
        }
    }));
    Ok(())
}

impl State {
    /// Runs in the panic hook, on the panicking thread. True for the first panic that starts
    /// the exit sequence: the caller arms the kill timer once the previous hook is done.
    fn on_panic(self: &Arc<Self>, info: &std::panic::PanicHookInfo<'_>) -> bool {
        let message = payload_message(info.payload());
        let report_only = self
            .options
            .report_only
            .iter()
            .any(|text| message.contains(text.as_str()));
        let report = PanicReport {
            message,
            location: info.location().map(|l| l.to_string()),
            thread: std::thread::current()
                .name()
                .unwrap_or("<unnamed>")
                .to_string(),
            count: self.panics.fetch_add(1, Ordering::AcqRel) + 1,
            report_only,
        };
        match &self.options.on_error {
            Some(on_error) => on_error(&report),
            None => crate::log::failure!("panic {}: {report}", report.count),
        }
        if report_only || self.exiting.swap(true, Ordering::AcqRel) {
            return false;
        }
        // Tell the master first, synchronously: with panic = "abort" the process dies right
        // after this hook, and the replacement must start at once either way.
        if let Some(worker) = &self.worker {
            let handed_over = worker.hand_over_after_panic(
                &report.message,
                report.location.as_deref(),
                Duration::from_millis(200),
            );
            if let Err(e) = handed_over {
                crate::log::warning!("could not tell the master about the hand-over: {e}");
            }
        }
        *self.first.lock().unwrap_or_else(|p| p.into_inner()) = Some(report);
        self.draining.send_replace(true);
        let registered = self.servers.borrow().registered;
        let state = self.clone();
        self.runtime
            .spawn(async move { state.exit_sequence(registered).await });
        true
    }

    fn step(&self, step: Step) {
        match &self.options.on_step {
            Some(on_step) => on_step(step),
            None => tracing::info!(?step, "graceful exit"),
        }
    }

    fn arm_kill_timer(self: &Arc<Self>) {
        let state = self.clone();
        let timeout = self.options.kill_timeout;
        let spawned = std::thread::Builder::new()
            .name("graceful-kill-timer".into())
            .spawn(move || {
                std::thread::sleep(timeout);
                state.step(Step::KillTimeout);
                std::process::exit(1);
            });
        if let Err(e) = spawned {
            crate::log::failure!("could not arm the kill timer: {e}");
        }
    }

    /// After the first panic: wait for the servers to stop accepting, send the last words,
    /// disconnect, wait for the drain, exit.
    async fn exit_sequence(self: Arc<Self>, registered: usize) {
        let mut servers = self.servers.subscribe();
        let _ = servers.wait_for(|s| s.accepting == 0).await;
        self.step(Step::ServersClosed(registered));

        let first = self.first.lock().unwrap_or_else(|p| p.into_inner()).clone();
        if let (Some(hook), Some(report)) = (&self.options.last_words, first) {
            let timeout = self.options.last_words_timeout;
            if tokio::time::timeout(timeout, hook(report)).await.is_err() {
                crate::log::warning!("last words hook did not finish within {timeout:?}");
            }
        }

        if let Some(worker) = &self.worker {
            worker.disconnect();
        }
        self.step(Step::WorkerDisconnected);

        let _ = servers.wait_for(|s| s.registered == 0).await;
        self.step(Step::Drained);
        std::process::exit(0);
    }

    pub(crate) fn worker(&self) -> Option<&Worker> {
        self.worker.as_ref()
    }

    pub(crate) fn options_idle_grace(&self) -> Duration {
        self.options.idle_grace
    }

    pub(crate) fn options_panic_message_in_body(&self) -> bool {
        self.options.panic_message_in_body
    }

    pub(crate) fn options_handover_timeout(&self) -> Duration {
        self.options.handover_timeout
    }
}
