//! Reading and changing a running master's settings: [`crate::Cluster::settings`] and
//! [`crate::Cluster::setup_master`], which merges like Node's `cluster.setupPrimary`.
//!
//! Node merges the keys of the object passed into the current settings. [`Settings`] is a
//! builder with no notion of "keys set", so the merge is a closure that receives the current
//! settings and changes what it names: `cluster.setup_master(|s| s.args(["--fast"]))`
//! keeps the `exec` set before. A whole [`Settings`] value replaces them (every key given).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use crate::events::Event;
use crate::settings::{Settings, SettingsError};

/// What [`crate::Cluster::setup_master`] takes: a closure that changes the current
/// settings (Node's merge), or a whole [`Settings`] (replaces them).
pub trait SettingsUpdate {
    /// The settings to apply, given the current ones.
    fn apply(self, current: Settings) -> Settings;
}

impl SettingsUpdate for Settings {
    fn apply(self, _current: Settings) -> Settings {
        self
    }
}

impl<F: FnOnce(Settings) -> Settings> SettingsUpdate for F {
    fn apply(self, current: Settings) -> Settings {
        self(current)
    }
}

/// Read access, for [`crate::Cluster::settings`] (the builder methods set).
impl Settings {
    /// The worker executable, if set ([`Settings::exec`]; else the master's own).
    pub fn exec_path(&self) -> Option<&std::path::Path> {
        self.exec.as_deref()
    }

    /// The workers' arguments ([`Settings::arg`]).
    pub fn arguments(&self) -> &[std::ffi::OsString] {
        &self.args
    }

    /// The environment variables set for every worker ([`Settings::env`]).
    pub fn environment(&self) -> &[(std::ffi::OsString, std::ffi::OsString)] {
        &self.env
    }

    /// How long a graceful stop waits ([`Settings::stop_timeout`]).
    pub fn stop_timeout_value(&self) -> std::time::Duration {
        self.stop_timeout
    }
}

impl crate::Cluster {
    /// A copy of the settings in force (Node's `cluster.settings`).
    pub fn settings(&self) -> Settings {
        self.shared.settings().clone()
    }

    /// Changes the settings for workers forked from now on (Node's `cluster.setupPrimary`),
    /// and emits [`Event::Setup`] with them. Pass a closure to merge (it gets the current
    /// settings), or a whole [`Settings`] to replace them. A bad setting is an error naming
    /// it, and nothing changes.
    ///
    /// ```no_run
    /// # fn demo(cluster: cluster_core::Cluster) -> Result<(), cluster_core::SettingsError> {
    /// cluster.setup_master(|s: cluster_core::Settings| s.exec("./worker"))?;
    /// cluster.setup_master(|s: cluster_core::Settings| s.arg("--port").arg("8080"))?;
    /// let settings = cluster.settings();
    /// assert!(settings.exec_path().is_some()); // the first call's exec is kept
    /// assert_eq!(settings.arguments().len(), 2);
    /// # Ok(()) }
    /// ```
    pub fn setup_master(&self, update: impl SettingsUpdate) -> Result<(), SettingsError> {
        let settings = update.apply(self.settings()).validate()?;
        let limit = crate::nofile::apply(settings.nofile_limit)?;
        self.shared.nofile_limit.store(limit, Ordering::Relaxed);
        if settings.respawn != crate::Respawn::Manual {
            self.shared.events.respawn_registered();
        }
        *self.shared.settings() = settings.clone();
        crate::foreign::bind(self)?;
        self.shared.events.emit(Event::Setup(Arc::new(settings)));
        Ok(())
    }
}
