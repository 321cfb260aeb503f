//! The operator's side against real masters: `clusterctl` (the real binary), and the
//! metrics and health endpoints, with a pm master with two groups, `web` (2 workers) and
//! `api` (1), and a plain cluster. The master and its workers are this test
//! executable started again in a role (`CLUSTERCTL_TEST_ROLE=master|cluster|worker`, running
//! only the `role_process` test): cargo builds no other package's binaries for this crate's
//! tests.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use cluster_control::{StatusReport, WorkerStatus};
use cluster_tests::{Lines, Load, http_get, within};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const ROLE: &str = "CLUSTERCTL_TEST_ROLE";
/// How this executable runs nothing but `role_process`.
const ROLE_ARGS: [&str; 4] = ["role_process", "--exact", "--nocapture", "--test-threads=1"];

/// In a normal test run this does nothing; started with `CLUSTERCTL_TEST_ROLE` it is a
/// master or a worker.
#[test]
fn role_process() {
    match std::env::var(ROLE).as_deref() {
        Ok("master") => roles::pm_master(),
        Ok("cluster") => roles::plain_master(),
        Ok("worker") => roles::worker(),
        _ => {}
    }
}

mod roles {
    use std::convert::Infallible;
    use std::net::SocketAddr;
    use std::time::Duration;

    use bytes::Bytes;
    use cluster_core::pm::{GroupOptions, Master};
    use cluster_core::{Settings, setup_master};
    use http_body_util::Full;
    use hyper::{Request, Response};

    use super::{ROLE, ROLE_ARGS};

    fn env_addr(name: &str) -> SocketAddr {
        std::env::var(name)
            .expect(name)
            .parse()
            .expect("an address")
    }

    fn logging() {
        tracing_subscriber::fmt()
            .with_max_level(tracing_subscriber::filter::LevelFilter::INFO)
            .with_ansi(false)
            .with_writer(std::io::stdout)
            .init();
    }

    /// `web` (2 workers) on `CTL_WEB`, `api` (1) on `CTL_API`, control socket `CTL_SOCKET`.
    pub(super) fn pm_master() {
        logging();
        let runtime = tokio::runtime::Runtime::new().expect("runtime");
        runtime.block_on(async {
            let exe = std::env::current_exe().expect("exe");
            let master = Master::new();
            let group = |address: SocketAddr, children: usize| {
                let mut options = GroupOptions::new()
                    .listen(address)
                    .children(children)
                    .env(ROLE, "worker")
                    .settings(
                        Settings::new()
                            .stop_timeout(Duration::from_secs(5))
                            // Beats (with the load) every 200 ms.
                            .heartbeat_timeout(Some(Duration::from_secs(1))),
                    );
                for arg in ROLE_ARGS {
                    options = options.arg(arg);
                }
                options
            };
            master
                .register("web", group(env_addr("CTL_WEB"), 2).exec(&exe))
                .expect("web");
            master
                .register("api", group(env_addr("CTL_API"), 1).exec(&exe))
                .expect("api");
            master
                .control_socket(std::env::var("CTL_SOCKET").expect("CTL_SOCKET"))
                .expect("control socket");
            master
                .metrics_address(env_addr("CTL_METRICS"))
                .expect("metrics address");
            master.dispatch();
            master.run().await.expect("run");
        });
    }

    /// A plain cluster of 2 on `CTL_WEB`, replacing each worker that disconnects (the
    /// seed's dispatch), named `plain`.
    pub(super) fn plain_master() {
        logging();
        let runtime = tokio::runtime::Runtime::new().expect("runtime");
        runtime.block_on(async {
            let mut settings = Settings::new()
                .exec(std::env::current_exe().expect("exe"))
                .name("plain")
                .env(ROLE, "worker")
                .env("CTL_LISTEN", env_addr("CTL_WEB").to_string())
                .stop_timeout(Duration::from_secs(5))
                .control_socket(std::env::var("CTL_SOCKET").expect("CTL_SOCKET"));
            for arg in ROLE_ARGS {
                settings = settings.arg(arg);
            }
            let cluster = setup_master(settings).expect("setup");
            cluster.on_disconnect(|cluster, _| {
                let _ = cluster.fork(&[]);
            });
            for _ in 0..2 {
                cluster.fork(&[]).expect("fork");
            }
            cluster.run().await.expect("run");
        });
    }

