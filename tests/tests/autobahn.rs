//! Autobahn|Testsuite's fuzzing client (sections 1–10: framing, pings, reserved bits and
//! opcodes, fragmentation, UTF-8, close handling, limits and performance of large
//! messages; 12 and 13 need compression, which the server does not offer) against the
//! `echo` example's server. Every case must end OK, NON-STRICT or INFORMATIONAL, and
//! every close must be clean. The run and its NON-STRICT cases are described in
//! docs/PROTOCOL.md.
//!
//! `wstest` is found at `$WSTEST`, else at the pyenv Python 2.7 install that `.ci/run`
//! makes. Without it the test is skipped with a message, unless `CI` is set (`CI=true`).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use partykit_tests::{ServerProcess, TempDir};
use serde_json::{Value, json};
use tokio::process::Command;

const DEFAULT_WSTEST: &str = "/root/.pyenv/versions/2.7.18/bin/wstest";
/// A hang guard only: the run takes about a minute and a half with a debug server.
const RUN_LIMIT: Duration = Duration::from_secs(20 * 60);

fn wstest() -> Option<PathBuf> {
    let path = std::env::var_os("WSTEST")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_WSTEST));
    if path.is_file() {
        return Some(path);
    }
    // As for the npm client tests: on CI (`CI` set, e.g. `CI=true`) the run is required.
    assert!(
        std::env::var_os("CI").is_none(),
        "wstest not found at {} (set WSTEST, or install autobahntestsuite as .ci/run does)",
        path.display()
    );
    eprintln!(
        "skipping the Autobahn run: wstest not found at {} (set WSTEST, or see docs/PROTOCOL.md)",
        path.display()
    );
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn autobahn_fuzzing_client_sections_1_to_10() {
    let Some(wstest) = wstest() else { return };
    let dir = TempDir::new("autobahn");
    // The `echo` example's server (partykit_examples::echo::server), in a process of its
    // own, built in the test profile: debug is fast enough (the whole run takes about 90 s).
    let server =
        ServerProcess::start(env!("CARGO_BIN_EXE_party-server"), "echo", &dir.database()).await;
    let report = dir.path().join("report");
    let spec = json!({
        "outdir": report,
        "servers": [{
            "agent": "partykit-rs",
            "url": format!("ws://{}/parties/main/autobahn", server.addr()),
        }],
        "cases": ["1.*", "2.*", "3.*", "4.*", "5.*", "6.*", "7.*", "8.*", "9.*", "10.*"],
        "exclude-cases": ["12.*", "13.*"],
        "exclude-agent-cases": {},
    });
    let spec_path = dir.write("fuzzingclient.json", spec.to_string());
    let log_path = dir.path().join("wstest.log");
    let log = std::fs::File::create(&log_path).expect("cannot create the wstest log");
    let started = Instant::now();
    let mut child = Command::new(&wstest)
        .args(["-m", "fuzzingclient", "-s"])
        .arg(&spec_path)
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log handle"))
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|error| panic!("cannot run {}: {error}", wstest.display()));
    let status = tokio::time::timeout(RUN_LIMIT, child.wait())
        .await
        .unwrap_or_else(|_| panic!("wstest still running after {RUN_LIMIT:?}"))
        .expect("cannot wait for wstest");
    let took = started.elapsed();
    let log = std::fs::read_to_string(&log_path).unwrap_or_default();
    assert!(
        status.success(),
        "wstest exited with {status}; its output:\n{log}"
    );
    drop(server);

    let index: Value = serde_json::from_str(
        &std::fs::read_to_string(report.join("index.json")).expect("no index.json"),
    )
    .expect("index.json is not JSON");
    let cases = index["partykit-rs"]
        .as_object()
        .expect("no results for the agent in index.json");
    let mut ids: Vec<&String> = cases.keys().collect();
    ids.sort_by_key(|id| {
        id.split('.')
            .map(|part| part.parse::<u32>().unwrap_or(0))
            .collect::<Vec<_>>()
    });

    let mut behaviours: BTreeMap<String, usize> = BTreeMap::new();
    let mut close_behaviours: BTreeMap<String, usize> = BTreeMap::new();
    let mut failed = Vec::new();
    let mut notes = Vec::new();
    for id in &ids {
        let case = &cases[id.as_str()];
        let behaviour = case["behavior"].as_str().unwrap_or("?").to_owned();
        let close = case["behaviorClose"].as_str().unwrap_or("?").to_owned();
        *behaviours.entry(behaviour.clone()).or_default() += 1;
        *close_behaviours.entry(close.clone()).or_default() += 1;
        let detail = || {
            let file = case["reportfile"].as_str().unwrap_or_default();
            let case_report: Value = std::fs::read_to_string(report.join(file))
                .ok()
                .and_then(|text| serde_json::from_str(&text).ok())
                .unwrap_or(Value::Null);
            format!(
                "{id}: {behaviour}/{close}: {} (close: {})",
                case_report["result"].as_str().unwrap_or("?"),
                case_report["resultClose"].as_str().unwrap_or("?")
            )
        };
        let bad = |b: &str| {
            matches!(
                b,
                "FAILED" | "UNCLEAN" | "WRONG CODE" | "UNIMPLEMENTED" | "?"
            )
        };
        if bad(&behaviour) || bad(&close) {
            failed.push(detail());
        } else if behaviour != "OK" || close != "OK" {
            notes.push(detail());
        }
    }
    println!("Autobahn sections 1-10: {} cases in {took:.0?}", ids.len());
    println!("  behaviour: {behaviours:?}");
    println!("  close behaviour: {close_behaviours:?}");
    for note in &notes {
        println!("  {note}");
    }
    // Every section ran (the suite has no section 8), and nothing outside them.
    for section in [1, 2, 3, 4, 5, 6, 7, 9, 10] {
        assert!(
            ids.iter()
                .any(|id| id.split('.').next() == Some(&section.to_string())),
            "no case of section {section} ran"
        );
    }
    assert!(
        ids.iter()
            .all(|id| id.split('.').next().and_then(|s| s.parse::<u32>().ok()) <= Some(10)),
        "cases outside sections 1-10 ran"
    );
    assert!(
        failed.is_empty(),
        "{} case(s) not passed:\n{}",
        failed.len(),
        failed.join("\n")
    );
}
