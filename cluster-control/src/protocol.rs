//! The messages: a [`Request`] carries one [`Command`]; a [`Response`] carries a [`Reply`] or
//! a [`ControlError`].

use serde::{Deserialize, Serialize};

/// The protocol version this crate speaks. A master answers a request of another version
/// with [`ErrorKind::Version`].
pub const PROTOCOL_VERSION: u32 = 1;

/// One request: `{"version":1,"command":"status"}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Request {
    /// The client's [`PROTOCOL_VERSION`].
    pub version: u32,
    /// What to do.
    #[serde(flatten)]
    pub command: Command,
}

impl Request {
    /// `command` at this crate's version.
    pub fn new(command: Command) -> Self {
        Request {
            version: PROTOCOL_VERSION,
            command,
        }
    }
}

/// What a client can ask a master to do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Command {
    /// Every worker, the recently exited ones, every group.
    Status,
    /// Replace the workers of `group` (every group if `None`) without downtime; answered
    /// when the reload has ended.
    Reload {
        /// The group; `None` for all (and for a plain cluster).
        #[serde(default)]
        group: Option<String>,
    },
    /// Run `workers` workers in `group` (pm masters only).
    Scale {
        /// The group.
        group: String,
        /// How many workers it runs from now on.
        workers: usize,
    },
    /// Stop the master: graceful (drain) or fast (SIGKILL every worker). Answered as the stop
    /// begins.
    Stop {
        /// Kill instead of draining.
        #[serde(default)]
        fast: bool,
    },
    /// Hot upgrade of the master (as SIGUSR2): a new master from the same program takes
    /// over the listening sockets; answered once it is ready (this master then retires) or
    /// has failed (this master keeps serving).
    Upgrade,
    /// Replace one worker: its replacement is started, the worker drains.
    Restart {
        /// The worker's group; may be left out when the id is unique.
        #[serde(default)]
        group: Option<String>,
        /// The worker's id (ids count per group).
        id: u32,
    },
}

/// One response: `{"version":1,"ok":{…}}` or `{"version":1,"error":{"kind":…,"message":…}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Response {
    /// The master's [`PROTOCOL_VERSION`].
    pub version: u32,
    /// The answer, when the request succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ok: Option<Reply>,
    /// Why it failed, otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ControlError>,
}

impl Response {
    /// A success.
    pub fn ok(reply: Reply) -> Self {
        Response {
            version: PROTOCOL_VERSION,
            ok: Some(reply),
            error: None,
        }
    }

    /// A failure.
    pub fn error(kind: ErrorKind, message: impl Into<String>) -> Self {
        Response {
            version: PROTOCOL_VERSION,
            ok: None,
            error: Some(ControlError {
                kind,
                message: message.into(),
            }),
        }
    }

    /// The reply, or the error (a response with neither is a [`ErrorKind::BadRequest`]).
    pub fn into_result(self) -> Result<Reply, ControlError> {
        match (self.ok, self.error) {
            (_, Some(error)) => Err(error),
            (Some(reply), None) => Ok(reply),
            (None, None) => Err(ControlError {
                kind: ErrorKind::BadRequest,
                message: "the response holds neither a reply nor an error".into(),
            }),
        }
    }
}

/// A successful answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Reply {
    /// The answer to [`Command::Status`].
    Status(StatusReport),
    /// The command was carried out (or, for `stop`, has begun).
    Done {
        /// What happened, one line for a person.
        message: String,
    },
}

/// What the master runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusReport {
    /// The master's pid.
    pub master_pid: u32,
    /// `cluster` (a plain cluster) or `pm` (a supervisor of groups).
    pub kind: String,
    /// True once the master is stopping.
    #[serde(default)]
    pub stopping: bool,
    /// Every group (one, named `-` or the settings' name, for a plain cluster).
    pub groups: Vec<GroupStatus>,
    /// The live workers, then the most recently exited ones (state `dead`), by group and id.
    pub workers: Vec<WorkerStatus>,
}

/// One group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupStatus {
    /// Its name.
    pub name: String,
    /// How many workers it should run (pm); `None` for a plain cluster, whose size is its
    /// dispatch's.
    #[serde(default)]
    pub wanted: Option<usize>,
    /// How many of its workers exited without being asked to (crash, panic, kill) since the
    /// master started.
    pub restarts: u64,
}

/// One worker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerStatus {
    /// Its group (`-` for an unnamed plain cluster).
    pub group: String,
    /// Its id (per group).
    pub id: u32,
    /// Its pid.
    pub pid: u32,
    /// `starting`, `online`, `listening`, `disconnecting`, `disconnected` or `dead`.
    pub state: String,
    /// Its generation (pm: each reload starts a new one); `None` for a plain cluster.
    #[serde(default)]
    pub generation: Option<u64>,
    /// It serves: it called `ready()` or (when readiness is not awaited) it listens.
    pub ready: bool,
    /// Milliseconds since it was forked (for a dead worker: how long it lived).
    pub uptime_ms: u64,
    /// Resident memory, bytes, read from `/proc` when asked.
    #[serde(default)]
    pub rss_bytes: Option<u64>,
    /// CPU time over its life, in percent of one core.
    #[serde(default)]
    pub cpu_percent: Option<f64>,
    /// Connections its servers hold, as of its last heartbeat (servers that report them:
    /// `graceful::serve`).
    #[serde(default)]
    pub open_connections: Option<u64>,
    /// Requests it has served (connections, if its server counts no requests), as of its
    /// last heartbeat.
    #[serde(default)]
    pub requests_served: Option<u64>,
    /// How it ended, once it has; or why it is leaving.
    #[serde(default)]
    pub exit: Option<ExitInfo>,
}