    /// graceful installed; `/panic` panics in the handler (500, hand-over); `/slow` answers
    /// `slow` after 2 s; anything else answers `ok`. Listens on `CTL_LISTEN`, else the group's first address.
    pub(super) fn worker() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async {
            graceful::install(
                graceful::Options::new()
                    .kill_timeout(Duration::from_secs(5))
                    .idle_grace(Duration::from_millis(300)),
            )
            .expect("graceful");
            let listener = match std::env::var("CTL_LISTEN") {
                Ok(address) => cluster_worker::incoming(address.parse().expect("address"))
                    .await
                    .expect("incoming"),
                Err(_) => cluster_worker::group_incoming()
                    .await
                    .expect("group incoming")
                    .into_iter()
                    .next()
                    .expect("a group address"),
            };
            if let Some(worker) = cluster_worker::Worker::current() {
                // A worker retired while booting finds its channel closed: not an error.
                let _ = worker.ready().await;
            }
            let service =
                graceful::service_fn(|request: Request<hyper::body::Incoming>| async move {
                    if request.uri().path() == "/panic" {
                        panic!("boom on purpose");
                    }
                    if request.uri().path() == "/slow" {
                        tokio::time::sleep(Duration::from_secs(2)).await;
                        return Ok(Response::new(Full::new(Bytes::from("slow"))));
                    }
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from("ok"))))
                });
            graceful::serve(listener, service).await.expect("serve");
        });
    }
}

fn free_address() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
}

/// A master process started in a role, killed (by pid) if the test fails before stopping it.
struct MasterProcess {
    child: tokio::process::Child,
    socket: PathBuf,
    web: SocketAddr,
    api: SocketAddr,
    metrics: SocketAddr,
}

impl MasterProcess {
    /// `role` is `master` (pm) or `cluster` (plain). With `log`, the master's log lines are
    /// piped to the test (read them, or the master blocks on a full pipe).
    fn start(role: &str, log: bool) -> MasterProcess {
        let (web, api, metrics) = (free_address(), free_address(), free_address());
        let socket = std::env::temp_dir().join(format!(
            "clusterctl-test-{}-{}.sock",
            std::process::id(),
            web.port()
        ));
        let child = tokio::process::Command::new(std::env::current_exe().expect("exe"))
            .args(ROLE_ARGS)
            .env(ROLE, role)
            .env("CTL_WEB", web.to_string())
            .env("CTL_API", api.to_string())
            .env("CTL_METRICS", metrics.to_string())
            .env("CTL_SOCKET", &socket)
            .stdout(if log { Stdio::piped() } else { Stdio::null() })
            .kill_on_drop(true)
            .spawn()
            .expect("spawn the master");
        MasterProcess {
            child,
            socket,
            web,
            api,
            metrics,
        }
    }

    fn pid(&self) -> u32 {
        self.child.id().expect("running")
    }

    /// `clusterctl stop`, then the master exits 0 and its socket file is gone.
    async fn stop(mut self) {
        let out = ctl(&self.socket, &["stop"]).await;
        assert!(out.ok, "{out:?}");
        assert!(out.stdout.contains("graceful stop begun"), "{out:?}");
        let status = within(30, "the master to exit", self.child.wait())
            .await
            .expect("wait");
        assert!(status.success(), "{status:?}");
        assert!(!self.socket.exists(), "the control socket file is removed");
    }
}

#[derive(Debug)]
struct CtlOutput {
    ok: bool,
    stdout: String,
    stderr: String,
}

/// Runs the real `clusterctl --socket SOCKET ARGS…`.
async fn ctl(socket: &Path, args: &[&str]) -> CtlOutput {
    ctl_as(socket, args, None).await
}

