//! Node scripts of `tests/js` run against the tests' servers: the real npm clients
//! (`js_clients.rs`) and headless Chromium driven by `playwright-core` (`browser.rs`).
//!
//! `tests/js` is installed with `npm ci` the first time a test asks for Node (and again
//! when a pinned package is missing from `node_modules` or at another version). Without
//! Node, [`node_ready`] says why the test is skipped, except on CI (`CI` set), where that
//! fails the test.

use std::path::{Path, PathBuf};
use std::process::{Command as StdCommand, Stdio};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::mpsc;

/// The longest a script may run before the test kills it (each script also has its own,
/// shorter, deadline).
pub const SCRIPT_TIMEOUT: Duration = Duration::from_secs(60);
/// The longest the test waits for a line from a script, or for a server to start or stop.
pub const STEP_TIMEOUT: Duration = Duration::from_secs(20);

/// `tests/js`, where the scripts and their `node_modules` are.
pub fn js_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("js")
}

/// Whether Node is usable; installs `tests/js` once per test binary. Without Node, each
/// test that asks says it is skipped; on CI (`CI` set), a missing Node fails instead.
pub fn node_ready() -> bool {
    static READY: OnceLock<bool> = OnceLock::new();
    let ready = *READY.get_or_init(|| {
        if StdCommand::new("node").arg("--version").output().is_err() {
            assert!(
                std::env::var_os("CI").is_none(),
                "`node` is not installed, and CI must run the Node tests: install Node.js 20+"
            );
            return false;
        }
        if !installed() {
            let status = StdCommand::new("npm")
                .args(["ci", "--no-audit", "--no-fund"])
                .current_dir(js_dir())
                .status()
                .expect("`npm` must be installed beside `node` to install tests/js");
            assert!(status.success(), "`npm ci` failed in tests/js");
            assert!(
                installed(),
                "`npm ci` did not install the pinned packages of tests/js"
            );
        }
        true
    });
    if !ready {
        eprintln!("SKIPPED: `node` is not installed; the Node tests need Node.js 20+");
    }
    ready
}

/// Whether every dependency of `tests/js/package.json` is in `node_modules` at its
/// pinned version.
fn installed() -> bool {
    let manifest = std::fs::read_to_string(js_dir().join("package.json"))
        .expect("cannot read tests/js/package.json");
    let manifest: Value = serde_json::from_str(&manifest).expect("tests/js/package.json is JSON");
    let dependencies = manifest["dependencies"]
        .as_object()
        .expect("tests/js/package.json has dependencies");
    dependencies.iter().all(|(name, pinned)| {
        let path = js_dir()
            .join("node_modules")
            .join(name)
            .join("package.json");
        let Ok(package) = std::fs::read_to_string(path) else {
            return false;
        };
        let package: Value = serde_json::from_str(&package).unwrap_or_default();
        package["version"] == *pinned
    })
}

/// A running `node <script> <args…>` in `tests/js`, its stdout read line by line. Killed
/// if dropped.
#[derive(Debug)]
pub struct NodeScript {
    name: String,
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::UnboundedReceiver<String>,
    transcript: Arc<Mutex<String>>,
}

impl NodeScript {
    /// Starts the script; what it prints is echoed to the test's output, prefixed with
    /// its name.
    pub fn start(script: &str, args: &[&str]) -> Self {
        let mut child = Command::new("node")
            .arg(script)
            .args(args)
            .current_dir(js_dir())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("cannot run node");
        let transcript = Arc::new(Mutex::new(String::new()));
        let (sender, lines) = mpsc::unbounded_channel();
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().expect("piped stderr");
        let log = Arc::clone(&transcript);
        let script_name = script.to_owned();
        tokio::spawn(async move {
            let mut stdout = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = stdout.next_line().await {
                println!("[{script_name}] {line}");
                append(&log, &line);
                let _ = sender.send(line);
            }
        });
        let log = Arc::clone(&transcript);
        let script_name = script.to_owned();
        tokio::spawn(async move {
            let mut stderr = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = stderr.next_line().await {
                eprintln!("[{script_name}] {line}");
                append(&log, &line);
            }
        });
        Self {
            name: script.to_owned(),
            stdin: child.stdin.take(),
            child,
            lines,
            transcript,
        }
    }

    /// Waits (bounded) until the script prints `wanted` on a line of its own.
    pub async fn expect_line(&mut self, wanted: &str) {
        let waiting = async {
            while let Some(line) = self.lines.recv().await {
                if line.trim() == wanted {
                    return true;
                }
            }
            false
        };
        match tokio::time::timeout(STEP_TIMEOUT, waiting).await {
            Ok(true) => {}
            Ok(false) => {
                self.fail(&format!("exited before printing {wanted:?}"))
                    .await
            }
            Err(_) => {
                let message = format!("printed no {wanted:?} within {STEP_TIMEOUT:?}");
                self.fail(&message).await;
            }
        }
    }

    /// Writes `line` to the script's stdin.
    pub async fn say(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin is open");
        if let Err(error) = stdin.write_all(format!("{line}\n").as_bytes()).await {
            let message = format!("cannot be told {line:?}: {error}");
            self.fail(&message).await;
        }
        let _ = stdin.flush().await;
    }

    /// Waits (bounded by [`SCRIPT_TIMEOUT`]) for the script to exit, and fails the test
    /// unless it exited 0.
    pub async fn finish(mut self) {
        match tokio::time::timeout(SCRIPT_TIMEOUT, self.child.wait()).await {
            Ok(Ok(status)) if status.success() => {}
            Ok(Ok(status)) => self.fail(&format!("failed ({status})")).await,
            Ok(Err(error)) => self.fail(&format!("cannot be waited for: {error}")).await,
            Err(_) => {
                let message = format!("did not finish within {SCRIPT_TIMEOUT:?}");
                self.fail(&message).await;
            }
        }
    }

    async fn fail(&mut self, what: &str) -> ! {
        let _ = self.child.start_kill();
        let _ = tokio::time::timeout(Duration::from_secs(5), self.child.wait()).await;
        // Let the readers drain what the script printed last.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let transcript = self
            .transcript
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        panic!("{} {what}; its output:\n{transcript}", self.name);
    }
}

fn append(transcript: &Mutex<String>, line: &str) {
    let mut transcript = transcript.lock().unwrap_or_else(PoisonError::into_inner);
    transcript.push_str(line);
    transcript.push('\n');
}
