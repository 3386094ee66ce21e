//! partykit-rs's benchmark: the `chat` example's party against a plain axum server with
//! the same room semantics ([`reference`]), each in its own pinned process, driven by a
//! WebSocket load generator ([`load`]) in the same run. `docs/PERFORMANCE.md` describes
//! the method and holds the latest figures.
//!
//! | module | role |
//! |---|---|
//! | [`servers`] | the server processes: `bench serve <kind>` (child) and its handle (parent) |
//! | [`reference`] | the plain-axum broadcast server |
//! | [`load`] | WebSocket and HTTP clients: fixed and max rates, latency, bulk connects |
//! | [`scenarios`] | the suite, repetitions, and the figures of each run |
//! | [`measure`] | `/proc` readings (CPU time, RSS, affinity), pinning, percentiles |
//! | [`callgrind`] | instructions per delivery under `valgrind --tool=callgrind`, both servers |
//! | [`report`] | medians, ratios, verdicts; the Markdown table and the JSON lines |

pub mod callgrind;
pub mod load;
pub mod measure;
pub mod reference;
pub mod report;
pub mod scenarios;
pub mod servers;

use scenarios::{Options, Scenario, ScenarioResult};

/// Runs every scenario of `suite` on a current-thread runtime (the load generator's),
/// reporting each run to `progress`.
pub fn run_suite(
    suite: &[Scenario],
    options: &Options,
    mut progress: impl FnMut(String),
) -> Vec<ScenarioResult> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("cannot build the load generator's runtime");
    runtime.block_on(async {
        let mut results = Vec::with_capacity(suite.len());
        for scenario in suite {
            results.push(scenarios::run_scenario(scenario, options, &mut progress).await);
        }
        results
    })
}