async fn ctl_as(socket: &Path, args: &[&str], uid: Option<u32>) -> CtlOutput {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_clusterctl"));
    command.arg("--socket").arg(socket).args(args);
    if let Some(uid) = uid {
        command.uid(uid).gid(uid);
    }
    let output = within(60, "clusterctl", command.output())
        .await
        .expect("run clusterctl");
    CtlOutput {
        ok: output.status.success(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// `clusterctl status --json`, once it answers.
async fn status(socket: &Path) -> Result<StatusReport, String> {
    let out = ctl(socket, &["status", "--json"]).await;
    if !out.ok {
        return Err(out.stderr);
    }
    serde_json::from_str(&out.stdout).map_err(|e| format!("{e}: {}", out.stdout))
}

/// Polls the status until `check` holds (20 s at most); returns that status.
async fn wait_status(
    socket: &Path,
    what: &str,
    check: impl Fn(&StatusReport) -> bool,
) -> StatusReport {
    let mut last = Err("no status yet".to_string());
    let found = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            last = status(socket).await;
            if let Ok(status) = &last {
                if check(status) {
                    return status.clone();
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    found.unwrap_or_else(|_| panic!("no status with {what} within 20s; last: {last:#?}"))
}

fn live<'a>(status: &'a StatusReport, group: &str) -> Vec<&'a WorkerStatus> {
    status
        .workers
        .iter()
        .filter(|w| w.group == group && w.state != "dead")
        .collect()
}

fn dead<'a>(status: &'a StatusReport, group: &str) -> Vec<&'a WorkerStatus> {
    status
        .workers
        .iter()
        .filter(|w| w.group == group && w.state == "dead")
        .collect()
}

/// `count` live workers in `group`, all ready and listening.
fn serving(status: &StatusReport, group: &str, count: usize) -> bool {
    let live = live(status, group);
    live.len() == count && live.iter().all(|w| w.ready && w.state == "listening")
}

fn restarts(status: &StatusReport, group: &str) -> u64 {
    status
        .groups
        .iter()
        .find(|g| g.name == group)
        .map(|g| g.restarts)
        .expect("the group")
}

#[tokio::test]
async fn status_shows_every_worker_after_a_panic_a_sigkill_and_a_reload() {
    let master = MasterProcess::start("master", false);
    let socket = master.socket.clone();
    let first = wait_status(&socket, "web 2 and api 1 serving", |s| {
        serving(s, "web", 2) && serving(s, "api", 1)
    })
    .await;
    assert_eq!(first.kind, "pm");
    assert_eq!(first.master_pid, master.pid());
    for w in &first.workers {
        assert_eq!(w.generation, Some(0), "{w:?}");
        assert!(w.rss_bytes.is_some_and(|b| b > 0), "{w:?}");
        assert!(w.cpu_percent.is_some(), "{w:?}");
    }

    // A panic: the request gets its 500, the worker hands over with the panic's words.
    let (code, _) = http_get(master.web, "/panic").await.expect("GET /panic");
    assert_eq!(code, 500);
    let after_panic = wait_status(&socket, "the panicked web worker dead", |s| {
        serving(s, "web", 2) && !dead(s, "web").is_empty()
    })
    .await;
    let panicked = dead(&after_panic, "web")[0];
    let exit = panicked.exit.as_ref().expect("an exit");
    assert_eq!(exit.reason.as_deref(), Some("panic"), "{exit:?}");
    assert_eq!(exit.message.as_deref(), Some("boom on purpose"), "{exit:?}");
    assert!(
        exit.location
            .as_deref()
            .is_some_and(|l| l.contains("cli.rs")),
        "{exit:?}"
    );
    assert_eq!(
        exit.code,
        Some(0),
        "a panicked worker drains and exits 0: {exit:?}"
    );
    assert_eq!(restarts(&after_panic, "web"), 1, "{after_panic:#?}");

    // A SIGKILL: no reason, the signal.
    let api_pid = live(&after_panic, "api")[0].pid;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(api_pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill");
    let after_kill = wait_status(&socket, "the killed api worker dead and replaced", |s| {
        serving(s, "api", 1) && dead(s, "api").iter().any(|w| w.pid == api_pid)
    })
    .await;
    let killed = dead(&after_kill, "api")[0];
    let exit = killed.exit.as_ref().expect("an exit");
    assert_eq!(exit.signal.as_deref(), Some("SIGKILL"), "{exit:?}");
    assert_eq!(exit.reason, None, "{exit:?}");
    assert_eq!(restarts(&after_kill, "api"), 1);

    // A reload of web answers once it has ended: new generation only, the old ones retired.
    let old: Vec<u32> = live(&after_kill, "web").iter().map(|w| w.pid).collect();
    let out = ctl(&socket, &["reload", "web"]).await;
    assert!(out.ok, "{out:?}");
    assert_eq!(out.stdout, "reloaded web\n");
    let after_reload = wait_status(&socket, "web's old workers retired", |s| {
        old.iter().all(|pid| {
            dead(s, "web").iter().any(|w| {
                w.pid == *pid
                    && w.exit
                        .as_ref()
                        .is_some_and(|e| e.reason.as_deref() == Some("reload"))
            })
        })
    })
    .await;
    assert!(serving(&after_reload, "web", 2), "{after_reload:#?}");
    for w in live(&after_reload, "web") {
        assert_eq!(w.generation, Some(1), "{w:?}");
        assert!(!old.contains(&w.pid));
    }
    assert_eq!(live(&after_reload, "api")[0].generation, Some(0));
    assert_eq!(
        restarts(&after_reload, "web"),
        1,
        "a reload is not a restart"
    );

    // The table says the same to a person.
    let table = ctl(&socket, &["status"]).await;
    assert!(table.ok, "{table:?}");
    for needle in [
        "GROUP",
        "LAST EXIT",
        "panic 'boom on purpose' at",
        "SIGKILL",
        "code 0, reload",
        "RESTARTS",
    ] {
        assert!(
            table.stdout.contains(needle),
            "{needle:?} in\n{}",
            table.stdout
        );
    }

    // Errors are one line naming what went wrong.
    let unknown = ctl(&socket, &["reload", "nope"]).await;
    assert!(!unknown.ok);
    assert_eq!(unknown.stderr, "clusterctl: unknown group \"nope\"\n");
    let scale = ctl(&socket, &["scale", "nope", "2"]).await;
    assert_eq!(scale.stderr, "clusterctl: unknown group \"nope\"\n");
    let restart = ctl(&socket, &["restart", "99"]).await;
    assert_eq!(restart.stderr, "clusterctl: no live worker 99\n");
    let ambiguous = ctl(&socket, &["restart", "1"]).await;
    assert!(!ambiguous.ok, "{ambiguous:?}");

    // restart GROUP:ID: that worker drains, its replacement serves.
    let api = live(&after_reload, "api")[0].clone();
    let out = ctl(&socket, &["restart", &format!("api:{}", api.id)]).await;
    assert!(out.ok, "{out:?}");
    wait_status(&socket, "api's worker restarted", |s| {
        serving(s, "api", 1) && live(s, "api")[0].pid != api.pid
    })
    .await;

    let api_address = master.api;
    let (code, body) = http_get(api_address, "/").await.expect("GET api");
    assert_eq!((code, body.as_str()), (200, "ok"));
    master.stop().await;
    let gone = ctl(&socket, &["status"]).await;
    assert!(!gone.ok);
    assert_eq!(
        gone.stderr,
        format!("clusterctl: no master at {}\n", socket.display())
    );
}

#[tokio::test]
async fn another_uid_is_refused() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: dropping to another uid needs root");
        return;
    }
    let mut master = MasterProcess::start("master", true);
    let mut log = Lines::new(master.child.stdout.take().expect("stdout"));
    let socket = master.socket.clone();
    log.wait_for(20, "control socket listening").await;
    let nobody = 65534;
    // Mode 0600: the kernel refuses the connection.
    let out = ctl_as(&socket, &["status"], Some(nobody)).await;
    assert!(!out.ok, "{out:?}");
    assert_eq!(
        out.stderr,
        format!("clusterctl: permission denied: {}\n", socket.display())
    );
    // Even with the file opened to all, the master checks the peer's uid.
    std::fs::set_permissions(&socket, std::os::unix::fs::PermissionsExt::from_mode(0o666))
        .expect("chmod");
    let out = ctl_as(&socket, &["stop", "--fast"], Some(nobody)).await;
    assert!(!out.ok, "{out:?}");
    assert!(
        out.stderr
            .starts_with("clusterctl: permission denied: uid 65534 (pid "),
        "{out:?}"
    );
    assert_eq!(out.stderr.lines().count(), 1, "{out:?}");
    log.wait_for(10, "refused a client: uid 65534").await;
    // The master still runs and answers its own uid.
    let status = status(&socket).await.expect("status as root");
    assert!(!status.stopping);
    // Keep reading the log so the master never blocks on a full pipe.
    let drain = tokio::spawn(async move {
        let mut rest = log.into_inner();
        tokio::io::copy(&mut rest, &mut tokio::io::sink()).await
    });
    master.stop().await;
    drain.abort();
}

