//! The server's metrics, in Prometheus' text format on a listener of their own.
//!
//! Every server counts what it does, whether or not the metrics are served: a counter
//! is an atomic add, and the inspection API's statistics read the same counters. The
//! registry belongs to the server (not to the process), so two servers in one process,
//! such as two tests, count apart.
//!
//! Labels are bounded by what the server is built with, never by what clients send: the
//! party (one of the parties the server serves), the handler kind, a close code (the
//! codes WebSocket defines, or their application ranges `3xxx` and `4xxx`), an HTTP
//! status, a refusal's reason. No label carries a room or connection id.
//!
//! Hot paths hold the handles they need ([`PartyMetrics`], resolved once per party), so
//! counting a delivery is one atomic add on the party's counter.

mod endpoint;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

pub use endpoint::METRICS_ADDR_VAR;
pub(crate) use endpoint::router;

use crate::connection::close_code;

/// The handlers a room runs, as the `handler` label names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Handler {
    OnStart,
    ConnectionTags,
    OnConnect,
    OnMessage,
    OnClose,
    OnError,
    OnRequest,
    OnAlarm,
    OnBeforeConnect,
    OnBeforeRequest,
    OnFetch,
    OnCron,
}

impl Handler {
    const ALL: [Handler; 12] = [
        Handler::OnStart,
        Handler::ConnectionTags,
        Handler::OnConnect,
        Handler::OnMessage,
        Handler::OnClose,
        Handler::OnError,
        Handler::OnRequest,
        Handler::OnAlarm,
        Handler::OnBeforeConnect,
        Handler::OnBeforeRequest,
        Handler::OnFetch,
        Handler::OnCron,
    ];

    fn name(self) -> &'static str {
        match self {
            Handler::OnStart => "on_start",
            Handler::ConnectionTags => "connection_tags",
            Handler::OnConnect => "on_connect",
            Handler::OnMessage => "on_message",
            Handler::OnClose => "on_close",
            Handler::OnError => "on_error",
            Handler::OnRequest => "on_request",
            Handler::OnAlarm => "on_alarm",
            Handler::OnBeforeConnect => "on_before_connect",
            Handler::OnBeforeRequest => "on_before_request",
            Handler::OnFetch => "on_fetch",
            Handler::OnCron => "on_cron",
        }
    }
}

/// Why the server refused work, as the `reason` label names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// `Limits::max_rooms` rooms were live.
    RoomCap,
    /// `Limits::max_connections` connections were open.
    ConnectionCap,
    /// The bodies being read held `Limits::max_buffered_bodies`.
    BodyBudget,
    /// A body over `Limits::max_request_body`.
    BodyTooLarge,
    /// A body slower than `Limits::body_read_timeout`.
    BodyTimeout,
    /// A peer that fell behind by more than `Limits::max_outbound_buffer`.
    SlowConsumer,
    /// A room id over `Limits::max_room_id_length`.
    RoomIdTooLong,
    /// A room asked for while the server shuts down.
    ShuttingDown,
    /// In cluster mode, a room that could not start: the database was unreachable, or
    /// the room is another node's.
    Unavailable,
}

impl Refusal {
    const ALL: [Refusal; 9] = [
        Refusal::RoomCap,
        Refusal::ConnectionCap,
        Refusal::BodyBudget,
        Refusal::BodyTooLarge,
        Refusal::BodyTimeout,
        Refusal::SlowConsumer,
        Refusal::RoomIdTooLong,
        Refusal::ShuttingDown,
        Refusal::Unavailable,
    ];

