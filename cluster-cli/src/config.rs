//! The configuration file (TOML): several groups, each a program with its sockets, size,
//! readiness, restart policy and limits. `docs/CLUSTER_CLI.md` documents every key.
//!
//! Every error names the file, the line, the column and the key:
//! `cluster.toml:7:10: group.web.listen: "127.0.0.1" is neither an IP address with a port …`.
//! Unknown keys are errors (`deny_unknown_fields`), so a misspelt key never goes unnoticed.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use cluster_core::Stdio;
use cluster_core::foreign::Readiness;
use cluster_core::pm::MIN_RESTART_DELAY;
use serde::Deserialize;
use toml::Spanned;

use crate::plan::{GroupPlan, Plan, parse_listen, resolve_group, resolve_program, resolve_user};

/// A configuration error: where, which key, what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    pub line: usize,
    pub column: usize,
    pub key: String,
    pub message: String,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}: {}",
            self.file.display(),
            self.line,
            self.column,
            self.key,
            self.message
        )
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    pidfile: Option<PathBuf>,
    control_socket: Option<PathBuf>,
    #[serde(default)]
    group: BTreeMap<String, Spanned<GroupFile>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GroupFile {
    exec: Spanned<String>,
    #[serde(default)]
    args: Vec<String>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    cwd: Option<Spanned<PathBuf>>,
    instances: Option<Spanned<usize>>,
    #[serde(default)]
    listen: Vec<Spanned<String>>,
    scheduling: Option<Spanned<String>>,
    ready: Option<Spanned<String>>,
    ready_after_ms: Option<Spanned<u64>>,
    ready_timeout_ms: Option<Spanned<u64>>,
    stop_timeout_ms: Option<Spanned<u64>>,
    watchdog_ms: Option<Spanned<u64>>,
    max_memory_mb: Option<u64>,
    max_age_s: Option<Spanned<u64>>,
    user: Option<Spanned<String>>,
    group: Option<Spanned<String>>,
    output: Option<Spanned<String>>,
    #[serde(default)]
    restart: RestartFile,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RestartFile {
    min_uptime_ms: Option<Spanned<u64>>,
    max_restarts: Option<Spanned<usize>>,
    window_s: Option<Spanned<u64>>,
    restart_delay_ms: Option<Spanned<u64>>,
    max_restart_delay_ms: Option<Spanned<u64>>,
}

/// Reads and checks `path`: every group resolved (program found, addresses parsed, users
/// known), nothing started.
pub fn load(path: &Path) -> Result<Plan, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        file: path.to_path_buf(),
        line: 0,
        column: 0,
        key: "(file)".into(),
        message: e.to_string(),
    })?;
    let base = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_path_buf();
    parse(path, &text, &base)
}