#[tokio::test]
async fn reload_and_scale_under_load_fail_no_request() {
    let master = MasterProcess::start("master", false);
    let socket = master.socket.clone();
    wait_status(&socket, "web serving", |s| serving(s, "web", 2)).await;
    let load = Load::start(master.web, 4);
    load.answers(200).await;

    let out = ctl(&socket, &["reload", "web"]).await;
    assert!(out.ok, "{out:?}");
    load.answers(200).await;

    let out = ctl(&socket, &["scale", "web", "3"]).await;
    assert!(out.ok, "{out:?}");
    assert_eq!(out.stdout, "web: 3 workers wanted\n");
    wait_status(&socket, "web at 3", |s| serving(s, "web", 3)).await;
    load.answers(200).await;

    let out = ctl(&socket, &["scale", "web", "1"]).await;
    assert!(out.ok, "{out:?}");
    let scaled = wait_status(&socket, "web at 1", |s| serving(s, "web", 1)).await;
    assert!(
        dead(&scaled, "web")
            .iter()
            .filter(|w| w
                .exit
                .as_ref()
                .is_some_and(|e| e.reason.as_deref() == Some("scale-down")))
            .count()
            == 2,
        "{scaled:#?}"
    );
    load.answers(200).await;
    load.finish().await;
    master.stop().await;
}

