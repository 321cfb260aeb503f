//! `clusterctl`: drive a running master (a plain cluster or a pm master) over its control
//! socket: `status`, `reload`, `scale`, `stop`, `restart`. The protocol is
//! `docs/CONTROL.md`.

mod cli;
mod table;

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;
use cluster_control::{Client, Command, Reply};

use crate::cli::{Action, Cli};

fn main() -> ExitCode {
    run(Cli::parse())
}

/// Runs one command; every failure is one line on stderr and exit code 1.
fn run(cli: Cli) -> ExitCode {
    match execute(&cli) {
        Ok(output) => {
            // A closed stdout (`clusterctl status | head -1`) is not an error worth a panic.
            let _ = std::io::stdout().write_all(output.as_bytes());
            ExitCode::SUCCESS
        }
        Err(message) => {
            let _ = writeln!(std::io::stderr(), "clusterctl: {message}");
            ExitCode::FAILURE
        }
    }
}

/// What to print, or the one-line error.
fn execute(cli: &Cli) -> Result<String, String> {
    let path = cli.socket_path();
    let mut client = Client::connect(&path, cli.timeout()).map_err(|e| e.to_string())?;
    let command = match &cli.action {
        Action::Status { .. } => Command::Status,
        Action::Reload { group } => Command::Reload {
            group: group.clone(),
        },
        Action::Scale { group, workers } => Command::Scale {
            group: group.clone(),
            workers: *workers,
        },
        Action::Stop { fast } => Command::Stop { fast: *fast },
        Action::Upgrade => Command::Upgrade,
        Action::Restart { worker } => Command::Restart {
            group: worker.group.clone(),
            id: worker.id,
        },
    };
    let reply = client.request(command).map_err(|e| e.to_string())?;
    match (reply, &cli.action) {
        (Reply::Status(status), Action::Status { json: true }) => {
            serde_json::to_string_pretty(&status)
                .map(|text| text + "\n")
                .map_err(|e| e.to_string())
        }
        (Reply::Status(status), _) => Ok(table::render(&status)),
        (Reply::Done { message }, _) => Ok(message + "\n"),
        (other, _) => Err(format!("unexpected reply: {other:?}")),
    }
}
