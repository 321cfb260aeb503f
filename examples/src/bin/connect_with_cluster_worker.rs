//! The seed's `worker.js`: the app on `PORT` (default 1337) and a second server on
//! `REST_PORT` (default 1985), both on the master's shared sockets, with graceful installed
//! on both (`KILL_TIMEOUT_MS`, default 10000).

use std::convert::Infallible;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use examples::app::{app, rest_api};
use examples::js_date;
use graceful::service_fn;

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// One thread in a cluster (the workers are the parallelism), all cores alone.
fn main() -> std::io::Result<()> {
    cluster_worker::runtime()?.block_on(serve())
}

async fn serve() -> std::io::Result<()> {
    examples::init_logging();
    let pid = std::process::id();

    let web_port = env_number("PORT", 1337) as u16;
    let web = cluster_worker::incoming(SocketAddr::from((Ipv4Addr::LOCALHOST, web_port))).await?;
    examples::outln!(
        "[{}] [worker:{pid}] web server start listen on {web_port}",
        js_date()
    );

    let rest_port = env_number("REST_PORT", 1985) as u16;
    let rest = cluster_worker::incoming(SocketAddr::from((Ipv4Addr::LOCALHOST, rest_port))).await?;
    examples::outln!(
        "[{}] [worker:{pid}] rest api start listen on {rest_port}",
        js_date()
    );

    graceful::install(
        graceful::Options::new()
            // The seed's error handler answers the message (`res.end(msg)`); a development
            // choice, kept here to reproduce its transcripts.
            .panic_message_in_body(true)
            .kill_timeout(Duration::from_millis(env_number("KILL_TIMEOUT_MS", 10_000)))
            .on_error(move |report| {
                // Custom logging goes here: send an email, call a phone…
                examples::errln!("[uncaughtException] throw error {} times", report.count);
                examples::errln!(
                    "[panicked: {} (uncaughtException throw {} times on pid:{pid})]",
                    report.message,
                    report.count
                );
            })
            .on_step(examples::print_graceful_step),
    )
    .map_err(std::io::Error::other)?;

    // Each server drains on its own; an error of either (its listener stopped accepting) is
    // the worker's, once both are done.
    let (web, rest) = tokio::join!(
        graceful::serve(
            web,
            service_fn(|req| async { Ok::<_, Infallible>(app(req).await) })
        ),
        graceful::serve(
            rest,
            service_fn(|req| async { Ok::<_, Infallible>(rest_api(req).await) })
        ),
    );
    web.and(rest)
}
