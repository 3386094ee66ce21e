//! Runs every scenario at a tiny size against both servers, so the harness does not rot.
//! It asserts only that traffic flowed: no timing thresholds.

use std::path::PathBuf;
use std::time::Duration;

use bench::load::Timing;
use bench::scenarios::{self, Options, Run, Workload};
use bench::servers::ServerKind;

#[test]
fn every_scenario_runs_against_both_servers() {
    let options = Options {
        exe: PathBuf::from(env!("CARGO_BIN_EXE_bench")),
        repetitions: 1,
        timing: Timing {
            warmup: Duration::from_millis(100),
            window: Duration::from_millis(200),
        },
        settle: Duration::from_millis(100),
        pinning: None,
        nice: None,
    };
    let suite = scenarios::tiny_suite();
    let results = bench::run_suite(&suite, &options, |line| eprintln!("{line}"));
    assert_eq!(results.len(), suite.len());
    for result in &results {
        for kind in ServerKind::ALL {
            let runs = result.runs(kind);
            assert_eq!(runs.len(), 1, "{} {kind}", result.scenario.name);
            let run: &Run = match &runs[0] {
                Ok(run) => run,
                Err(error) => panic!("{} {kind} failed: {error}", result.scenario.name),
            };
            let figure = |key: &str| {
                run.figure(key)
                    .unwrap_or_else(|| panic!("{} {kind} has no {key}", result.scenario.name))
            };
            match result.scenario.workload {
                Workload::Traffic(_) => {
                    let name = result.scenario.name;
                    assert!(
                        figure("delivered_per_s") > 0.0,
                        "{name} {kind}: nothing delivered"
                    );
                }
                Workload::Setup { rooms, per_room } => {
                    assert_eq!(
                        figure("connections_seen"),
                        (rooms * per_room) as f64,
                        "{kind}"
                    );
                    assert!(figure("setups_per_s") > 0.0, "{kind}");
                }
                Workload::Http { .. } => {
                    assert!(
                        figure("requests_per_s") > 0.0,
                        "{kind}: no request answered"
                    );
                }
            }
        }
    }
    // The report renders whatever came out.
    let table = bench::report::table(&results);
    for scenario in &suite {
        assert!(
            table.contains(scenario.name),
            "{} is not in the table",
            scenario.name
        );
    }
    for result in &results {
        let line = bench::report::json_line(result, &options).to_string();
        assert!(line.starts_with('{') && !line.contains('\n'));
    }
}
