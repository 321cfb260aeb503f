//! The seed's pm `dispatch.js`: a master with one group, `web`, of 2 workers on `PORT`
//! (default 1984), logging giveup, disconnect, fork and quit as the seed does.
//! `CONTROL_SOCKET=PATH` opens the control socket for `clusterctl`; `METRICS_ADDRESS=HOST:PORT`
//! serves Prometheus metrics and health endpoints. `HOST=0.0.0.0` listens on every interface
//! (default 127.0.0.1; a container needs 0.0.0.0, see docs/CONTAINERS.md).

use std::net::{Ipv4Addr, SocketAddr};
use std::process::ExitCode;

use cluster_core::pm::{GroupEvent, GroupOptions, Master, MasterOptions};
use examples::js_date;

#[tokio::main]
async fn main() -> ExitCode {
    examples::init_logging();
    examples::exit_code(run().await)
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let pid = std::process::id();
    let mut options = MasterOptions::new();
    if let Some(path) = std::env::var_os("PIDFILE") {
        options = options.pidfile(path);
    }
    let master = Master::with_options(options);

    master.on(move |master, event| match event {
        GroupEvent::GiveUp { group, fatals, pause } => examples::outln!(
            "[{}] [master:{pid}] giveup to restart \"{group}\" process after {fatals} times. pm will try after {} ms.",
            js_date(),
            pause.as_millis()
        ),
        GroupEvent::Disconnect { group, worker } => {
            if let Some(new) = master.fork(group) {
                examples::errln!(
                    "[{}] [master:{pid}] worker:{} disconnect! new worker:{} fork",
                    js_date(),
                    worker.pid(),
                    new.pid()
                );
            }
        }
        GroupEvent::Fork { group, worker } => examples::outln!(
            "[{}] [master:{pid}] new {group}:worker:{} fork",
            js_date(),
            worker.pid()
        ),
        GroupEvent::Quit { group, worker, exit } => examples::outln!(
            "[{}] [master:{pid}] {group}:worker:{} quit, code: {}, signal: {}",
            js_date(),
            worker.pid(),
            exit.code.map_or("null".to_string(), |c| c.to_string()),
            exit.signal.map_or("null".to_string(), |s| s.to_string()),
        ),
        _ => {}
    });

    let port: u16 = std::env::var("PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(1984);
    let host: std::net::IpAddr = match std::env::var("HOST") {
        Ok(host) => host
            .parse()
            .map_err(|e| format!("HOST={host:?} is not an IP address: {e}"))?,
        Err(_) => Ipv4Addr::LOCALHOST.into(),
    };
    let mut worker = std::env::current_exe()?;
    worker.set_file_name("pm_graceful_exit_worker");
    master.register(
        "web",
        GroupOptions::new()
            .listen(SocketAddr::from((host, port)))
            .children(2)
            .exec(worker),
    )?;

    // `CONTROL_SOCKET=PATH`: serve `clusterctl --socket PATH` (docs/CONTROL.md).
    if let Some(path) = std::env::var_os("CONTROL_SOCKET") {
        master.control_socket(path)?;
    }
    // `METRICS_ADDRESS=HOST:PORT`: `/metrics`, `/healthz`, `/readyz` there.
    if let Ok(address) = std::env::var("METRICS_ADDRESS") {
        master.metrics_address(address.parse()?)?;
    }
    master.dispatch();
    master.run().await?;
    Ok(())
}
