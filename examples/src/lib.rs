//! Shared pieces of the seed examples: the log-line date and the HTTP app.

pub mod app;
mod date;

pub use date::js_date;
