//! What to run, however it was given (flags or a file), and running it: one pm group of
//! foreign workers per [`GroupPlan`] under one [`Master`].

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use cluster_core::foreign::{Foreign, Readiness};
use cluster_core::pm::{GroupOptions, Master, MasterOptions, RestartPolicy};
use cluster_core::{Settings, Stdio};

/// The master's own options.
#[derive(Debug, Default, Clone)]
pub struct Plan {
    pub groups: Vec<GroupPlan>,
    pub pidfile: Option<PathBuf>,
    pub control_socket: Option<PathBuf>,
}

/// One group of workers running one program.
#[derive(Debug, Clone)]
pub struct GroupPlan {
    pub name: String,
    /// Resolved: a path to an executable file.
    pub exec: PathBuf,
    pub args: Vec<OsString>,
    pub env: Vec<(String, String)>,
    pub cwd: Option<PathBuf>,
    pub instances: usize,
    /// `(LISTEN_FDNAMES name, address)`, in descriptor order.
    pub listen: Vec<(String, String)>,
    pub ready: Readiness,
    pub ready_timeout: Duration,
    pub stop_timeout: Duration,
    pub policy: RestartPolicy,
    pub watchdog: Option<Duration>,
    pub max_memory: Option<u64>,
    pub max_age: Option<Duration>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub stdio: Stdio,
}

impl GroupPlan {
    /// A group with the defaults: one worker per CPU, ready 1 s after start, 30 s to stop.
    pub fn new(name: String, exec: PathBuf) -> Self {
        GroupPlan {
            name,
            exec,
            args: Vec::new(),
            env: Vec::new(),
            cwd: None,
            instances: std::thread::available_parallelism().map_or(1, |n| n.get()),
            listen: Vec::new(),
            ready: Readiness::After(Duration::from_secs(1)),
            ready_timeout: Duration::from_secs(30),
            stop_timeout: Duration::from_secs(30),
            policy: RestartPolicy::default(),
            watchdog: None,
            max_memory: None,
            max_age: None,
            uid: None,
            gid: None,
            stdio: Stdio::Forward,
        }
    }

    /// The pm group options for this plan.
    pub fn options(&self) -> GroupOptions {
        let mut foreign = Foreign::new(self.ready);
        for (name, address) in &self.listen {
            foreign = foreign.listen(name, address);
        }
        let mut settings = Settings::new()
            .name(self.name.clone())
            .stdio(self.stdio)
            .stop_timeout(self.stop_timeout)
            .ready_timeout(self.ready_timeout)
            .heartbeat_timeout(self.watchdog)
            .foreign(foreign);
        if let Some(cwd) = &self.cwd {
            settings = settings.cwd(cwd);
        }
        if let Some(uid) = self.uid {
            settings = settings.uid(uid);
        }
        if let Some(gid) = self.gid {
            settings = settings.gid(gid);
        }
        if let Some(bytes) = self.max_memory {
            settings = settings.max_memory(bytes);
        }
        if let Some(age) = self.max_age {
            settings = settings.max_age(age);
        }
        let mut options = GroupOptions::new()
            .exec(&self.exec)
            .children(self.instances)
            .policy(self.policy)
            .ready_timeout(self.ready_timeout)
            .settings(settings);
        for arg in &self.args {
            options = options.arg(arg);
        }
        for (key, value) in &self.env {
            options = options.env(key, value);
        }
        options
    }
}

/// Runs every group until the master is stopped (SIGTERM: graceful; SIGINT/SIGQUIT: fast).
pub async fn run(plan: Plan) -> Result<(), String> {
    let mut options = MasterOptions::new();
    if let Some(path) = &plan.pidfile {
        options = options.pidfile(path);
    }
    let master = Master::with_options(options);
    if let Some(path) = &plan.control_socket {
        master.control_socket(path).map_err(|e| e.to_string())?;
    }
    for group in &plan.groups {
        master
            .register(&group.name, group.options())
            .map_err(|e| format!("group {}: {e}", group.name))?;
    }
    master.dispatch();
    let result = master.run().await.map_err(|e| e.to_string());
    // What the workers printed as they stopped.
    cluster_core::flush_output(Duration::from_secs(2)).await;
    result
}

