//! The real npm clients against real servers, under Node.
//!
//! `tests/js` is installed with `npm ci` (from its lockfile) the first time these tests
//! run. Without Node on the machine the tests say so and skip; CI installs Node.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use partykit_examples::chat::Chat;
use partykit_runtime::Server;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

fn js_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("js")
}

/// Whether Node is usable; installs `tests/js` once per test binary.
fn node_ready() -> bool {
    static READY: OnceLock<bool> = OnceLock::new();
    *READY.get_or_init(|| {
        if Command::new("node").arg("--version").output().is_err() {
            eprintln!("SKIPPED: `node` is not installed; the npm client tests need Node.js 18+");
            return false;
        }
        if !js_dir().join("node_modules").exists() {
            let status = Command::new("npm")
                .args(["ci", "--no-audit", "--no-fund"])
                .current_dir(js_dir())
                .status()
                .expect("`npm` must be installed beside `node` to install tests/js");
            assert!(status.success(), "`npm ci` failed in tests/js");
        }
        true
    })
}

/// Serves `server` on an ephemeral port, runs `node <script> <host:port> <args…>` and
/// asserts that it exits 0.
async fn run_script(server: Server, script: &str, args: &[&str]) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let host = listener.local_addr().unwrap().to_string();
    let (stop, stopped) = oneshot::channel::<()>();
    let serving = tokio::spawn(server.serve(listener, async {
        let _ = stopped.await;
    }));

    let mut command = tokio::process::Command::new("node");
    command
        .arg(script)
        .arg(&host)
        .args(args)
        .current_dir(js_dir());
    let output = command.output().await.expect("cannot run node");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    eprintln!("{stderr}");
    assert!(
        output.status.success(),
        "{script} failed ({}):\n{stdout}\n{stderr}",
        output.status
    );

    let _ = stop.send(());
    serving.await.unwrap().unwrap();
}

#[tokio::test]
async fn partysocket_chat_current_and_legacy_urls_and_fetch() {
    if !node_ready() {
        return;
    }
    run_script(
        Server::new().in_memory().party::<Chat>(),
        "chat.mjs",
        &["js-room"],
    )
    .await;
}