    fn name(self) -> &'static str {
        match self {
            Refusal::RoomCap => "room_cap",
            Refusal::ConnectionCap => "connection_cap",
            Refusal::BodyBudget => "body_budget",
            Refusal::BodyTooLarge => "body_too_large",
            Refusal::BodyTimeout => "body_timeout",
            Refusal::SlowConsumer => "slow_consumer",
            Refusal::RoomIdTooLong => "room_id_too_long",
            Refusal::ShuttingDown => "shutting_down",
            Refusal::Unavailable => "unavailable",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PartyLabel {
    party: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HandlerLabels {
    party: &'static str,
    handler: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CloseLabels {
    party: &'static str,
    code: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabel {
    code: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: &'static str,
}

/// Durations from 50 µs to about 52 s, doubling.
fn seconds() -> Histogram {
    Histogram::new(exponential_buckets(0.000_05, 2.0, 21))
}

/// Counts from 1 to 4,096, doubling.
fn sizes() -> Histogram {
    Histogram::new(exponential_buckets(1.0, 2.0, 13))
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

/// Every metric of one server, and its registry.
pub(crate) struct Metrics {
    registry: Registry,
    parties: HashMap<&'static str, Arc<PartyMetrics>>,
    http: Family<StatusLabel, Counter>,
    refused: Vec<Counter>,
    cluster: ClusterMetrics,
}

/// One party's handles, resolved once: what its rooms and sockets count with.
#[derive(Debug)]
pub(crate) struct PartyMetrics {
    pub(crate) rooms: Gauge,
    pub(crate) hibernating: Gauge,
    pub(crate) connections: Gauge,
    pub(crate) connections_opened: Counter,
    closed: Vec<(u16, Counter)>,
    closed_other: [Counter; 3],
    pub(crate) messages_in: Counter,
    pub(crate) bytes_in: Counter,
    pub(crate) messages_out: Counter,
    pub(crate) bytes_out: Counter,
    handlers: Vec<HandlerMetrics>,
    pub(crate) storage: Arc<StorageMetrics>,
    pub(crate) alarms_fired: Counter,
    pub(crate) alarm_retries: Counter,
    pub(crate) alarm_lag: Histogram,
}

#[derive(Debug)]
struct HandlerMetrics {
    duration: Histogram,
    errors: Counter,
    panics: Counter,
}

/// What a room's committer counts, for its party.
#[derive(Debug)]
pub(crate) struct StorageMetrics {
    pub(crate) commit_duration: Histogram,
    pub(crate) commit_mutations: Histogram,
    pub(crate) commit_failures: Counter,
    pub(crate) gate_hold: Histogram,
}

/// What a cluster node counts.
#[derive(Debug)]
pub(crate) struct ClusterMetrics {
    pub(crate) leases_acquired: Counter,
    pub(crate) leases_lost: Counter,
    forwarded: Family<KindLabel, Counter>,
    forward_duration: Histograms<KindLabel>,
}

/// What a cluster node forwards to the room's owner.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Forwarded {
    /// An HTTP request.
    Request,
    /// A WebSocket, relayed.
    Socket,
    /// An inspection API request.
    Inspect,
}

impl Forwarded {
    fn name(self) -> &'static str {
        match self {
            Forwarded::Request => "request",
            Forwarded::Socket => "socket",
            Forwarded::Inspect => "inspect",
        }
    }
}

/// The close codes counted under their own number; others count as `3xxx`, `4xxx` or
/// `other`.
/// 1005 and 1006 are never sent: they stand for a close without a code, and for a socket
/// that ended without a close.
const CLOSE_CODES: [u16; 14] = [
    1000,
    1001,
    1002,
    1003,
    1005,
    1006,
    1007,
    1008,
    1009,
    1010,
    1011,
    1012,
    1013,
    close_code::REPLACED,
];

impl Metrics {
    /// The metrics of a server of these parties.
    pub(crate) fn new(parties: &[&'static str]) -> Self {
        let mut registry = Registry::with_prefix("partykit");
        let rooms = Family::<PartyLabel, Gauge>::default();
        registry.register(
            "rooms",
            "Live rooms (in memory, hibernating or not)",
            rooms.clone(),
        );
        let hibernating = Family::<PartyLabel, Gauge>::default();
        registry.register(
            "rooms_hibernating",
            "Live rooms whose value is dropped while their sockets stay open",
            hibernating.clone(),
        );
        let connections = Family::<PartyLabel, Gauge>::default();
        registry.register(
            "connections",
            "Open WebSocket connections",
            connections.clone(),
        );
        let opened = Family::<PartyLabel, Counter>::default();
        registry.register(
            "connections_opened",
            "WebSocket connections accepted by a room",
            opened.clone(),
        );
        let closed = Family::<CloseLabels, Counter>::default();
        registry.register(
            "connections_closed",
            "WebSocket connections closed, by close code (3xxx and 4xxx: application codes)",
            closed.clone(),
        );
        let messages_in = Family::<PartyLabel, Counter>::default();
        registry.register(
            "messages_received",
            "WebSocket messages received from clients",
            messages_in.clone(),
        );
        let bytes_in = Family::<PartyLabel, Counter>::default();
        registry.register_with_unit(
            "received",
            "Payload bytes of WebSocket messages received",
            Unit::Bytes,
            bytes_in.clone(),
        );
        let messages_out = Family::<PartyLabel, Counter>::default();
        registry.register(
            "messages_sent",
            "WebSocket messages written to clients (a broadcast counts once per recipient)",
            messages_out.clone(),
        );
        let bytes_out = Family::<PartyLabel, Counter>::default();
        registry.register_with_unit(
            "sent",
            "Payload bytes of WebSocket messages written",
            Unit::Bytes,
            bytes_out.clone(),
        );
        let durations: Histograms<HandlerLabels> = Family::new_with_constructor(seconds);
        registry.register_with_unit(
            "handler_duration",
            "How long a room's handler ran, awaits included",
            Unit::Seconds,
            durations.clone(),
        );
        let errors = Family::<HandlerLabels, Counter>::default();
        registry.register(
            "handler_errors",
            "Handlers that returned an error",
            errors.clone(),
        );
        let panics = Family::<HandlerLabels, Counter>::default();
        registry.register(
            "handler_panics",
            "Handlers that panicked (the room's value was rebuilt)",
            panics.clone(),
        );
        let commit_duration: Histograms<PartyLabel> = Family::new_with_constructor(seconds);
        registry.register_with_unit(
            "storage_commit_duration",
            "How long a storage commit took, from the backend's start to durable",
            Unit::Seconds,
            commit_duration.clone(),
        );
        let commit_mutations: Histograms<PartyLabel> = Family::new_with_constructor(sizes);
        registry.register(
            "storage_commit_mutations",
            "Writes per storage commit (one commit takes what a room's events wrote meanwhile)",
            commit_mutations.clone(),
        );
        let commit_failures = Family::<PartyLabel, Counter>::default();
        registry.register(
            "storage_commit_failures",
            "Storage commits that failed (the room was reset)",
            commit_failures.clone(),
        );
        let gate_hold: Histograms<PartyLabel> = Family::new_with_constructor(seconds);
        registry.register_with_unit(
            "output_gate_hold",
            "How long output that followed a write was held, from the end of the event to the write being durable",
            Unit::Seconds,
            gate_hold.clone(),
        );
        let alarms_fired = Family::<PartyLabel, Counter>::default();
        registry.register(
            "alarms_fired",
            "on_alarm runs, retries included",
            alarms_fired.clone(),
        );
        let alarm_retries = Family::<PartyLabel, Counter>::default();
        registry.register(
            "alarm_retries",
            "Failed on_alarm runs scheduled for a retry",
            alarm_retries.clone(),
        );
        let alarm_lag: Histograms<PartyLabel> = Family::new_with_constructor(seconds);
        registry.register_with_unit(
            "alarm_lag",
            "How late on_alarm started: its start time minus the alarm's time",
            Unit::Seconds,
            alarm_lag.clone(),
        );
        let http = Family::<StatusLabel, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests answered on the public listener, by status (WebSocket upgrades answer 101)",
            http.clone(),
        );
        let refused_family = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "refused",
            "Work refused by a limit, by reason",
            refused_family.clone(),
        );
        let refused = Refusal::ALL
            .iter()
            .map(|reason| {
                refused_family
                    .get_or_create(&ReasonLabel {
                        reason: reason.name(),
                    })
                    .clone()
            })
            .collect();
        let cluster = ClusterMetrics::register(&mut registry);

        let parties = parties
            .iter()
            .map(|&party| {
                let label = PartyLabel { party };
                let handler = |handler: Handler| HandlerLabels {
                    party,
                    handler: handler.name(),
                };
                let close =
                    |code: &'static str| closed.get_or_create(&CloseLabels { party, code }).clone();
                let metrics = PartyMetrics {
                    rooms: rooms.get_or_create(&label).clone(),
                    hibernating: hibernating.get_or_create(&label).clone(),
                    connections: connections.get_or_create(&label).clone(),
                    connections_opened: opened.get_or_create(&label).clone(),
                    closed: CLOSE_CODES
                        .iter()
                        .map(|&code| (code, close(close_code_label(code))))
                        .collect(),
                    closed_other: [close("3xxx"), close("4xxx"), close("other")],
                    messages_in: messages_in.get_or_create(&label).clone(),
                    bytes_in: bytes_in.get_or_create(&label).clone(),
                    messages_out: messages_out.get_or_create(&label).clone(),
                    bytes_out: bytes_out.get_or_create(&label).clone(),
                    handlers: Handler::ALL
                        .iter()
                        .map(|&kind| HandlerMetrics {
                            duration: durations.get_or_create(&handler(kind)).clone(),
                            errors: errors.get_or_create(&handler(kind)).clone(),
                            panics: panics.get_or_create(&handler(kind)).clone(),
                        })
                        .collect(),
                    storage: Arc::new(StorageMetrics {
                        commit_duration: commit_duration.get_or_create(&label).clone(),
                        commit_mutations: commit_mutations.get_or_create(&label).clone(),
                        commit_failures: commit_failures.get_or_create(&label).clone(),
                        gate_hold: gate_hold.get_or_create(&label).clone(),
                    }),
                    alarms_fired: alarms_fired.get_or_create(&label).clone(),
                    alarm_retries: alarm_retries.get_or_create(&label).clone(),
                    alarm_lag: alarm_lag.get_or_create(&label).clone(),
                };
                (party, Arc::new(metrics))
            })
            .collect();
        Self {
            registry,
            parties,
            http,
            refused,
            cluster,
        }
    }

    /// The handles of `party`, one of the parties the metrics were made for.
    pub(crate) fn party(&self, party: &str) -> Arc<PartyMetrics> {
        match self.parties.get(party) {
            Some(metrics) => Arc::clone(metrics),
            None => unreachable!("metrics are made for every party of the server"),
        }
    }

    /// Every party's handles, by name.
    pub(crate) fn parties(&self) -> impl Iterator<Item = (&'static str, &PartyMetrics)> {
        self.parties
            .iter()
            .map(|(name, metrics)| (*name, &**metrics))
    }

    /// An HTTP response's status, on the public listener.
    pub(crate) fn answered(&self, status: http::StatusCode) {
        self.http
            .get_or_create(&StatusLabel {
                code: status.as_u16(),
            })
            .inc();
    }

    /// Work refused by a limit.
    pub(crate) fn refused(&self, reason: Refusal) {
        // `refused` holds one counter per reason, in `Refusal::ALL`'s order.
        if let Some(counter) = Refusal::ALL
            .iter()
            .position(|known| *known == reason)
            .and_then(|index| self.refused.get(index))
        {
            counter.inc();
        }
    }

    pub(crate) fn cluster(&self) -> &ClusterMetrics {
        &self.cluster
    }

    /// The registry in Prometheus' text exposition format (version 0.0.4).
    pub(crate) fn encode(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut text, &self.registry);
        text
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl PartyMetrics {
    /// A handler ran for `elapsed`; `outcome` is `Err(true)` for a panic.
    pub(crate) fn handled(&self, handler: Handler, elapsed: Duration, outcome: Result<(), bool>) {
        let Some(metrics) = self.handlers.get(handler as usize) else {
            return;
        };
        metrics.duration.observe(elapsed.as_secs_f64());
        match outcome {
            Ok(()) => {}
            Err(false) => {
                metrics.errors.inc();
            }
            Err(true) => {
                metrics.panics.inc();
            }
        }
    }

    /// Runs a static hook and counts it like a room's handler.
    pub(crate) async fn time<T>(
        &self,
        handler: Handler,
        run: impl Future<Output = Result<T, crate::Error>>,
    ) -> Result<T, crate::Error> {
        let started = std::time::Instant::now();
        let result = run.await;
        let outcome = match &result {
            Ok(_) => Ok(()),
            Err(error) => Err(error.is_panic()),
        };
        self.handled(handler, started.elapsed(), outcome);
        result
    }

    /// A room's socket closed with `code`.
    pub(crate) fn closed(&self, code: u16) {
        self.connections.dec();
        let counter = match self.closed.iter().find(|(known, _)| *known == code) {
            Some((_, counter)) => counter,
            None => match code {
                3000..=3999 => &self.closed_other[0],
                4000..=4999 => &self.closed_other[1],
                _ => &self.closed_other[2],
            },
        };
        counter.inc();
    }
}

impl ClusterMetrics {
    fn register(registry: &mut Registry) -> Self {
        let leases_acquired = Counter::default();
        registry.register(
            "cluster_leases_acquired",
            "Room leases this node took",
            leases_acquired.clone(),
        );
        let leases_lost = Counter::default();
        registry.register(
            "cluster_leases_lost",
            "Room leases this node lost before releasing them (fenced, or not renewed in time)",
            leases_lost.clone(),
        );
        let forwarded = Family::<KindLabel, Counter>::default();
        registry.register(
            "cluster_forwarded",
            "Events forwarded to the node that owns the room, by kind",
            forwarded.clone(),
        );
        let forward_duration: Histograms<KindLabel> = Family::new_with_constructor(seconds);
        registry.register_with_unit(
            "cluster_forward_duration",
            "How long a forwarded request took to be answered, or a relayed socket to open",
            Unit::Seconds,
            forward_duration.clone(),
        );
        Self {
            leases_acquired,
            leases_lost,
            forwarded,
            forward_duration,
        }
    }

    /// An event forwarded to its room's owner, answered after `elapsed`.
    pub(crate) fn forwarded(&self, kind: Forwarded, elapsed: Duration) {
        let label = KindLabel { kind: kind.name() };
        self.forwarded.get_or_create(&label).inc();
        self.forward_duration
            .get_or_create(&label)
            .observe(elapsed.as_secs_f64());
    }
}

/// The `code` label of a close code counted under its own number.
fn close_code_label(code: u16) -> &'static str {
    match code {
        1000 => "1000",
        1001 => "1001",
        1002 => "1002",
        1003 => "1003",
        1005 => "1005",
        1006 => "1006",
        1007 => "1007",
        1008 => "1008",
        1009 => "1009",
        1010 => "1010",
        1011 => "1011",
        1012 => "1012",
        1013 => "1013",
        4409 => "4409",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_close_code_counted_by_number_has_its_label() {
        for code in CLOSE_CODES {
            assert_eq!(close_code_label(code), code.to_string());
        }
    }

    #[test]
    fn counters_show_in_the_text_format_with_bounded_labels() {
        let metrics = Metrics::new(&["main", "chat"]);
        let chat = metrics.party("chat");
        chat.messages_out.inc_by(3);
        chat.connections.inc_by(3);
        chat.closed(1000);
        chat.closed(4321);
        chat.handled(Handler::OnMessage, Duration::from_millis(2), Err(false));
        metrics.refused(Refusal::RoomCap);
        metrics.answered(http::StatusCode::NOT_FOUND);
        let text = metrics.encode();
        for line in [
            "partykit_messages_sent_total{party=\"chat\"} 3",
            "partykit_messages_sent_total{party=\"main\"} 0",
            "partykit_connections{party=\"chat\"} 1",
            "partykit_connections_closed_total{party=\"chat\",code=\"1000\"} 1",
            "partykit_connections_closed_total{party=\"chat\",code=\"4xxx\"} 1",
            "partykit_handler_errors_total{party=\"chat\",handler=\"on_message\"} 1",
            "partykit_handler_duration_seconds_count{party=\"chat\",handler=\"on_message\"} 1",
            "partykit_refused_total{reason=\"room_cap\"} 1",
            "partykit_http_requests_total{code=\"404\"} 1",
        ] {
            assert!(
                text.lines().any(|found| found == line),
                "{line} not in:\n{text}"
            );
        }
    }
}
