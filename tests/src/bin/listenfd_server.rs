//! A server that knows nothing of rust-cluster, as users of `cluster run` write them: it
//! takes its socket with the `listenfd` crate (systemd's protocol: `LISTEN_FDS`,
//! `LISTEN_PID` checked against its own pid), tells it is ready with `sd-notify` when
//! `NOTIFY_SOCKET` is set, and answers `GET` with `{"pid":N}` over keep-alive HTTP/1.1.
//!
//! A request with `Connection: close` is answered and its connection closed. On SIGTERM it
//! stops accepting, answers each further request with `Connection: close`,
//! closes a connection idle for a second, and exits 0 once all are closed (at most 10 s):
//! a drain that resets no client. Prints `listenfd_server PID listening ADDRESS` and
//! `listenfd_server PID SIGTERM`.

use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;

/// How long an idle keep-alive connection stays open once stopping.
const IDLE_GRACE: Duration = Duration::from_secs(1);

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::io::Result<()> {
    let pid = std::process::id();
    let mut fds = listenfd::ListenFd::from_env();
    let listener = fds.take_tcp_listener(0)?.ok_or_else(|| {
        std::io::Error::other("no socket at descriptor 3 (LISTEN_FDS/LISTEN_PID)")
    })?;
    listener.set_nonblocking(true)?;
    let listener = TcpListener::from_std(listener)?;
    let mut term = signal(SignalKind::terminate())?;
    println!("listenfd_server {pid} listening {}", listener.local_addr()?);
    sd_notify::notify(&[sd_notify::NotifyState::Ready])?;
    let (stopping_tx, stopping) = watch::channel(false);
    let mut connections = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    connections.spawn(serve(stream, pid, stopping.clone()));
                }
                // Another worker took it (the socket is shared and non-blocking).
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => eprintln!("accept: {e}"),
            },
            _ = term.recv() => break,
        }
    }
    println!("listenfd_server {pid} SIGTERM");
    drop(listener);
    let _ = stopping_tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(10), async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    Ok(())
}

/// Serves one connection until the client closes it, or until stopping (see the module doc).
async fn serve(stream: TcpStream, pid: u32, mut stopping: watch::Receiver<bool>) {
    let mut stream = BufReader::new(stream);
    loop {
        let mut line = String::new();
        let read = stream.read_line(&mut line);
        tokio::pin!(read);
        let read = tokio::select! {
            read = &mut read => read,
            _ = async { let _ = stopping.wait_for(|s| *s).await; } => match tokio::time::timeout(IDLE_GRACE, &mut read).await {
                Ok(read) => read,
                Err(_) => return,
            },
        };
        if !matches!(read, Ok(n) if n > 0) {
            return;
        }
        // The rest of the head (a GET has no body); the client may ask to close.
        let mut client_closes = false;
        loop {
            let mut header = String::new();
            match stream.read_line(&mut header).await {
                Ok(n) if n > 0 && header.trim_end().is_empty() => break,
                Ok(n) if n > 0 => {
                    let header = header.trim_end().to_ascii_lowercase();
                    client_closes |= header == "connection: close";
                }
                _ => return,
            }
        }
        let closing = client_closes || *stopping.borrow();
        let body = format!("{{\"pid\":{pid}}}");
        let response = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
             Connection: {}\r\n\r\n{body}",
            body.len(),
            if closing { "close" } else { "keep-alive" }
        );
        if stream
            .get_mut()
            .write_all(response.as_bytes())
            .await
            .is_err()
            || closing
        {
            return;
        }
    }
}
