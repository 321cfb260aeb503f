//! Supervision: pm's named groups of workers, kept alive under a restart policy, reloaded
//! without downtime, scaled at run time, messaged.
//!
//! A [`Master`] runs several groups; each group is a [`crate::Cluster`] with its own
//! program, addresses and size. Its loop ([`Master::run`]) applies every worker event to
//! its group: an exit is replaced, at once unless it continues a chain of *unstable* exits
//! (pm2's rule: before ready, or less than [`RestartPolicy::min_uptime`] after it; exits the
//! master caused itself and hand-overs never count; a replacement inherits the count of the
//! worker it replaces), which back off; after five unstable exits in a chain within a
//! minute the group gives up for a minute (pm's numbers). A reload forks a new generation and
//! retires the old one only once the new one is ready and stable, and a reload whose new
//! workers fail leaves the old ones serving.
//!
//! While a group has no worker alive and none on its way (given up, backing off, scaled to
//! zero, stopping), the master refuses what arrives on its addresses (accepts and resets:
//! [`crate::Cluster::refuse_connections`]) instead of letting clients wait in the accept
//! queue; it keeps the port, and stops refusing as soon as it forks again.
//!
//! Workers of a group reach each other through the master (`send_to_group`, `send_to_pid` in
//! `cluster-worker`); the group's scheduling mode is its settings' (`Settings::scheduling`);
//! a group listens on TCP addresses and Unix socket paths (always shared).

mod delivery;
mod events;
mod group;
mod master;
mod options;
pub(crate) mod policy;

pub use delivery::{DEFAULT_SEND_TIMEOUT, Delivery, Unreached};
pub use events::GroupEvent;
pub use master::Master;
pub use options::{GroupOptions, MasterOptions};
pub use policy::{MIN_RESTART_DELAY, RestartPolicy};