/// How a worker ended or why it leaves.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ExitInfo {
    /// Its exit code, when it exited by itself.
    #[serde(default)]
    pub code: Option<i32>,
    /// The signal that killed it, e.g. `SIGKILL`.
    #[serde(default)]
    pub signal: Option<String>,
    /// Why, when the master knows: `panic`, `scale-down`, `reload`, `stop`, …
    #[serde(default)]
    pub reason: Option<String>,
    /// The panic message, for `panic`.
    #[serde(default)]
    pub message: Option<String>,
    /// Where it panicked, `file:line:column`, for `panic`.
    #[serde(default)]
    pub location: Option<String>,
}

impl std::fmt::Display for ExitInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut parts = Vec::new();
        if let Some(code) = self.code {
            parts.push(format!("code {code}"));
        }
        if let Some(signal) = &self.signal {
            parts.push(signal.clone());
        }
        match (&self.reason, &self.message, &self.location) {
            (Some(reason), Some(message), Some(location)) => {
                parts.push(format!("{reason} '{message}' at {location}"))
            }
            (Some(reason), Some(message), None) => parts.push(format!("{reason} '{message}'")),
            (Some(reason), _, _) => parts.push(reason.clone()),
            _ => {}
        }
        f.write_str(&parts.join(", "))
    }
}

/// A failed request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct ControlError {
    /// What kind of failure.
    pub kind: ErrorKind,
    /// One line for a person, naming what went wrong.
    pub message: String,
}

/// What kind of failure a [`ControlError`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorKind {
    /// The peer's uid is neither the master's nor root.
    PermissionDenied,
    /// The request's version is not one the master speaks.
    Version,
    /// The line is not a request.
    BadRequest,
    /// No group by that name.
    UnknownGroup,
    /// No live worker by that id.
    UnknownWorker,
    /// This master cannot do that (e.g. `scale` on a plain cluster).
    Unsupported,
    /// Something else is under way (a reload already runs).
    Busy,
    /// The master is stopping.
    Stopping,
    /// The command was tried and failed (a reload whose new workers did not get ready).
    Failed,
    /// A kind this client does not know (sent by a newer master).
    #[serde(other)]
    Other,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{decode_line, encode_line};

    #[test]
    fn requests_are_flat_json_lines() {
        let line = encode_line(&Request::new(Command::Scale {
            group: "web".into(),
            workers: 3,
        }))
        .expect("encode");
        assert_eq!(
            line,
            b"{\"version\":1,\"command\":\"scale\",\"group\":\"web\",\"workers\":3}\n"
        );
        let back: Request = decode_line(&line).expect("decode");
        assert_eq!(
            back.command,
            Command::Scale {
                group: "web".into(),
                workers: 3
            }
        );
        let reload: Request =
            decode_line(b"{\"version\":1,\"command\":\"reload\"}").expect("reload");
        assert_eq!(reload.command, Command::Reload { group: None });
    }

    #[test]
    fn unknown_fields_are_ignored_and_unknown_error_kinds_are_other() {
        let request: Request =
            decode_line(b"{\"version\":1,\"command\":\"status\",\"verbose\":true}")
                .expect("status");
        assert_eq!(request.command, Command::Status);
        let response: Response =
            decode_line(b"{\"version\":2,\"error\":{\"kind\":\"quota\",\"message\":\"no\"}}")
                .expect("response");
        let error = response.into_result().expect_err("an error");
        assert_eq!(error.kind, ErrorKind::Other);
        assert_eq!(error.message, "no");
    }

    #[test]
    fn a_status_survives_the_round_trip() {
        let status = Reply::Status(StatusReport {
            master_pid: 7,
            kind: "pm".into(),
            stopping: false,
            groups: vec![GroupStatus {
                name: "web".into(),
                wanted: Some(2),
                restarts: 1,
            }],
            workers: vec![WorkerStatus {
                group: "web".into(),
                id: 1,
                pid: 42,
                state: "dead".into(),
                generation: Some(0),
                ready: false,
                uptime_ms: 1500,
                rss_bytes: None,
                cpu_percent: None,
                open_connections: Some(3),
                requests_served: Some(1200),
                exit: Some(ExitInfo {
                    code: Some(0),
                    reason: Some("panic".into()),
                    message: Some("boom".into()),
                    location: Some("src/app.rs:3:5".into()),
                    ..ExitInfo::default()
                }),
            }],
        });
        let line = encode_line(&Response::ok(status.clone())).expect("encode");
        let back: Response = decode_line(&line).expect("decode");
        assert_eq!(back.into_result().expect("ok"), status);
    }

    #[test]
    fn exit_info_reads_as_one_line() {
        let panic = ExitInfo {
            code: Some(0),
            reason: Some("panic".into()),
            message: Some("boom".into()),
            location: Some("src/app.rs:3:5".into()),
            ..ExitInfo::default()
        };
        assert_eq!(panic.to_string(), "code 0, panic 'boom' at src/app.rs:3:5");
        let killed = ExitInfo {
            signal: Some("SIGKILL".into()),
            ..ExitInfo::default()
        };
        assert_eq!(killed.to_string(), "SIGKILL");
    }

    #[test]
    fn an_overlong_line_is_refused() {
        let line = vec![b' '; crate::MAX_LINE_BYTES + 1];
        assert!(matches!(
            decode_line::<Request>(&line),
            Err(crate::FramingError::TooLong(_))
        ));
    }
}
