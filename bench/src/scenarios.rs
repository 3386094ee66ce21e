//! The scenarios, and running them: each repetition starts a fresh process of each server
//! (the reference and partykit-rs, in alternating order), drives it, and turns what the
//! load generator measured into named figures.

use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

use crate::load::{self, Payload, Rate, Timing, Traffic};
use crate::measure;
use crate::servers::{ServerKind, ServerProcess};

/// What a scenario does to the server.
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum Workload {
    /// Clients in rooms exchanging messages.
    Traffic(Traffic),
    /// Connecting many clients at once, then leaving them idle.
    Setup { rooms: usize, per_room: usize },
    /// Keep-alive clients sending `GET` on rooms, one request at a time each.
    Http { connections: usize, rooms: usize },
}

/// A goal for one figure, stated as in the issue.
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(rename_all = "kebab-case", tag = "kind", content = "value")]
pub enum Target {
    /// partykit ÷ reference at most this.
    RatioAtMost(f64),
    /// partykit ÷ reference at least this, unless the load generator limited a run.
    RatioAtLeast(f64),
    /// partykit's own figure at most this.
    AtMost(f64),
}

/// One row of the suite.
#[derive(Debug, Clone, Serialize)]
pub struct Scenario {
    pub name: &'static str,
    pub title: String,
    pub workload: Workload,
    /// The figures the table shows, in order (the JSON has them all).
    pub shown: Vec<&'static str>,
    pub targets: Vec<(&'static str, Target)>,
}

/// The default suite's sizes.
pub fn default_suite() -> Vec<Scenario> {
    suite(&Sizes {
        fanout_clients: 100,
        fanout_rate: 500.0,
        fanout_in_flight: 32,
        rooms: 100,
        room_clients: 10,
        rooms_rate: 2_000.0,
        rooms_in_flight: 4,
        setup_rooms: 10,
        setup_per_room: 100,
        http_connections: 16,
        http_rooms: 10,
        binary_clients: 100,
        binary_rate: 500.0,
    })
}

/// Every scenario at a tiny size, to check that the harness works (`tests/smoke.rs`).
pub fn tiny_suite() -> Vec<Scenario> {
    suite(&Sizes {
        fanout_clients: 3,
        fanout_rate: 100.0,
        fanout_in_flight: 2,
        rooms: 2,
        room_clients: 3,
        rooms_rate: 100.0,
        rooms_in_flight: 2,
        setup_rooms: 2,
        setup_per_room: 2,
        http_connections: 2,
        http_rooms: 2,
        binary_clients: 3,
        binary_rate: 100.0,
    })
}

struct Sizes {
    fanout_clients: usize,
    fanout_rate: f64,
    fanout_in_flight: usize,
    rooms: usize,
    room_clients: usize,
    rooms_rate: f64,
    rooms_in_flight: usize,
    setup_rooms: usize,
    setup_per_room: usize,
    http_connections: usize,
    http_rooms: usize,
    binary_clients: usize,
    binary_rate: f64,
}

const FIXED_SHOWN: [&str; 5] = [
    "server_cpu_s_per_m",
    "p50_ms",
    "p99_ms",
    "delivered_per_s",
    "loadgen_cpu_pct",
];
const MAX_SHOWN: [&str; 4] = [
    "delivered_per_s",
    "server_cpu_pct",
    "loadgen_cpu_pct",
    "server_cpu_s_per_m",
];

fn suite(sizes: &Sizes) -> Vec<Scenario> {
    let fixed = |rooms, clients_per_room, per_second, payload| {
        Workload::Traffic(Traffic {
            rooms,
            clients_per_room,
            rate: Rate::Fixed { per_second },
            payload,
        })
    };
    let max = |rooms, clients_per_room, in_flight_per_room| {
        Workload::Traffic(Traffic {
            rooms,
            clients_per_room,
            rate: Rate::Max { in_flight_per_room },
            payload: Payload::Text,
        })
    };
    let fanout_deliveries = sizes.fanout_rate * (sizes.fanout_clients - 1) as f64;
    let rooms_deliveries = sizes.rooms_rate * (sizes.room_clients - 1) as f64;
    let binary_deliveries = sizes.binary_rate * (sizes.binary_clients - 1) as f64;
    vec![
        Scenario {
            name: "fanout-fixed",
            title: format!(
                "fan-out, fixed rate: 1 room × {} clients, {} msg/s in ({} deliveries/s), 64 B text",
                sizes.fanout_clients,
                sizes.fanout_rate,
                thousands(fanout_deliveries)
            ),
            workload: fixed(1, sizes.fanout_clients, sizes.fanout_rate, Payload::Text),
            shown: FIXED_SHOWN.to_vec(),
            targets: vec![
                ("server_cpu_s_per_m", Target::RatioAtMost(0.8)),
                ("p99_ms", Target::RatioAtMost(1.0)),
            ],
        },
        Scenario {
            name: "rooms-fixed",
            title: format!(
                "many rooms, fixed rate: {} rooms × {} clients, {} msg/s in ({} deliveries/s), 64 B text",
                sizes.rooms,
                sizes.room_clients,
                sizes.rooms_rate,
                thousands(rooms_deliveries)
            ),
            workload: fixed(
                sizes.rooms,
                sizes.room_clients,
                sizes.rooms_rate,
                Payload::Text,
            ),
            shown: FIXED_SHOWN.to_vec(),
            targets: vec![
                ("server_cpu_s_per_m", Target::RatioAtMost(0.8)),
                ("p99_ms", Target::RatioAtMost(1.0)),
            ],
        },
        Scenario {
            name: "fanout-max",
            title: format!(
                "fan-out, max rate: 1 room × {} clients, {} messages in flight",
                sizes.fanout_clients, sizes.fanout_in_flight
            ),
            workload: max(1, sizes.fanout_clients, sizes.fanout_in_flight),
            shown: MAX_SHOWN.to_vec(),
            targets: vec![("delivered_per_s", Target::RatioAtLeast(1.0))],
        },
        Scenario {
            name: "rooms-max",
            title: format!(
                "many rooms, max rate: {} rooms × {} clients, {} messages in flight per room",
                sizes.rooms, sizes.room_clients, sizes.rooms_in_flight
            ),
            workload: max(sizes.rooms, sizes.room_clients, sizes.rooms_in_flight),
            shown: MAX_SHOWN.to_vec(),
            targets: vec![("delivered_per_s", Target::RatioAtLeast(1.0))],
        },
        Scenario {
            name: "connect",
            title: format!(
                "connection setup: {} clients ({} rooms × {}), then idle",
                sizes.setup_rooms * sizes.setup_per_room,
                sizes.setup_rooms,
                sizes.setup_per_room
            ),
            workload: Workload::Setup {
                rooms: sizes.setup_rooms,
                per_room: sizes.setup_per_room,
            },
            shown: vec![
                "setups_per_s",
                "server_cpu_us_per_setup",
                "loadgen_cpu_pct",
                "baseline_rss_mib",
                "idle_rss_delta_mib",
            ],
            targets: vec![
                ("setups_per_s", Target::RatioAtLeast(1.0)),
                ("idle_rss_delta_mib", Target::AtMost(8.0)),
            ],
        },
        Scenario {
            name: "http",
            title: format!(
                "HTTP on_request: {} keep-alive clients, GET on {} rooms",
                sizes.http_connections, sizes.http_rooms
            ),
            workload: Workload::Http {
                connections: sizes.http_connections,
                rooms: sizes.http_rooms,
            },
            shown: vec![
                "requests_per_s",
                "server_cpu_us_per_request",
                "server_cpu_pct",
                "loadgen_cpu_pct",
            ],
            targets: vec![],
        },
        Scenario {
            name: "binary-fixed",
            title: format!(
                "binary 1 KiB, fixed rate: 1 room × {} clients, {} msg/s in ({} deliveries/s)",
                sizes.binary_clients,
                sizes.binary_rate,
                thousands(binary_deliveries)
            ),
            workload: fixed(
                1,
                sizes.binary_clients,
                sizes.binary_rate,
                Payload::Binary1K,
            ),
            shown: FIXED_SHOWN.to_vec(),
            targets: vec![("p99_ms", Target::RatioAtMost(1.0))],
        },
    ]
}

fn thousands(value: f64) -> String {
    let digits = format!("{:.0}", value);
    let mut out = String::new();
    for (index, digit) in digits.chars().enumerate() {
        if index > 0 && (digits.len() - index) % 3 == 0 {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

/// Where the servers and the load generator run.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Pinning {
    pub server_core: usize,
    pub loadgen_core: usize,
}

/// How to run a suite.
#[derive(Debug, Clone)]
pub struct Options {
    /// The bench executable, run as `<exe> serve <kind>` for each server.
    pub exe: PathBuf,
    pub repetitions: usize,
    pub timing: Timing,
    /// How long 1,000 connected clients sit idle before the server's memory is read.
    pub settle: Duration,
    /// `None`: nothing is pinned.
    pub pinning: Option<Pinning>,
    /// The nice value the bench (and so the servers it starts) runs at, if it set one.
    pub nice: Option<i32>,
}

/// The figures of one run of one server, by name.
pub type Figures = Vec<(&'static str, f64)>;

/// One run of one server.
#[derive(Debug, Clone, Serialize)]
pub struct Run {
    pub figures: Figures,
    /// Why the run is not a clean server figure (e.g. the load generator was saturated).
    pub flags: Vec<String>,
}

impl Run {
    pub fn figure(&self, key: &str) -> Option<f64> {
        self.figures
            .iter()
            .find(|(name, _)| *name == key)
            .map(|(_, value)| *value)
    }
}

/// Every run of one scenario.
#[derive(Debug, Clone)]
pub struct ScenarioResult {
    pub scenario: Scenario,
    pub partykit: Vec<Result<Run, String>>,
    pub reference: Vec<Result<Run, String>>,
}

impl ScenarioResult {
    pub fn runs(&self, kind: ServerKind) -> &[Result<Run, String>] {
        match kind {
            ServerKind::Partykit => &self.partykit,
            ServerKind::Reference => &self.reference,
        }
    }
}

/// A load generator at or above this share of its core limits what it measures.
pub const SATURATED_PCT: f64 = 90.0;

/// Runs `scenario` `options.repetitions` times against each server, alternating which
/// goes first. `progress` hears one line per run.
pub async fn run_scenario(
    scenario: &Scenario,
    options: &Options,
    progress: &mut dyn FnMut(String),
) -> ScenarioResult {
    let mut result = ScenarioResult {
        scenario: scenario.clone(),
        partykit: Vec::new(),
        reference: Vec::new(),
    };
    for repetition in 0..options.repetitions {
        let order = if repetition % 2 == 0 {
            [ServerKind::Reference, ServerKind::Partykit]
        } else {
            [ServerKind::Partykit, ServerKind::Reference]
        };
        for kind in order {
            let run = run_once(scenario, kind, options).await;
            progress(describe(scenario, kind, repetition, options, &run));
            match kind {
                ServerKind::Partykit => result.partykit.push(run),
                ServerKind::Reference => result.reference.push(run),
            }
        }
    }
    result
}

fn describe(
    scenario: &Scenario,
    kind: ServerKind,
    repetition: usize,
    options: &Options,
    run: &Result<Run, String>,
) -> String {
    let head = format!(
        "{} {}/{} {kind:>9}:",
        scenario.name,
        repetition + 1,
        options.repetitions
    );
    match run {
        Err(error) => format!("{head} FAILED: {error}"),
        Ok(run) => {
            let mut line = head;
            for key in &scenario.shown {
                if let Some(value) = run.figure(key) {
                    line.push_str(&format!(" {key}={value:.3}"));
                }
            }
            for flag in &run.flags {
                line.push_str(&format!(" [{flag}]"));
            }
            line
        }
    }
}

async fn run_once(scenario: &Scenario, kind: ServerKind, options: &Options) -> Result<Run, String> {
    let core = options.pinning.map(|pinning| pinning.server_core);
    let server = ServerProcess::start(&options.exe, kind, core)?;
    if let Some(core) = core {
        let allowed = measure::allowed_cpus(server.pid())?;
        if measure::parse_cpu_list(&allowed) != [core] {
            return Err(format!(
                "the {kind} server runs on cores {allowed}, not {core}"
            ));
        }
    }
    match scenario.workload {
        Workload::Traffic(traffic) => {
            let outcome = load::run_traffic(&server, traffic, options.timing).await?;
            Ok(traffic_run(traffic, &outcome))
        }
        Workload::Setup { rooms, per_room } => {
            let outcome = load::run_setup(&server, rooms, per_room, options.settle).await?;
            Ok(setup_run(&outcome))
        }
        Workload::Http { connections, rooms } => {
            let outcome = load::run_http(&server, connections, rooms, options.timing).await?;
            Ok(http_run(&outcome))
        }
    }
}

const MIB: f64 = 1024.0 * 1024.0;

fn pct(cpu: Duration, window: Duration) -> f64 {
    100.0 * cpu.as_secs_f64() / window.as_secs_f64()
}

fn traffic_run(traffic: Traffic, outcome: &load::TrafficOutcome) -> Run {
    let seconds = outcome.window.as_secs_f64();
    let delivered = outcome.delivered as f64;
    let expected = outcome.sent as f64 * (traffic.clients_per_room - 1) as f64;
    let mut figures: Figures = vec![
        ("sent_per_s", outcome.sent as f64 / seconds),
        ("delivered_per_s", delivered / seconds),
        ("delivered_share", delivered / expected.max(1.0)),
        (
            "server_cpu_s_per_m",
            outcome.server_cpu.as_secs_f64() * 1e6 / delivered.max(1.0),
        ),
        ("server_cpu_pct", pct(outcome.server_cpu, outcome.window)),
        ("loadgen_cpu_pct", pct(outcome.loadgen_cpu, outcome.window)),
    ];
    if !outcome.latencies_ns.is_empty() {
        let ms = |p| measure::percentile(&outcome.latencies_ns, p) as f64 / 1e6;
        figures.push(("p50_ms", ms(50.0)));
        figures.push(("p99_ms", ms(99.0)));
        figures.push(("max_ms", ms(100.0)));
    }
    let mut run = Run {
        figures,
        flags: Vec::new(),
    };
    if let Rate::Fixed { per_second } = traffic.rate {
        let achieved = run.figure("sent_per_s").unwrap_or(0.0);
        if achieved < 0.95 * per_second {
            run.flags.push(format!(
                "sent {achieved:.0} msg/s, below the {per_second} asked"
            ));
        }
    }
    if run.figure("delivered_share").unwrap_or(0.0) < 0.99 {
        run.flags.push(format!(
            "only {:.1}% of deliveries arrived",
            100.0 * run.figure("delivered_share").unwrap_or(0.0)
        ));
    }
    flag_saturation(&mut run);
    run
}

fn setup_run(outcome: &load::SetupOutcome) -> Run {
    let seconds = outcome.elapsed.as_secs_f64();
    let clients = outcome.clients as f64;
    let figures: Figures = vec![
        ("setups_per_s", clients / seconds),
        (
            "server_cpu_us_per_setup",
            outcome.server_cpu.as_secs_f64() * 1e6 / clients,
        ),
        ("server_cpu_pct", pct(outcome.server_cpu, outcome.elapsed)),
        ("loadgen_cpu_pct", pct(outcome.loadgen_cpu, outcome.elapsed)),
        ("baseline_rss_mib", outcome.baseline_rss as f64 / MIB),
        ("idle_rss_mib", outcome.idle_rss as f64 / MIB),
        (
            "idle_rss_delta_mib",
            (outcome.idle_rss as f64 - outcome.baseline_rss as f64) / MIB,
        ),
        ("connections_seen", outcome.connections_seen as f64),
    ];
    let mut run = Run {
        figures,
        flags: Vec::new(),
    };
    if outcome.connections_seen != outcome.clients {
        run.flags.push(format!(
            "the server counts {} connections of {}",
            outcome.connections_seen, outcome.clients
        ));
    }
    flag_saturation(&mut run);
    run
}

fn http_run(outcome: &load::HttpOutcome) -> Run {
    let requests = outcome.requests as f64;
    let figures: Figures = vec![
        ("requests_per_s", requests / outcome.window.as_secs_f64()),
        (
            "server_cpu_us_per_request",
            outcome.server_cpu.as_secs_f64() * 1e6 / requests.max(1.0),
        ),
        ("server_cpu_pct", pct(outcome.server_cpu, outcome.window)),
        ("loadgen_cpu_pct", pct(outcome.loadgen_cpu, outcome.window)),
    ];
    let mut run = Run {
        figures,
        flags: Vec::new(),
    };
    flag_saturation(&mut run);
    run
}

/// The flag that says a run measured the load generator rather than the server.
pub const LOADGEN_LIMITED: &str = "load generator saturated";

fn flag_saturation(run: &mut Run) {
    if run.figure("loadgen_cpu_pct").unwrap_or(0.0) >= SATURATED_PCT {
        run.flags.push(LOADGEN_LIMITED.to_owned());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_separators() {
        assert_eq!(thousands(49_500.0), "49,500");
        assert_eq!(thousands(999.0), "999");
        assert_eq!(thousands(1_000_000.0), "1,000,000");
    }

    #[test]
    fn suites_have_unique_names_and_shown_targets() {
        for suite in [default_suite(), tiny_suite()] {
            let mut names: Vec<_> = suite.iter().map(|scenario| scenario.name).collect();
            names.sort_unstable();
            names.dedup();
            assert_eq!(names.len(), 7);
            for scenario in &suite {
                for (key, _) in &scenario.targets {
                    assert!(scenario.shown.contains(key), "{key} is not shown");
                }
            }
        }
    }
}
