//! The seed's `worker.js`: the app on `PORT` (default 1337) and a second server on
//! `REST_PORT` (default 1985), both on the master's shared sockets.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use examples::app::{app, rest_api};
use examples::js_date;

fn port(name: &str, default: u16) -> u16 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(tracing::Level::WARN)
        .init();
    let pid = std::process::id();
    let drain = Duration::from_millis(
        std::env::var("KILL_TIMEOUT_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(10_000),
    );

    let web_port = port("PORT", 1337);
    let web = cluster_worker::listen(SocketAddr::from((Ipv4Addr::LOCALHOST, web_port))).await?;
    println!(
        "[{}] [worker:{pid}] web server start listen on {web_port}",
        js_date()
    );

    let rest_port = port("REST_PORT", 1985);
    let rest = cluster_worker::listen(SocketAddr::from((Ipv4Addr::LOCALHOST, rest_port))).await?;
    println!(
        "[{}] [worker:{pid}] rest api start listen on {rest_port}",
        js_date()
    );

    tokio::join!(
        graceful::serve_http(web, app, drain),
        graceful::serve_http(rest, rest_api, drain),
    );
    Ok(())
}