#[tokio::test]
async fn a_plain_cluster_reloads_and_restarts_but_does_not_scale() {
    let master = MasterProcess::start("cluster", false);
    let socket = master.socket.clone();
    let first = wait_status(&socket, "2 serving", |s| serving(s, "plain", 2)).await;
    assert_eq!(first.kind, "cluster");
    assert_eq!(first.groups[0].wanted, None);
    assert!(first.workers.iter().all(|w| w.generation.is_none()));

    let scale = ctl(&socket, &["scale", "plain", "3"]).await;
    assert!(!scale.ok);
    assert_eq!(
        scale.stderr,
        "clusterctl: a plain cluster's size is its dispatch's: scale is for pm groups\n"
    );
    let other = ctl(&socket, &["reload", "web"]).await;
    assert_eq!(
        other.stderr,
        "clusterctl: unknown group \"web\": this cluster is \"plain\"\n"
    );

    let load = Load::start(master.web, 2);
    load.answers(100).await;
    let old: Vec<u32> = live(&first, "plain").iter().map(|w| w.pid).collect();
    let out = ctl(&socket, &["reload"]).await;
    assert!(out.ok, "{out:?}");
    assert_eq!(out.stdout, "reloaded: 2 workers replaced\n");
    let reloaded = wait_status(&socket, "the old workers gone", |s| {
        serving(s, "plain", 2) && live(s, "plain").iter().all(|w| !old.contains(&w.pid))
    })
    .await;
    load.answers(100).await;

    let target = live(&reloaded, "plain")[0].clone();
    let out = ctl(&socket, &["restart", &target.id.to_string()]).await;
    assert!(out.ok, "{out:?}");
    wait_status(&socket, "the restarted worker gone", |s| {
        serving(s, "plain", 2) && live(s, "plain").iter().all(|w| w.pid != target.pid)
    })
    .await;
    load.answers(100).await;
    load.finish().await;
    let last = status(&socket).await.expect("status");
    assert_eq!(restarts(&last, "plain"), 0, "{last:#?}");
    master.stop().await;
}

/// `name{labels}` in a scrape, if present.
fn sample(scrape: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    scrape
        .samples
        .iter()
        .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => f64::NAN,
        })
}

/// `GET /metrics`, parsed by a Prometheus text parser.
async fn scrape(address: SocketAddr) -> prometheus_parse::Scrape {
    let (code, body) = http_get(address, "/metrics").await.expect("GET /metrics");
    assert_eq!(code, 200, "{body}");
    let lines = body.lines().map(|l| Ok(l.to_string()));
    prometheus_parse::Scrape::parse(lines).expect("Prometheus text")
}

