//! Runs the hibernation benchmark at a tiny size (5 rooms, a short `hibernate_after`), so
//! that it does not rot. It asserts only that the rooms hibernated (or did not) as their
//! party says: no memory thresholds.

use std::process::Command;

use serde_json::Value;

#[test]
fn the_hibernation_benchmark_runs() {
    let output = Command::new(env!("CARGO_BIN_EXE_hibernation"))
        .args(["--rooms", "5", "--state-kib", "4", "--waves", "2"])
        .args(["--hibernate-after-ms", "200", "--idle-ms", "700"])
        .output()
        .expect("run the hibernation benchmark");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("hibernation saves"), "{stdout}");

    let lines: Vec<Value> = stdout
        .lines()
        .filter(|line| line.starts_with('{'))
        .map(|line| serde_json::from_str(line).expect("a JSON line"))
        .collect();
    assert_eq!(lines.len(), 2, "one line per arrival pattern: {stdout}");
    for line in &lines {
        assert_eq!(line["rooms"], 5, "{line}");
        assert_eq!(line["awake"]["live_values_idle"], 5, "{line}");
        assert_eq!(line["hibernate"]["live_values_idle"], 0, "{line}");
        assert_eq!(line["hibernate"]["live_values_after_wake"], 1, "{line}");
        assert!(
            line["awake"]["rss_idle_bytes"].as_u64().unwrap() > 0,
            "{line}"
        );
    }
}