/// The program to run: a path as given if it has a slash, else looked up in `PATH` (as a
/// shell would), made absolute so a group's `cwd` does not change what runs.
pub fn resolve_program(program: &Path) -> Result<PathBuf, String> {
    use std::os::unix::fs::PermissionsExt;
    let executable = |path: &Path| {
        std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if program.as_os_str().is_empty() {
        return Err("no program given".into());
    }
    if program.to_string_lossy().contains('/') {
        let path =
            std::path::absolute(program).map_err(|e| format!("{}: {e}", program.display()))?;
        if !path.exists() {
            return Err(format!("{}: no such file", program.display()));
        }
        if !executable(&path) {
            return Err(format!("{}: not an executable file", program.display()));
        }
        return Ok(path);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| executable(candidate))
        .ok_or_else(|| format!("{}: not found in PATH", program.display()))
}

/// A `[NAME=]ADDRESS` listen argument: `ADDRESS` is `host:port` or `unix:PATH`; `NAME`
/// (systemd's `FileDescriptorName=`) defaults to `default_name`.
pub fn parse_listen(spec: &str, default_name: &str) -> Result<(String, String), String> {
    let (name, address) = match spec.split_once('=') {
        Some((name, address)) => (name.to_string(), address.to_string()),
        None => (default_name.to_string(), spec.to_string()),
    };
    let fine_name = !name.is_empty()
        && name.len() <= 255
        && name.bytes().all(|b| b.is_ascii_graphic() && b != b':');
    if !fine_name {
        return Err(format!(
            "{spec:?}: the name {name:?} must be 1 to 255 printable ASCII characters without ':'"
        ));
    }
    if let Some(path) = address.strip_prefix("unix:") {
        if path.is_empty() {
            return Err(format!("{spec:?}: unix: needs a path"));
        }
        return Ok((name, address));
    }
    match address.parse::<std::net::SocketAddr>() {
        Ok(_) => Ok((name, address)),
        Err(_) => Err(format!(
            "{address:?} is neither an IP address with a port (127.0.0.1:8080, [::1]:8080) nor \
             unix:PATH"
        )),
    }
}

/// A user name or numeric uid.
pub fn resolve_user(user: &str) -> Result<u32, String> {
    if let Ok(uid) = user.parse::<u32>() {
        return Ok(uid);
    }
    match nix::unistd::User::from_name(user) {
        Ok(Some(found)) => Ok(found.uid.as_raw()),
        Ok(None) => Err(format!("unknown user {user:?}")),
        Err(e) => Err(format!("looking up user {user:?}: {e}")),
    }
}

/// A group name or numeric gid.
pub fn resolve_group(group: &str) -> Result<u32, String> {
    if let Ok(gid) = group.parse::<u32>() {
        return Ok(gid);
    }
    match nix::unistd::Group::from_name(group) {
        Ok(Some(found)) => Ok(found.gid.as_raw()),
        Ok(None) => Err(format!("unknown group {group:?}")),
        Err(e) => Err(format!("looking up group {group:?}: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_specs() {
        assert_eq!(
            parse_listen("127.0.0.1:80", "web").unwrap(),
            ("web".into(), "127.0.0.1:80".into())
        );
        assert_eq!(
            parse_listen("admin=unix:/run/a.sock", "web").unwrap(),
            ("admin".into(), "unix:/run/a.sock".into())
        );
        assert!(parse_listen("127.0.0.1", "web").is_err());
        assert!(parse_listen("a:b=127.0.0.1:80", "web").is_err());
        assert!(parse_listen("unix:", "web").is_err());
    }

    #[test]
    fn programs_are_found_or_named() {
        assert!(resolve_program(Path::new("sh")).unwrap().is_absolute());
        let missing = resolve_program(Path::new("no-such-program-here")).unwrap_err();
        assert!(missing.contains("not found in PATH"), "{missing}");
        assert!(resolve_program(Path::new("/etc/passwd")).is_err());
    }

    #[test]
    fn users_by_name_or_number() {
        assert_eq!(resolve_user("root").unwrap(), 0);
        assert_eq!(resolve_user("1234").unwrap(), 1234);
        assert!(
            resolve_user("no-such-user-here")
                .unwrap_err()
                .contains("unknown user")
        );
    }
}
