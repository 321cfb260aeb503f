//! Registered event callbacks, run one event at a time.

use std::sync::Mutex;

type Callback<C, E> = Box<dyn FnMut(&C, &E) + Send>;

/// Callbacks taking the owner (`C`) and an event (`E`). A callback may register further
/// callbacks while it runs: they are kept, after the older ones.
pub(crate) struct Callbacks<C, E> {
    list: Mutex<Vec<Callback<C, E>>>,
}

impl<C, E> Callbacks<C, E> {
    pub(crate) fn new() -> Self {
        Callbacks {
            list: Mutex::new(Vec::new()),
        }
    }

    pub(crate) fn push(&self, callback: impl FnMut(&C, &E) + Send + 'static) {
        self.lock().push(Box::new(callback));
    }

    /// Calls every callback with `event`, without holding the lock (a callback may call
    /// back into the owner).
    pub(crate) fn run(&self, owner: &C, event: &E) {
        let mut running = std::mem::take(&mut *self.lock());
        for callback in &mut running {
            callback(owner, event);
        }
        let mut registered = self.lock();
        running.append(&mut registered);
        *registered = running;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Callback<C, E>>> {
        self.list.lock().unwrap_or_else(|p| p.into_inner())
    }
}
