//! A blocking client: connect to a master's control socket, send requests, read replies.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::framing::{FramingError, MAX_LINE_BYTES, decode_line, encode_line};
use crate::protocol::{Command, ControlError, Reply, Request, Response};

/// Why a request got no reply, or got a refusal.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// Nothing listens at the path (no file, or a stale socket).
    #[error("no master at {}", .0.display())]
    NoMaster(PathBuf),
    /// The socket's permissions refuse this user.
    #[error("permission denied: {}", .0.display())]
    PermissionDenied(PathBuf),
    /// Reading or writing the socket failed.
    #[error("control socket {}: {source}", .path.display())]
    Io {
        /// The socket.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
    /// The master closed the connection without answering.
    #[error("the master at {} closed the connection without answering", .0.display())]
    Closed(PathBuf),
    /// What came back is not a response.
    #[error("bad response: {0}")]
    Framing(#[from] FramingError),
    /// The master refused or failed the request.
    #[error("{0}")]
    Refused(ControlError),
}

/// A connection to a master's control socket.
#[derive(Debug)]
pub struct Client {
    path: PathBuf,
    reader: BufReader<UnixStream>,
}

impl Client {
    /// Connects to the master listening at `path`; every reply is awaited at most `timeout`.
    pub fn connect(path: &Path, timeout: Duration) -> Result<Client, ClientError> {
        let stream = UnixStream::connect(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => {
                ClientError::NoMaster(path.to_path_buf())
            }
            std::io::ErrorKind::PermissionDenied => {
                ClientError::PermissionDenied(path.to_path_buf())
            }
            _ => ClientError::Io {
                path: path.to_path_buf(),
                source: e,
            },
        })?;
        let io = |source| ClientError::Io {
            path: path.to_path_buf(),
            source,
        };
        stream.set_read_timeout(Some(timeout)).map_err(io)?;
        stream.set_write_timeout(Some(timeout)).map_err(io)?;
        Ok(Client {
            path: path.to_path_buf(),
            reader: BufReader::new(stream),
        })
    }

    /// Sends `command` and waits for its reply; a refusal is [`ClientError::Refused`].
    pub fn request(&mut self, command: Command) -> Result<Reply, ClientError> {
        let line = encode_line(&Request::new(command))?;
        self.reader
            .get_mut()
            .write_all(&line)
            .map_err(|e| self.io_error(e))?;
        let mut answer = Vec::new();
        let read = (&mut self.reader)
            .take(MAX_LINE_BYTES as u64 + 1)
            .read_until(b'\n', &mut answer)
            .map_err(|e| self.io_error(e))?;
        if read == 0 {
            return Err(ClientError::Closed(self.path.clone()));
        }
        let response: Response = decode_line(&answer)?;
        response.into_result().map_err(ClientError::Refused)
    }

    fn io_error(&self, source: std::io::Error) -> ClientError {
        match source.kind() {
            std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset => {
                ClientError::Closed(self.path.clone())
            }
            _ => ClientError::Io {
                path: self.path.clone(),
                source,
            },
        }
    }
}
