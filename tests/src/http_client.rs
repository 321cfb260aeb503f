//! A small HTTP/1.1 client for tests and benchmarks: one connection kept alive between
//! requests, as load generators do.

use std::net::{IpAddr, SocketAddr};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// An HTTP/1.1 client that keeps its connection alive like a load generator does, and opens
/// a new one after a `Connection: close` answer.
pub struct KeepAliveClient {
    address: SocketAddr,
    /// The local address its connections are bound to, if any.
    source: Option<IpAddr>,
    stream: Option<BufReader<TcpStream>>,
    request_close: bool,
}

/// One answer of [`KeepAliveClient::get`].
#[derive(Debug)]
pub struct Answer {
    /// The status code.
    pub status: u16,
    /// The body.
    pub body: String,
    /// True when the server said `Connection: close`.
    pub close: bool,
}

impl Answer {
    /// The pid of the worker that answered: `"pid":N` in a JSON body (the examples' apps and
    /// the Node reference), or the whole body (the test workers).
    pub fn pid(&self) -> Option<u32> {
        match self.body.find("\"pid\":") {
            Some(at) => {
                let rest = self.body[at + "\"pid\":".len()..].trim_start();
                let end = rest
                    .find(|c: char| !c.is_ascii_digit())
                    .unwrap_or(rest.len());
                rest[..end].parse().ok()
            }
            None => self.body.trim().parse().ok(),
        }
    }
}

impl KeepAliveClient {
    /// A client for `address`; it connects at its first request.
    pub fn new(address: SocketAddr) -> Self {
        KeepAliveClient {
            address,
            source: None,
            stream: None,
            request_close: false,
        }
    }

    /// A client that asks for `Connection: close`, so every request opens a new connection
    /// (like `wrk -H "Connection: close"`).
    pub fn closing(address: SocketAddr) -> Self {
        KeepAliveClient {
            request_close: true,
            ..KeepAliveClient::new(address)
        }
    }

    /// Connects from `source` (e.g. `127.0.0.7`: any loopback address is local), as a client
    /// of that address would: sticky scheduling chooses the worker by it.
    pub fn from(mut self, source: IpAddr) -> Self {
        self.source = Some(source);
        self
    }

    async fn connect(&self) -> std::io::Result<TcpStream> {
        let Some(source) = self.source else {
            return TcpStream::connect(self.address).await;
        };
        let socket = match source {
            IpAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
            IpAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
        };
        socket.bind(SocketAddr::new(source, 0))?;
        socket.connect(self.address).await
    }

    /// Drops the connection (after a cancelled request, whose answer may still come); the
    /// next request opens a new one.
    pub fn drop_connection(&mut self) {
        self.stream = None;
    }

    /// `GET path`. Any error (refused, reset, closed before an answer) is returned and the
    /// connection dropped.
    pub async fn get(&mut self, path: &str) -> std::io::Result<Answer> {
        let result = self.exchange(path).await;
        match &result {
            Ok(answer) if !answer.close && !self.request_close => {}
            _ => self.stream = None,
        }
        result
    }

    async fn exchange(&mut self, path: &str) -> std::io::Result<Answer> {
        let stream = match self.stream.take() {
            Some(stream) => stream,
            None => BufReader::new(self.connect().await?),
        };
        let stream = self.stream.insert(stream);
        let connection = if self.request_close {
            "Connection: close\r\n"
        } else {
            ""
        };
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {}\r\n{connection}\r\n",
            self.address
        );
        stream.get_mut().write_all(request.as_bytes()).await?;
        let mut line = String::new();
        if stream.read_line(&mut line).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        let status = line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| std::io::Error::other(format!("bad status line {line:?}")))?;
        let (mut length, mut close) = (0usize, false);
        loop {
            line.clear();
            if stream.read_line(&mut line).await? == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            let header = line.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                let (name, value) = (name.trim().to_ascii_lowercase(), value.trim());
                if name == "content-length" {
                    length = value.parse().unwrap_or(0);
                } else if name == "connection" && value.eq_ignore_ascii_case("close") {
                    close = true;
                }
            }
        }
        let mut body = vec![0u8; length];
        stream.read_exact(&mut body).await?;
        Ok(Answer {
            status,
            body: String::from_utf8_lossy(&body).into_owned(),
            close,
        })
    }
}
