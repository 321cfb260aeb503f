//! What graceful knows about a panic.

use std::any::Any;

/// One panic, as reported to `on_error`.
#[derive(Debug, Clone)]
pub struct PanicReport {
    /// The panic message (`panic!`'s text, or a placeholder for other payloads).
    pub message: String,
    /// Where it panicked, `file:line:column`.
    pub location: Option<String>,
    /// The panicking thread's name.
    pub thread: String,
    /// How many panics this process has had, this one included (the seed's `throwErrorCount`).
    pub count: usize,
    /// True when the panic matched `report_only`: reported, nothing else.
    pub report_only: bool,
}

impl std::fmt::Display for PanicReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.message)?;
        if let Some(location) = &self.location {
            write!(f, " at {location}")?;
        }
        write!(f, " (panic {} on thread {})", self.count, self.thread)
    }
}

/// The text of a panic payload.
pub(crate) fn payload_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic with a non-string payload".to_string()
    }
}
