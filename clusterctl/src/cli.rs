//! The command line.

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use clap::{Parser, Subcommand};

/// Drive a running cluster master over its control socket.
#[derive(Debug, Parser)]
#[command(name = "clusterctl", version)]
pub(crate) struct Cli {
    /// The master's control socket.
    #[arg(long, short, env = "CLUSTERCTL_SOCKET", global = true)]
    socket: Option<PathBuf>,
    /// The master's name: its socket is at the default place for that name
    /// ($XDG_RUNTIME_DIR/NAME.control.sock, else /run/NAME.control.sock).
    #[arg(
        long,
        short,
        env = "CLUSTERCTL_NAME",
        default_value = "cluster",
        global = true
    )]
    name: String,
    /// How long to wait for the master's answer, in seconds (a reload answers when done).
    #[arg(long, default_value_t = 120, global = true)]
    timeout: u64,
    #[command(subcommand)]
    pub(crate) action: Action,
}

impl Cli {
    /// `--socket`, or the default place for `--name`.
    pub(crate) fn socket_path(&self) -> PathBuf {
        self.socket
            .clone()
            .unwrap_or_else(|| cluster_control::default_socket_path(&self.name))
    }

    pub(crate) fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout.max(1))
    }
}

/// What to ask the master.
#[derive(Debug, Subcommand)]
pub(crate) enum Action {
    /// Every worker (and the latest exits) as a table.
    Status {
        /// The status as JSON, for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Replace every worker of GROUP (all groups if left out) without downtime; returns when
    /// the reload has ended.
    Reload {
        /// The group.
        group: Option<String>,
    },
    /// Run N workers in GROUP (pm masters).
    Scale {
        /// The group.
        group: String,
        /// How many workers.
        workers: usize,
    },
    /// Stop the master: every worker drains (or, with --fast, is killed).
    Stop {
        /// SIGKILL the workers instead of draining them.
        #[arg(long)]
        fast: bool,
    },
    /// Hot upgrade of the master (as SIGUSR2): a new master from the same program takes over
    /// the sockets; returns once it serves (the old one then retires) or has failed.
    Upgrade,
    /// Replace one worker: ID, or GROUP:ID when ids repeat across groups.
    Restart {
        /// The worker.
        worker: WorkerRef,
    },
}

/// `ID` or `GROUP:ID`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct WorkerRef {
    pub(crate) group: Option<String>,
    pub(crate) id: u32,
}

impl FromStr for WorkerRef {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (group, id) = match s.rsplit_once(':') {
            Some((group, id)) if !group.is_empty() => (Some(group.to_string()), id),
            Some(_) => return Err(format!("{s:?}: the group before ':' is empty")),
            None => (None, s),
        };
        let id = id
            .parse()
            .map_err(|_| format!("{s:?} is not a worker: say ID or GROUP:ID"))?;
        Ok(WorkerRef { group, id })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_worker_is_an_id_or_a_group_and_an_id() {
        assert_eq!(
            "3".parse::<WorkerRef>(),
            Ok(WorkerRef { group: None, id: 3 })
        );
        assert_eq!(
            "web:12".parse::<WorkerRef>(),
            Ok(WorkerRef {
                group: Some("web".into()),
                id: 12
            })
        );
        assert!("web".parse::<WorkerRef>().is_err());
        assert!(":3".parse::<WorkerRef>().is_err());
    }

    #[test]
    fn the_command_line_parses() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
        let cli = Cli::try_parse_from(["clusterctl", "scale", "web", "3", "--socket", "/x"])
            .expect("parses");
        assert_eq!(cli.socket_path(), PathBuf::from("/x"));
        assert!(matches!(cli.action, Action::Scale { workers: 3, .. }));
    }
}
