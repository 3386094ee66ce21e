//! Runs the storage benchmark at a tiny size (1 and 2 rooms, 20 puts each scenario), so
//! that it does not rot. It asserts only that the puts went through and were counted: no
//! timing thresholds.

use std::process::Command;

use serde_json::Value;

#[test]
fn the_storage_benchmark_runs() {
    let output = Command::new(env!("CARGO_BIN_EXE_storage"))
        .args(["--rooms", "1,2", "--puts", "20", "--reps", "1"])
        .args(["--baseline-secs", "0.1", "--dir"])
        .arg(std::env::temp_dir())
        .output()
        .expect("run the storage benchmark");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("| 2 rooms | 20 |"), "{stdout}");

    let scenarios: Vec<Value> = stdout
        .lines()
        .filter(|line| line.starts_with('{'))
        .map(|line| serde_json::from_str(line).expect("a JSON line"))
        .filter(|line: &Value| line.get("scenario").is_some())
        .collect();
    assert_eq!(scenarios.len(), 2, "{stdout}");
    for (scenario, rooms) in scenarios.iter().zip([1, 2]) {
        assert_eq!(scenario["rooms"], rooms, "{scenario}");
        assert_eq!(scenario["puts"], 20, "{scenario}");
        assert_eq!(scenario["errors"], Value::Array(Vec::new()), "{scenario}");
        assert!(scenario["puts_per_s"].as_f64().unwrap() > 0.0, "{scenario}");
        assert!(
            scenario["baseline_puts_per_s"].as_f64().unwrap() > 0.0,
            "{scenario}"
        );
        // Every put reached the backend, in at least one room commit and transaction.
        assert!(
            scenario["room_commits"].as_u64().unwrap() >= 1,
            "{scenario}"
        );
        assert!(
            scenario["sqlite_transactions"].as_u64().unwrap() >= 1,
            "{scenario}"
        );
    }
}
