//! The results: medians per figure, partykit ÷ reference, verdicts on the targets, as a
//! Markdown table for people and one JSON line per scenario for scripts.

use std::fmt::Write as _;

use serde_json::{Map, Value, json};

use crate::measure::{self, Machine};
use crate::scenarios::{LOADGEN_LIMITED, Options, Run, ScenarioResult, Target};
use crate::servers::ServerKind;

/// What a figure means, for the table.
fn label(key: &str) -> &'static str {
    match key {
        "server_cpu_s_per_m" => "server CPU s per 1M deliveries",
        "p50_ms" => "p50 latency (ms)",
        "p99_ms" => "p99 latency (ms)",
        "max_ms" => "max latency (ms)",
        "sent_per_s" => "messages in per s",
        "delivered_per_s" => "deliveries per s",
        "delivered_share" => "share of deliveries that arrived",
        "server_cpu_pct" => "server CPU % of a core",
        "loadgen_cpu_pct" => "load generator CPU % of a core",
        "setups_per_s" => "connections set up per s",
        "server_cpu_us_per_setup" => "server CPU µs per connection set up",
        "baseline_rss_mib" => "server RSS before connecting (MiB)",
        "idle_rss_mib" => "server RSS with clients idle (MiB)",
        "idle_rss_delta_mib" => "server RSS growth, clients idle (MiB)",
        "connections_seen" => "connections the server counts",
        "requests_per_s" => "requests per s",
        "server_cpu_us_per_request" => "server CPU µs per request",
        _ => "?",
    }
}

/// How a target came out.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    Met,
    NotMet,
    /// The figure cannot be judged (why).
    NotApplicable(String),
}

impl Verdict {
    fn text(&self) -> String {
        match self {
            Self::Met => "met".to_owned(),
            Self::NotMet => "NOT met".to_owned(),
            Self::NotApplicable(why) => format!("n/a: {why}"),
        }
    }
}

/// The median of figure `key` over the successful runs.
pub fn median(runs: &[Result<Run, String>], key: &str) -> Option<f64> {
    let values: Vec<f64> = runs
        .iter()
        .filter_map(|run| run.as_ref().ok()?.figure(key))
        .collect();
    let median = measure::median(&values);
    (!median.is_nan()).then_some(median)
}

fn ratio(result: &ScenarioResult, key: &str) -> Option<f64> {
    let ours = median(&result.partykit, key)?;
    let theirs = median(&result.reference, key)?;
    (theirs != 0.0).then(|| ours / theirs)
}

fn any_flagged(runs: &[Result<Run, String>], flag: &str) -> bool {
    runs.iter().any(|run| {
        run.as_ref()
            .is_ok_and(|run| run.flags.iter().any(|f| f == flag))
    })
}

/// Judges `target` for figure `key`.
pub fn verdict(result: &ScenarioResult, key: &str, target: Target) -> Verdict {
    let ours = median(&result.partykit, key);
    let Some(ours) = ours else {
        return Verdict::NotApplicable("no successful run".to_owned());
    };
    let met = match target {
        Target::AtMost(limit) => ours <= limit,
        Target::RatioAtMost(limit) => match ratio(result, key) {
            Some(ratio) => ratio <= limit,
            None => return Verdict::NotApplicable("no reference figure".to_owned()),
        },
        Target::RatioAtLeast(limit) => {
            let limited = ServerKind::ALL
                .into_iter()
                .filter(|&kind| any_flagged(result.runs(kind), LOADGEN_LIMITED))
                .map(ServerKind::name)
                .collect::<Vec<_>>();
            let Some(ratio) = ratio(result, key) else {
                return Verdict::NotApplicable("no reference figure".to_owned());
            };
            if ratio >= limit {
                true
            } else if !limited.is_empty() {
                return Verdict::NotApplicable(format!(
                    "load generator saturated ({})",
                    limited.join(", ")
                ));
            } else {
                false
            }
        }
    };
    if met { Verdict::Met } else { Verdict::NotMet }
}

fn target_text(target: Target) -> String {
    match target {
        Target::RatioAtMost(limit) => format!("ratio ≤ {limit:.2}"),
        Target::RatioAtLeast(limit) => format!("ratio ≥ {limit:.2}"),
        Target::AtMost(limit) => format!("partykit ≤ {limit}"),
    }
}

fn number(value: Option<f64>) -> String {
    match value {
        None => "–".to_owned(),
        Some(value) if value.abs() >= 1000.0 => format!("{value:.0}"),
        Some(value) if value.abs() >= 10.0 => format!("{value:.1}"),
        Some(value) if value.abs() >= 1.0 => format!("{value:.2}"),
        Some(value) => format!("{value:.3}"),
    }
}

