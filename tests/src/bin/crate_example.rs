//! cluster-core's crate example, copied verbatim below this header (the test
//! `single_binary` checks the copy): one binary that is the master or a worker.

use cluster_core::{Settings, setup_master};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    cluster_core::run(master, worker)
}

async fn master() -> Result<(), Box<dyn std::error::Error>> {
    let cluster = setup_master(Settings::new())?; // workers run this same binary
    cluster.listen(address()?)?;
    cluster.on_fork(|_, worker| eprintln!("worker {} forked", worker.pid()));
    cluster.on_exit(|_, worker, exit| eprintln!("worker {} exited with {exit}", worker.pid()));
    for _ in 0..2 {
        cluster.fork(&[])?;
    }
    cluster.run().await?; // replaces the workers that fail, until SIGTERM or SIGINT
    Ok(())
}

/// A worker: accepts on the socket it shares with the others until it must disconnect.
async fn worker() -> Result<(), Box<dyn std::error::Error>> {
    let listener = cluster_worker::listen(address()?).await?;
    let worker = cluster_worker::Worker::current().ok_or("not a worker")?;
    let _serving = worker.register_server();
    loop {
        tokio::select! {
            accepted = listener.accept() => drop(accepted?), // serve the connection here
            _ = worker.closing() => return Ok(()),
        }
    }
}

fn address() -> Result<std::net::SocketAddr, std::net::AddrParseError> {
    let port = std::env::var("PORT").unwrap_or_else(|_| "1337".into());
    format!("127.0.0.1:{port}").parse()
}
