//! Runs the soak benchmark in its seconds-long `--quick` mode (short server limits, few
//! clients), so that it does not rot. It asserts outcomes only: normal clients were
//! served throughout, and every hostile kind was cut off or refused; no memory or time
//! thresholds.

use std::process::Command;

use serde_json::Value;

#[test]
fn the_soak_benchmark_runs() {
    let output = Command::new(env!("CARGO_BIN_EXE_soak"))
        .arg("--quick")
        .output()
        .expect("run the soak benchmark");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("normal clients were served throughout"),
        "{stdout}"
    );
    let line: Value = stdout
        .lines()
        .rev()
        .find(|line| line.starts_with('{'))
        .map(|line| serde_json::from_str(line).expect("a JSON line"))
        .unwrap_or_else(|| panic!("no JSON line: {stdout}"));
    assert_eq!(line["served_throughout"], true, "{line}");
    assert_eq!(line["probes_failed"], 0, "{line}");
    assert!(line["probes_ok"].as_u64().unwrap() > 0, "{line}");
    assert!(line["churn_sessions"].as_u64().unwrap() > 0, "{line}");
    assert!(line["slowloris_cut"].as_u64().unwrap() > 0, "{line}");
    assert!(
        line["body_answers"]["408"].as_u64().unwrap_or(0) > 0,
        "{line}"
    );
    assert!(
        line["head_answers"]["431"].as_u64().unwrap_or(0) > 0,
        "{line}"
    );
    assert!(line["time_to_413_ms"].is_number(), "{line}");
    assert!(line["rss_peak"].as_u64().unwrap() > 0, "{line}");
    assert!(!line["samples"].as_array().unwrap().is_empty(), "{line}");
}