/// The report's heading: what ran, where, how.
pub fn heading(machine: &Machine, options: &Options) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "partykit-rs benchmark, {}: {} repetition(s) per server, alternating, medians; \
         {:.1} s measured after {:.1} s warm-up",
        machine.date,
        options.repetitions,
        options.timing.window.as_secs_f64(),
        options.timing.warmup.as_secs_f64()
    );
    let _ = writeln!(
        out,
        "machine: {}; CPUs {}; {}; Linux {}; {}",
        machine.cpu_model, machine.online_cpus, machine.memory, machine.kernel, machine.rustc
    );
    let _ = writeln!(
        out,
        "servers: one process each, Tokio multi-thread runtime with 1 worker; {}; {}",
        match options.pinning {
            Some(pinning) => format!(
                "server pinned to core {}, load generator (current-thread runtime) to core {}",
                pinning.server_core, pinning.loadgen_core
            ),
            None => "NOT pinned".to_owned(),
        },
        match options.nice {
            Some(nice) => format!("bench and servers at nice {nice} (process and autogroup)"),
            None => "default priority".to_owned(),
        }
    );
    let _ = writeln!(out, "load average before the run: {}", machine.load_average);
    out
}

/// The Markdown table, followed by the notes on flagged and failed runs.
pub fn table(results: &[ScenarioResult]) -> String {
    let mut out = String::new();
    out.push_str("| scenario | figure | partykit | reference | ratio | target |\n");
    out.push_str("|---|---|---:|---:|---:|---|\n");
    let mut notes = Vec::new();
    for result in results {
        let scenario = &result.scenario;
        for (row, key) in scenario.shown.iter().enumerate() {
            let name = if row == 0 {
                format!("**{}**", scenario.name)
            } else {
                String::new()
            };
            let target = scenario
                .targets
                .iter()
                .find(|(target_key, _)| target_key == key)
                .map(|&(_, target)| {
                    format!(
                        "{} {}",
                        target_text(target),
                        verdict(result, key, target).text()
                    )
                })
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "| {name} | {} | {} | {} | {} | {target} |",
                label(key),
                number(median(&result.partykit, key)),
                number(median(&result.reference, key)),
                ratio(result, key).map_or("–".to_owned(), |ratio| format!("{ratio:.2}")),
            );
        }
        for kind in ServerKind::ALL {
            let runs = result.runs(kind);
            let mut flags: Vec<(&str, usize)> = Vec::new();
            for run in runs {
                match run {
                    Ok(run) => {
                        for flag in &run.flags {
                            match flags.iter_mut().find(|(seen, _)| seen == flag) {
                                Some((_, count)) => *count += 1,
                                None => flags.push((flag, 1)),
                            }
                        }
                    }
                    Err(error) => {
                        notes.push(format!("{} {kind}: run failed: {error}", scenario.name))
                    }
                }
            }
            for (flag, count) in flags {
                notes.push(format!(
                    "{} {kind}: {flag} ({count}/{} runs)",
                    scenario.name,
                    runs.len()
                ));
            }
        }
    }
    out.push('\n');
    for result in results {
        let _ = writeln!(
            out,
            "- `{}`: {}",
            result.scenario.name, result.scenario.title
        );
    }
    if !notes.is_empty() {
        out.push_str("\nNotes:\n");
        for note in notes {
            let _ = writeln!(out, "- {note}");
        }
    }
    out
}

/// One JSON object per scenario, for scripts.
pub fn json_line(result: &ScenarioResult, options: &Options) -> Value {
    let server = |kind: ServerKind| {
        let runs = result.runs(kind);
        let mut medians = Map::new();
        if let Some(Ok(first)) = runs.iter().find(|run| run.is_ok()) {
            for (key, _) in &first.figures {
                medians.insert((*key).to_owned(), json!(median(runs, key)));
            }
        }
        let flags: Vec<&String> = runs
            .iter()
            .filter_map(|run| run.as_ref().ok())
            .flat_map(|run| &run.flags)
            .collect();
        let errors: Vec<&String> = runs.iter().filter_map(|run| run.as_ref().err()).collect();
        let all_runs: Vec<Value> = runs
            .iter()
            .map(|run| match run {
                Ok(run) => json!(
                    run.figures
                        .iter()
                        .map(|(k, v)| ((*k).to_owned(), json!(v)))
                        .collect::<Map<_, _>>()
                ),
                Err(error) => json!({ "error": error }),
            })
            .collect();
        json!({ "median": medians, "flags": flags, "errors": errors, "runs": all_runs })
    };
    let ratios: Map<String, Value> = result
        .scenario
        .shown
        .iter()
        .map(|key| ((*key).to_owned(), json!(ratio(result, key))))
        .collect();
    let targets: Vec<Value> = result
        .scenario
        .targets
        .iter()
        .map(|&(key, target)| {
            json!({
                "figure": key,
                "target": target,
                "verdict": verdict(result, key, target).text(),
            })
        })
        .collect();
    json!({
        "scenario": result.scenario.name,
        "title": result.scenario.title,
        "workload": result.scenario.workload,
        "repetitions": options.repetitions,
        "window_s": options.timing.window.as_secs_f64(),
        "partykit": server(ServerKind::Partykit),
        "reference": server(ServerKind::Reference),
        "ratio": ratios,
        "targets": targets,
    })
}
