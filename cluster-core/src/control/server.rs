//! The control server: accepts connections, checks each peer's uid, answers one JSON line
//! per request line.

use std::path::Path;
use std::sync::Arc;

use cluster_control::{
    Command, ErrorKind, MAX_LINE_BYTES, PROTOCOL_VERSION, Reply, Request, Response, decode_line,
    encode_line,
};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

use super::Target;
use super::socket::{ControlSocket, SocketFile};
use crate::cluster::Phase;

/// How long a refused client may take to send its request before the refusal goes out.
const REFUSAL_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// Binds `path` and serves `target` on it until the master is stopped. Must be called
/// inside a tokio runtime.
pub(crate) fn serve(path: &Path, target: Arc<dyn Target>) -> Result<(), String> {
    let socket = match crate::upgrade::take_unix(path) {
        Some(inherited) => ControlSocket::adopt(path, inherited)?,
        None => ControlSocket::bind(path)?,
    };
    let address = crate::upgrade::Address::Unix(path.to_path_buf());
    crate::upgrade::hand_over_too(&socket.listener, address);
    let listener = tokio::net::UnixListener::from_std(socket.listener)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    tracing::info!(path = %path.display(), "control socket listening");
    tokio::spawn(accept_loop(listener, socket.file, target));
    Ok(())
}

async fn accept_loop(
    listener: tokio::net::UnixListener,
    file: SocketFile,
    target: Arc<dyn Target>,
) {
    let mut phase = target.phase();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    tokio::spawn(connection(stream, target.clone()));
                }
                Err(e) => {
                    // Out of descriptors, most likely: give the master a moment.
                    tracing::warn!("control socket: accept failed: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            },
            _ = async { phase.wait_for(|p| *p == Phase::Stopped).await.map(drop) } => break,
        }
    }
    drop(file);
}

/// Why a peer may not talk to the master, if it may not: only root and the master's own
/// uid may.
fn refusal(stream: &UnixStream) -> Option<String> {
    let master_uid = nix::unistd::geteuid().as_raw();
    match stream.peer_cred() {
        Ok(cred) if cred.uid() == 0 || cred.uid() == master_uid => None,
        Ok(cred) => Some(format!(
            "uid {} (pid {}) is neither root nor the master's uid {master_uid}",
            cred.uid(),
            cred.pid().map_or("unknown".into(), |p| p.to_string())
        )),
        Err(e) => Some(format!("cannot read the peer's credentials: {e}")),
    }
}

async fn connection(stream: UnixStream, target: Arc<dyn Target>) {
    if let Some(reason) = refusal(&stream) {
        tracing::warn!("control socket: refused a client: {reason}");
        let mut reader = BufReader::new(stream);
        // Take the request off the socket first: closing a Unix socket with unread data
        // resets the peer, which would then never read the refusal.
        let mut request = Vec::new();
        let _ = tokio::time::timeout(
            REFUSAL_READ_TIMEOUT,
            (&mut reader)
                .take(MAX_LINE_BYTES as u64 + 1)
                .read_until(b'\n', &mut request),
        )
        .await;
        let refused = Response::error(
            ErrorKind::PermissionDenied,
            format!("permission denied: {reason}"),
        );
        if let Ok(line) = encode_line(&refused) {
            let _ = reader.get_mut().write_all(&line).await;
        }
        return;
    }
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    loop {
        let mut line = Vec::new();
        match (&mut reader)
            .take(MAX_LINE_BYTES as u64 + 1)
            .read_until(b'\n', &mut line)
            .await
        {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) => {
                tracing::debug!("control socket: read failed: {e}");
                return;
            }
        }
        let complete = line.ends_with(b"\n");
        let (response, stop) = answer(&line, target.as_ref()).await;
        let written = match encode_line(&response) {
            Ok(bytes) => write.write_all(&bytes).await,
            Err(e) => {
                tracing::error!("control socket: cannot encode a response: {e}");
                return;
            }
        };
        // The answer to `stop` goes out before the stop begins: the master may exit soon.
        if let Some(fast) = stop {
            target.stop(fast);
        }
        if written.is_err() || !complete {
            return;
        }
    }
}

/// The response to one line, and `Some(fast)` if a stop is to begin after it is sent.
async fn answer(line: &[u8], target: &dyn Target) -> (Response, Option<bool>) {
    let request: Request = match decode_line(line) {
        Ok(request) => request,
        Err(e) => return (Response::error(ErrorKind::BadRequest, e.to_string()), None),
    };
    if request.version != PROTOCOL_VERSION {
        let message = format!(
            "protocol version {} is not spoken here; this master speaks {PROTOCOL_VERSION}",
            request.version
        );
        return (Response::error(ErrorKind::Version, message), None);
    }
    tracing::info!(command = ?request.command, "control request");
    let outcome = match request.command {
        Command::Status => return (Response::ok(Reply::Status(target.status())), None),
        Command::Stop { fast } => {
            let mode = if fast { "fast" } else { "graceful" };
            let reply = Reply::Done {
                message: format!("{mode} stop begun"),
            };
            return (Response::ok(reply), Some(fast));
        }
        Command::Reload { group } => target.reload(group).await,
        Command::Scale { group, workers } => target.scale(&group, workers),
        Command::Restart { group, id } => target.restart(group, id).await,
        Command::Upgrade => target.upgrade().await,
        other => Err(super::error(
            ErrorKind::BadRequest,
            format!("{other:?} is not supported by this master"),
        )),
    };
    let response = match outcome {
        Ok(message) => Response::ok(Reply::Done { message }),
        Err(error) => Response {
            version: PROTOCOL_VERSION,
            ok: None,
            error: Some(error),
        },
    };
    (response, None)
}
