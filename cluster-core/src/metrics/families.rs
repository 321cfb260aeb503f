//! The metric families (prometheus-client) and the text they encode to.

use std::collections::BTreeMap;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::worker::{Exit, Worker, WorkerLoad, WorkerState};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GroupLabel {
    group: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    group: String,
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    group: String,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    group: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WorkerLabels {
    group: String,
    id: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AddressLabel {
    address: String,
}

type ReloadSeconds = Family<GroupLabel, Histogram, fn() -> Histogram>;

fn reload_histogram() -> Histogram {
    // 0.25 s … about 2 min.
    Histogram::new(exponential_buckets(0.25, 2.0, 10))
}

/// Every family, registered once; counters move on events, gauges are set at each scrape.
pub(crate) struct Families {
    registry: Registry,
    workers: Family<StateLabels, Gauge>,
    ready: Family<GroupLabel, Gauge>,
    restarts: Family<ReasonLabels, Counter>,
    panics: Family<GroupLabel, Counter>,
    reloads: Family<OutcomeLabels, Counter>,
    reload_seconds: ReloadSeconds,
    give_ups: Family<GroupLabel, Counter>,
    accept_queue: Family<AddressLabel, Gauge>,
    requests_served: Family<WorkerLabels, Gauge>,
    open_connections: Family<WorkerLabels, Gauge>,
}

impl Families {
    pub(crate) fn new() -> Families {
        let mut registry = Registry::with_prefix("cluster");
        let workers = Family::<StateLabels, Gauge>::default();
        registry.register(
            "workers",
            "Live workers by group and state",
            workers.clone(),
        );
        let ready = Family::<GroupLabel, Gauge>::default();
        registry.register(
            "ready_workers",
            "Workers ready to serve, by group",
            ready.clone(),
        );
        let restarts = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "restarts",
            "Worker exits the master did not ask for, by reason (panic, signal, crash, exit)",
            restarts.clone(),
        );
        let panics = Family::<GroupLabel, Counter>::default();
        registry.register(
            "panics",
            "Workers that handed over after a panic",
            panics.clone(),
        );
        let reloads = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "reloads",
            "Reloads by outcome (done, failed)",
            reloads.clone(),
        );
        let reload_seconds: ReloadSeconds = Family::new_with_constructor(reload_histogram);
        registry.register(
            "reload_duration_seconds",
            "How long reloads took, from their first new worker to their outcome",
            reload_seconds.clone(),
        );
        let give_ups = Family::<GroupLabel, Counter>::default();
        registry.register(
            "give_ups",
            "Times a group gave up restarting (pm)",
            give_ups.clone(),
        );
        let accept_queue = Family::<AddressLabel, Gauge>::default();
        registry.register(
            "accept_queue",
            "Connections waiting in a shared listening socket's accept queue",
            accept_queue.clone(),
        );
        let requests_served = Family::<WorkerLabels, Gauge>::default();
        registry.register(
            "worker_requests_served",
            "Requests a live worker has served (connections, if its server counts no requests), as of its last heartbeat",
            requests_served.clone(),
        );
        let open_connections = Family::<WorkerLabels, Gauge>::default();
        registry.register(
            "worker_open_connections",
            "Connections a live worker's servers hold, as of its last heartbeat",
            open_connections.clone(),
        );
        Families {
            registry,
            requests_served,
            open_connections,
            workers,
            ready,
            restarts,
            panics,
            reloads,
            reload_seconds,
            give_ups,
            accept_queue,
        }
    }

    /// Counts `worker`'s exit: a restart (with its reason) unless the master asked for it.
    pub(crate) fn exited(&self, group: &str, worker: &Worker, exit: Exit, stopping: bool) {
        let reason = worker.exit_reason();
        if let Some(crate::ExitReason::Panic { .. }) = reason {
            self.panics.get_or_create(&label(group)).inc();
        }
        if stopping || reason.as_ref().is_some_and(|r| r.is_planned()) {
            return;
        }
        let why = match (&reason, exit.signal, exit.code) {
            (Some(crate::ExitReason::Panic { .. }), _, _) => "panic",
            (_, Some(_), _) => "signal",
            (_, _, Some(code)) if code != 0 => "crash",
            _ => "exit",
        };
        self.restarts
            .get_or_create(&ReasonLabels {
                group: group.to_string(),
                reason: why.to_string(),
            })
            .inc();
    }

    pub(crate) fn reloaded(&self, group: &str, ok: bool, took: Option<Duration>) {
        let outcome = if ok { "done" } else { "failed" };
        self.reloads
            .get_or_create(&OutcomeLabels {
                group: group.to_string(),
                outcome: outcome.to_string(),
            })
            .inc();
        if let Some(took) = took {
            self.reload_seconds
                .get_or_create(&label(group))
                .observe(took.as_secs_f64());
        }
    }

    pub(crate) fn gave_up(&self, group: &str) {
        self.give_ups.get_or_create(&label(group)).inc();
    }

    /// The text exposition, with the gauges set from `groups`, `queues` and `loads` now.
    pub(crate) fn encode(
        &self,
        groups: &BTreeMap<String, Vec<(WorkerState, bool)>>,
        queues: &[(String, u32)],
        loads: &[(String, u32, WorkerLoad)],
    ) -> Result<String, std::fmt::Error> {
        self.requests_served.clear();
        self.open_connections.clear();
        for (group, id, load) in loads {
            let labels = WorkerLabels {
                group: group.clone(),
                id: id.to_string(),
            };
            let as_gauge = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
            self.requests_served
                .get_or_create(&labels)
                .set(as_gauge(load.served));
            self.open_connections
                .get_or_create(&labels)
                .set(as_gauge(load.open_connections));
        }
        self.workers.clear();
        self.ready.clear();
        for (group, workers) in groups {
            self.ready
                .get_or_create(&label(group))
                .set(workers.iter().filter(|(_, ready)| *ready).count() as i64);
            for (state, _) in workers {
                self.workers
                    .get_or_create(&StateLabels {
                        group: group.clone(),
                        state: crate::control::state_name(*state).to_string(),
                    })
                    .inc();
            }
        }
        self.accept_queue.clear();
        for (address, queued) in queues {
            self.accept_queue
                .get_or_create(&AddressLabel {
                    address: address.clone(),
                })
                .set(i64::from(*queued));
        }
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)?;
        Ok(text)
    }
}

fn label(group: &str) -> GroupLabel {
    GroupLabel {
        group: group.to_string(),
    }
}