/// Parses `text` (read from `file`); relative paths in it are relative to `base`.
pub fn parse(file: &Path, text: &str, base: &Path) -> Result<Plan, ConfigError> {
    let at = |span: Option<Range<usize>>, key: String, message: String| {
        let (line, column) = span.map_or((1, 1), |s| line_column(text, s.start));
        ConfigError {
            file: file.to_path_buf(),
            line,
            column,
            key,
            message,
        }
    };
    let parsed: File = toml::from_str(text).map_err(|e| {
        let key = e
            .span()
            .map_or_else(|| "(file)".to_string(), |s| key_at(text, s.start));
        at(e.span(), key, e.message().trim().to_string())
    })?;
    if parsed.group.is_empty() {
        return Err(at(
            None,
            "group".into(),
            "no group: add at least one [group.NAME] table".into(),
        ));
    }
    let mut plan = Plan {
        groups: Vec::new(),
        pidfile: parsed.pidfile.map(|p| base.join(p)),
        control_socket: parsed.control_socket.map(|p| base.join(p)),
    };
    let mut addresses: BTreeMap<String, String> = BTreeMap::new();
    for (name, group) in parsed.group {
        let span = group.span();
        let g = group.into_inner();
        let key = |k: &str| format!("group.{name}.{k}");
        let err = |s: Range<usize>, k: &str, m: String| at(Some(s), key(k), m);
        let fine_name = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
        if !fine_name {
            return Err(at(
                Some(span),
                format!("group.{name}"),
                "a group name is letters, digits, '-', '_' or '.'".into(),
            ));
        }
        let program = Path::new(g.exec.get_ref());
        let program = if program.to_string_lossy().contains('/') {
            base.join(program)
        } else {
            program.to_path_buf()
        };
        let exec = resolve_program(&program).map_err(|m| err(g.exec.span(), "exec", m))?;
        let mut plan_group = GroupPlan::new(name.clone(), exec);
        plan_group.args = g.args.iter().map(Into::into).collect();
        plan_group.env = g.env.into_iter().collect();
        if let Some(cwd) = &g.cwd {
            let dir = base.join(cwd.get_ref());
            if !dir.is_dir() {
                return Err(err(
                    cwd.span(),
                    "cwd",
                    format!("{}: not a directory", dir.display()),
                ));
            }
            plan_group.cwd = Some(dir);
        }
        if let Some(instances) = &g.instances {
            if !(1..=4096).contains(instances.get_ref()) {
                return Err(err(
                    instances.span(),
                    "instances",
                    format!("{} is outside 1..=4096", instances.get_ref()),
                ));
            }
            plan_group.instances = *instances.get_ref();
        }
        for spec in &g.listen {
            let (fd_name, address) =
                parse_listen(spec.get_ref(), &name).map_err(|m| err(spec.span(), "listen", m))?;
            // Port 0 asks for any free port: two of them are two sockets.
            let any_port = address
                .parse::<std::net::SocketAddr>()
                .is_ok_and(|a| a.port() == 0);
            let taken = if any_port {
                None
            } else {
                addresses.insert(address.clone(), name.clone())
            };
            if let Some(other) = taken {
                return Err(err(
                    spec.span(),
                    "listen",
                    format!("{address} is already group {other}'s"),
                ));
            }
            plan_group.listen.push((fd_name, address));
        }
        if let Some(scheduling) = &g.scheduling {
            if scheduling.get_ref() != "shared" {
                return Err(err(
                    scheduling.span(),
                    "scheduling",
                    format!(
                        "{:?}: only \"shared\" works for programs that accept on the sockets \
                         they are given",
                        scheduling.get_ref()
                    ),
                ));
            }
        }
        plan_group.ready = match (&g.ready, &g.ready_after_ms) {
            (Some(_), Some(after)) => {
                return Err(err(
                    after.span(),
                    "ready_after_ms",
                    "give either ready = \"notify\" or ready_after_ms, not both".into(),
                ));
            }
            (Some(ready), None) if ready.get_ref() == "notify" => Readiness::Notify,
            (Some(ready), None) => {
                return Err(err(
                    ready.span(),
                    "ready",
                    format!(
                        "{:?}: the only value is \"notify\" (else ready_after_ms = N)",
                        ready.get_ref()
                    ),
                ));
            }
            (None, Some(after)) => Readiness::After(Duration::from_millis(*after.get_ref())),
            (None, None) => plan_group.ready,
        };
        if let Some(ms) = &g.ready_timeout_ms {
            plan_group.ready_timeout =
                positive_ms(ms).map_err(|m| err(ms.span(), "ready_timeout_ms", m))?;
        }
        if let Some(ms) = &g.stop_timeout_ms {
            plan_group.stop_timeout =
                positive_ms(ms).map_err(|m| err(ms.span(), "stop_timeout_ms", m))?;
        }
        if let Some(ms) = &g.watchdog_ms {
            let timeout = Duration::from_millis(*ms.get_ref());
            if timeout < Duration::from_secs(1) {
                return Err(err(ms.span(), "watchdog_ms", "at least 1000".into()));
            }
            plan_group.watchdog = Some(timeout);
        }
        plan_group.max_memory = g.max_memory_mb.map(|mb| mb * 1024 * 1024);
        if let Some(s) = &g.max_age_s {
            plan_group.max_age = Some(Duration::from_secs(*s.get_ref()));
        }
        if let Some(user) = &g.user {
            plan_group.uid =
                Some(resolve_user(user.get_ref()).map_err(|m| err(user.span(), "user", m))?);
        }
        if let Some(group) = &g.group {
            plan_group.gid =
                Some(resolve_group(group.get_ref()).map_err(|m| err(group.span(), "group", m))?);
        }
        let euid = nix::unistd::geteuid().as_raw();
        if euid != 0 {
            if let (Some(user), Some(uid)) = (&g.user, plan_group.uid) {
                if uid != euid {
                    return Err(err(
                        user.span(),
                        "user",
                        format!("switching to uid {uid} needs cluster to run as root"),
                    ));
                }
            }
        }
        if let Some(output) = &g.output {
            plan_group.stdio = match output.get_ref().as_str() {
                "forward" => Stdio::Forward,
                "inherit" => Stdio::Inherit,
                "null" => Stdio::Null,
                other => {
                    return Err(err(
                        output.span(),
                        "output",
                        format!("{other:?}: one of \"forward\", \"inherit\", \"null\""),
                    ));
                }
            };
        }
        let r = &g.restart;
        if let Some(ms) = &r.min_uptime_ms {
            let min = Duration::from_millis(*ms.get_ref());
            if min < MIN_RESTART_DELAY {
                return Err(err(
                    ms.span(),
                    "restart.min_uptime_ms",
                    format!("at least {}", MIN_RESTART_DELAY.as_millis()),
                ));
            }
            plan_group.policy.min_uptime = min;
        }
        if let Some(n) = &r.max_restarts {
            if *n.get_ref() == 0 {
                return Err(err(n.span(), "restart.max_restarts", "at least 1".into()));
            }
            plan_group.policy.max_fatal_restart = *n.get_ref();
        }
        if let Some(s) = &r.window_s {
            if *s.get_ref() == 0 {
                return Err(err(s.span(), "restart.window_s", "at least 1".into()));
            }
            plan_group.policy.pause_after_fatal = Duration::from_secs(*s.get_ref());
        }
        if let Some(ms) = &r.restart_delay_ms {
            plan_group.policy.restart_delay = Duration::from_millis(*ms.get_ref());
        }
        if let Some(ms) = &r.max_restart_delay_ms {
            plan_group.policy.max_restart_delay = Duration::from_millis(*ms.get_ref());
        }
        if let Err(e) = plan_group.policy.validate() {
            return Err(at(Some(span), key("restart"), e.to_string()));
        }
        plan.groups.push(plan_group);
    }
    Ok(plan)
}