#[tokio::test]
async fn metrics_parse_and_count_a_panic_and_readyz_turns_not_ready_as_the_stop_begins() {
    let master = MasterProcess::start("master", false);
    let metrics = master.metrics;
    let socket = master.socket.clone();
    wait_status(&socket, "web 2 and api 1 serving", |s| {
        serving(s, "web", 2) && serving(s, "api", 1)
    })
    .await;
    let first = scrape(metrics).await;
    let web_listening = [("group", "web"), ("state", "listening")];
    assert_eq!(sample(&first, "cluster_workers", &web_listening), Some(2.0));
    assert_eq!(
        sample(&first, "cluster_ready_workers", &[("group", "api")]),
        Some(1.0)
    );
    let queue = master.web.to_string();
    assert_eq!(
        sample(&first, "cluster_accept_queue", &[("address", &queue)]),
        Some(0.0),
        "{first:#?}"
    );
    // Requests per worker, from the heartbeats: 10 requests on `api`'s only worker.
    for _ in 0..10 {
        assert_eq!(http_get(master.api, "/").await.expect("GET /").0, 200);
    }
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let now = scrape(metrics).await;
            let served = sample(&now, "cluster_worker_requests_served", &[("group", "api")]);
            if served.is_some_and(|n| n >= 10.0) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("api's 10 requests reported within 10 s");
    wait_status(&socket, "api's requests in the status", |s| {
        live(s, "api")
            .first()
            .is_some_and(|w| w.requests_served.is_some_and(|n| n >= 10))
    })
    .await;
    assert_eq!(http_get(metrics, "/healthz").await.expect("healthz").0, 200);
    assert_eq!(http_get(metrics, "/readyz").await.expect("readyz").0, 200);

    let (code, _) = http_get(master.web, "/panic").await.expect("GET /panic");
    assert_eq!(code, 500);
    let moved = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let now = scrape(metrics).await;
            let panics = sample(&now, "cluster_panics_total", &[("group", "web")]);
            let restarts = sample(
                &now,
                "cluster_restarts_total",
                &[("group", "web"), ("reason", "panic")],
            );
            if panics == Some(1.0) && restarts == Some(1.0) {
                return now;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the panic counted within 20 s");
    assert_eq!(
        sample(&moved, "cluster_panics_total", &[("group", "api")]),
        None
    );

    // A request in progress keeps its worker busy through the stop. Once connect() has
    // returned the connection is in the accept queue; an empty queue then means a worker
    // has taken it.
    let mut slow = tokio::net::TcpStream::connect(master.web)
        .await
        .expect("connect");
    slow.write_all(b"GET /slow HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .expect("send");
    tokio::time::timeout(Duration::from_secs(10), async {
        while sample(
            &scrape(metrics).await,
            "cluster_accept_queue",
            &[("address", &queue)],
        ) != Some(0.0)
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the slow request accepted");
    let slow = tokio::spawn(async move {
        let mut answer = String::new();
        slow.read_to_string(&mut answer).await.map(|_| answer)
    });
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(master.pid() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("SIGTERM");
    let not_ready = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let (code, body) = http_get(metrics, "/readyz").await.expect("readyz");
            if code == 503 {
                return body;
            }
        }
    })
    .await
    .expect("readyz turns 503");
    assert!(not_ready.contains("not ready: stopping"), "{not_ready}");
    assert!(
        !slow.is_finished(),
        "readyz must turn before the workers finish"
    );
    let answer = within(10, "the slow request", slow)
        .await
        .expect("join")
        .expect("GET /slow");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.ends_with("slow"), "{answer}");
    let mut child = master.child;
    let status = within(30, "the master to exit", child.wait())
        .await
        .expect("wait");
    assert!(status.success(), "{status:?}");
}

#[tokio::test]
async fn upgrade_hands_both_kinds_of_master_over_under_load() {
    for (role, group) in [("master", "web"), ("cluster", "plain")] {
        let mut master = MasterProcess::start(role, false);
        let socket = master.socket.clone();
        let first = wait_status(&socket, "2 serving", |s| serving(s, group, 2)).await;
        let old: Vec<u32> = live(&first, group).iter().map(|w| w.pid).collect();
        let load = Load::start(master.web, 2);
        load.answers(100).await;

        let out = ctl(&socket, &["upgrade"]).await;
        assert!(out.ok, "{role}: {out:?}");
        assert!(out.stdout.starts_with("upgraded: new master "), "{out:?}");
        let exit = within(30, "the old master to exit", master.child.wait())
            .await
            .expect("wait");
        assert!(exit.success(), "{role}: {exit:?}");
        let now = wait_status(&socket, "the new master serving", |s| {
            s.master_pid != first.master_pid && serving(s, group, 2)
        })
        .await;
        assert!(live(&now, group).iter().all(|w| !old.contains(&w.pid)));
        load.answers(100).await;
        load.finish().await;

        let out = ctl(&socket, &["stop"]).await;
        assert!(out.ok, "{out:?}");
        let gone = || cluster_tests::process_gone(now.master_pid);
        cluster_tests::eventually(30, "the new master to exit", gone).await;
        assert!(
            !socket.exists(),
            "the new master removed the control socket file"
        );
    }
}
