//! Supervision: pm's named groups of workers, kept alive under a restart policy, reloaded
//! without downtime, scaled at run time, messaged.
//!
//! A [`Master`] runs several groups; each group is a [`crate::Cluster`] with its own
//! program, addresses and size. Its loop ([`Master::run`]) applies every worker event to
//! its group: an exit is replaced (after a backoff if it was fatal; after five fatal exits
//! in a minute the group gives up for a minute: pm's rule), a reload forks a new
//! generation and retires the old one only once the new one is ready and stable, and a
//! reload whose new workers fail leaves the old ones serving.
//!
//! Workers of a group reach each other through the master (`send_to_group`, `send_to_pid` in
//! `cluster-worker`); the group's scheduling mode is its settings' (`Settings::scheduling`);
//! a group listens on TCP addresses and Unix socket paths (always shared).

mod delivery;
mod events;
mod group;
mod master;
mod options;
mod policy;

pub use delivery::{DEFAULT_SEND_TIMEOUT, Delivery, Unreached};
pub use events::GroupEvent;
pub use master::Master;
pub use options::GroupOptions;
pub use policy::{MIN_RESTART_DELAY, RestartPolicy};