fn positive_ms(ms: &Spanned<u64>) -> Result<Duration, String> {
    match *ms.get_ref() {
        0 => Err("must be more than 0".into()),
        n => Ok(Duration::from_millis(n)),
    }
}

/// 1-based line and column (in characters) of byte `offset`.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// The dotted key at byte `offset`: the key of its line (`key = …`) under the nearest table
/// header above (`[group.web]`), or that header itself.
fn key_at(text: &str, offset: usize) -> String {
    let offset = offset.min(text.len());
    let line_start = text[..offset].rfind('\n').map_or(0, |i| i + 1);
    let line = text[line_start..].lines().next().unwrap_or("").trim();
    let header = |l: &str| {
        let l = l.trim();
        (l.starts_with('[')).then(|| l.trim_matches(|c| c == '[' || c == ']').trim().to_string())
    };
    if let Some(table) = header(line) {
        return table;
    }
    let key = line
        .split('=')
        .next()
        .unwrap_or("")
        .trim()
        .trim_matches('"');
    let table = text[..line_start].lines().rev().find_map(header);
    match (table, key.is_empty()) {
        (Some(table), false) => format!("{table}.{key}"),
        (Some(table), true) => table,
        (None, false) => key.to_string(),
        (None, true) => "(file)".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(text: &str) -> Result<Plan, ConfigError> {
        parse(Path::new("test.toml"), text, Path::new("/"))
    }

    #[test]
    fn a_complete_group() {
        let plan = parse_str(
            r#"
pidfile = "/run/x.pid"
[group.web]
exec = "sh"
args = ["-c", "exit 0"]
env = { A = "1" }
instances = 3
listen = ["127.0.0.1:0", "admin=unix:/tmp/x.sock"]
ready = "notify"
stop_timeout_ms = 5000
[group.web.restart]
min_uptime_ms = 2000
max_restarts = 3
"#,
        )
        .unwrap();
        let web = &plan.groups[0];
        assert_eq!(web.instances, 3);
        assert_eq!(web.listen[1], ("admin".into(), "unix:/tmp/x.sock".into()));
        assert_eq!(web.listen[0].0, "web");
        assert_eq!(web.ready, Readiness::Notify);
        assert_eq!(web.policy.max_fatal_restart, 3);
        assert_eq!(plan.pidfile, Some(PathBuf::from("/run/x.pid")));
    }

    #[test]
    fn unknown_key_names_line_and_key() {
        let e = parse_str("[group.web]\nexec = \"sh\"\ninstnces = 2\n").unwrap_err();
        assert_eq!((e.line, e.column), (3, 1), "{e}");
        assert_eq!(e.key, "group.web.instnces");
        assert!(e.message.contains("unknown field"), "{e}");
    }

    #[test]
    fn wrong_type_names_the_key() {
        let e = parse_str("[group.web]\nexec = \"sh\"\ninstances = \"two\"\n").unwrap_err();
        assert_eq!(e.line, 3, "{e}");
        assert_eq!(e.key, "group.web.instances");
    }

    #[test]
    fn bad_values_name_line_and_key() {
        let e = parse_str("[group.web]\nexec = \"sh\"\nlisten = [\"127.0.0.1\"]\n").unwrap_err();
        assert_eq!((e.line, e.key.as_str()), (3, "group.web.listen"), "{e}");
        let e = parse_str("[group.web]\nexec = \"sh\"\nuser = \"no-such-user-x\"\n").unwrap_err();
        assert_eq!((e.line, e.key.as_str()), (3, "group.web.user"), "{e}");
        assert!(e.message.contains("unknown user"));
        let e = parse_str("[group.web]\nexec = \"no-such-program-x\"\n").unwrap_err();
        assert_eq!(
            (e.line, e.column, e.key.as_str()),
            (2, 8, "group.web.exec"),
            "{e}"
        );
        let e = parse_str("[group.a]\nexec = \"sh\"\nlisten = [\"127.0.0.1:1\"]\n[group.b]\nexec = \"sh\"\nlisten = [\"127.0.0.1:1\"]\n").unwrap_err();
        assert_eq!((e.line, e.key.as_str()), (6, "group.b.listen"), "{e}");
        assert!(parse_str("").unwrap_err().message.contains("no group"));
    }
}
