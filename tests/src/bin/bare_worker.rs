//! A server as a newcomer writes it: graceful installed with its defaults and no `tracing`
//! subscriber at all. Run alone (no master): it listens on 127.0.0.1:0 and prints
//! `listening on PORT`. `GET /panic` panics in the handler; `GET /break-listener` shuts the
//! listening socket down (as a stray `shutdown(2)` would), so `graceful::serve` returns the
//! listener's error and `main` returns it (exit code 1, the error on stderr). Every other
//! path answers `ok`.

use std::os::fd::AsRawFd;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response};

#[tokio::main]
async fn main() -> std::io::Result<()> {
    graceful::install(graceful::Options::new()).map_err(std::io::Error::other)?;
    let listener = cluster_worker::listen("127.0.0.1:0".parse().expect("address")).await?;
    let port = listener.local_addr()?.port();
    // The same socket, to break it from a request.
    let socket = Arc::new(socket2::SockRef::from(&listener).try_clone()?);
    println!("listening on {port}");
    let service = graceful::service_fn(move |request: Request<hyper::body::Incoming>| {
        let socket = socket.clone();
        async move {
            match request.uri().path() {
                "/panic" => panic!("the newcomer's bug"),
                "/break-listener" => {
                    eprintln!("shutting down listener fd {}", socket.as_raw_fd());
                    socket.shutdown(std::net::Shutdown::Both)?;
                }
                _ => {}
            }
            Ok::<_, std::io::Error>(Response::new(Full::new(Bytes::from_static(b"ok\n"))))
        }
    });
    graceful::serve(listener, service).await
}
