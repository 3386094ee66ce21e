//! The example pages in a real browser: headless Chromium (Debian's `chromium` package,
//! `/usr/bin/chromium`) driven by npm's `playwright-core` from the scripts
//! `tests/js/browser-*.mjs`, against the `cursors` and `yjs` examples' servers.
//!
//! - `cursors`: two pages of one room; the mouse moved in each shows its cursor in the
//!   other at the same position (±2 px), and a closed page's cursor goes away.
//! - `yjs`: two pages of one document; what is typed in each appears in the other's
//!   editor, and the server's text is the same.
//! - the inspection dashboard (`/__partykit/`) of a server with an admin token: a wrong
//!   token is refused; with the right one the page lists a room and its connections (one
//!   id is markup, shown as text), charts the messages a client sends, shows the room's
//!   storage, and closes a connection.
//!
//! Every page may only load from the server under test: a request to any other origin
//! (a CDN) is aborted and fails the test, as do errors in the page, so the pages are
//! proven to work offline. Each test writes a screenshot of each page to
//! `$CARGO_TARGET_TMPDIR/browser/<example>/` (`target/tmp/browser/…` by default):
//! `cursors-a.png`, `cursors-b.png`, `yjs-a.png`, `yjs-b.png`, `dashboard/dashboard.png`
//! (or, for the dashboard, the path in `PARTYKIT_DASHBOARD_SCREENSHOT`:
//! `PARTYKIT_DASHBOARD_SCREENSHOT=docs/dashboard.png` refreshes the docs' picture).
//!
//! One test needs neither Node nor a browser: the yjs page and its vendored modules are
//! served, as JavaScript, with their licences.
//!
//! Without Node or without Chromium every browser test says `SKIPPED` on stderr and returns,
//! except on CI (`CI` set), where that fails; `.ci/run` installs both. Each script is
//! bounded (its own deadline, and [`partykit_tests::node::SCRIPT_TIMEOUT`]); every wait
//! in it waits for an element or a value, not for time.

#![cfg(unix)]

use std::path::{Path, PathBuf};

use partykit_examples::cursors::{self, Cursors};
use partykit_examples::yjs::{self, Document};
use partykit_runtime::{Connection, Message, Result, Room, Server, party};
use partykit_tests::TestServer;
use partykit_tests::node::{NodeScript, node_ready};

/// The Debian package's Chromium.
const CHROMIUM: &str = "/usr/bin/chromium";

/// Whether Node and Chromium are there (see the module docs for what happens if not).
fn browser_ready() -> bool {
    if !node_ready() {
        return false;
    }
    if Path::new(CHROMIUM).is_file() {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{CHROMIUM} is missing, and CI must run the browser tests: apt-get install chromium chromium-driver"
    );
    eprintln!("SKIPPED: {CHROMIUM} is missing; the browser tests need Debian's chromium package");
    false
}

/// `$CARGO_TARGET_TMPDIR/browser/<example>`, emptied.
fn screenshots(example: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("browser")
        .join(example);
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// Serves `server` and runs `node <script> <host:port> <room> <chromium> <dir>` to success,
/// then checks that it wrote the screenshots `<dir>/<name>.png`.
async fn run_in_browser(server: Server, script: &str, example: &str, shots: &[&str]) {
    let server = TestServer::start(server).await;
    let host = server.addr().to_string();
    let dir = screenshots(example);
    let dir_arg = dir.to_str().expect("a UTF-8 target directory");
    let room = format!("browser-{example}");
    NodeScript::start(script, &[&host, &room, CHROMIUM, dir_arg])
        .finish()
        .await;
    for shot in shots {
        assert_screenshot(&dir.join(format!("{shot}.png")));
    }
}

/// Checks that a script wrote the PNG `path`, and says where it is.
fn assert_screenshot(path: &Path) {
    let bytes = std::fs::read(path)
        .unwrap_or_else(|error| panic!("no screenshot {}: {error}", path.display()));
    assert!(
        bytes.starts_with(b"\x89PNG\r\n\x1a\n"),
        "{} is not a PNG",
        path.display()
    );
    println!("screenshot: {}", path.display());
}

/// The cursors example's server, as its binary serves it.
fn cursors_server() -> Server {
    Server::new()
        .in_memory()
        .no_env_file()
        .party::<Cursors>()
        .serve_dir(cursors::assets_dir())
}

/// The yjs example's server, as its binary serves it but with the document in memory
/// instead of `.partykit/`.
fn yjs_server() -> Server {
    Server::new()
        .in_memory()
        .no_env_file()
        .party::<Document>()
        .serve_dir(yjs::assets_dir())
}

#[tokio::test]
async fn the_yjs_page_and_its_vendored_modules_are_served() {
    let server = TestServer::start(yjs_server()).await;
    let page = server.get("/?room=notes").await;
    assert_eq!(page.status, 200, "{}", page.text());
    assert_eq!(
        page.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    let html = page.text();
    assert!(
        html.contains(r#"import * as Y from "./vendor/yjs.js";"#),
        "{html}"
    );
    assert!(
        html.contains(r#"import YPartyKitProvider from "./vendor/y-partykit-provider.js";"#),
        "{html}"
    );
    assert!(
        !html.contains("esm.sh"),
        "the page still uses a CDN: {html}"
    );

    for module in ["yjs.js", "y-partykit-provider.js", "shared.js"] {
        let response = server.get(&format!("/vendor/{module}")).await;
        assert_eq!(response.status, 200, "{module}");
        assert_eq!(
            response.header("content-type"),
            Some("text/javascript; charset=utf-8"),
            "{module}"
        );
        let text = response.text();
        assert!(text.starts_with("// Generated by examples/yjs/vendor/build.mjs"));
        // One yjs: both entry modules import it from the shared module.
        if module != "shared.js" {
            assert!(text.contains(r#"from "./shared.js";"#), "{module}");
        }
    }
    let licences = server.get("/vendor/LICENSES.txt").await;
    assert_eq!(licences.status, 200);
    for package in [
        "yjs@13.6.33 (MIT)",
        "y-partykit@0.0.33 (ISC)",
        "lib0@",
        "y-protocols@",
    ] {
        assert!(licences.text().contains(package), "no licence of {package}");
    }
}

#[tokio::test]
async fn two_cursors_pages_see_each_others_cursor() {
    if !browser_ready() {
        return;
    }
    run_in_browser(
        cursors_server(),
        "browser-cursors.mjs",
        "cursors",
        &["cursors-a", "cursors-b"],
    )
    .await;
}

#[tokio::test]
async fn two_yjs_pages_see_each_others_typing() {
    if !browser_ready() {
        return;
    }
    run_in_browser(yjs_server(), "browser-yjs.mjs", "yjs", &["yjs-a", "yjs-b"]).await;
}

// ---------------------------------------------------------------------------------------
// The inspection dashboard

/// The admin token of the dashboard test's server.
const ADMIN_TOKEN: &str = "dashboard-test-token";
/// The dashboard test's room: a raw id with a percent sign, which the page must send back
/// as it is (the server never decodes a room id).
const DASHBOARD_ROOM: &str = "dash%20room";
/// The dashboard test clients' connection ids (their `_pk`): a plain one, and markup with
/// a script that the page must show as text (percent-encoded in the upgrade's query).
const WATCHER: &str = "watcher";
const MARKUP: &str = "<img src=x onerror=window.__xss=1>";
const MARKUP_QUERY: &str = "%3Cimg%20src%3Dx%20onerror%3Dwindow.__xss%3D1%3E";
/// The bursts of messages the client sends while the dashboard watches, each after the
/// chart was redrawn: uneven, so the chart has a shape.
const BURSTS: [u64; 4] = [10, 30, 5, 20];

/// The dashboard test's party: every message comes back to its sender, followed by the
/// room's message count, which it keeps in storage under `messages`. So the room has a key
/// to show, and twice as many messages go out as come in (two lines the chart tells apart).
#[party(name = "board")]
struct Board {
    room: Room,
}

#[party]
impl Board {
    fn new(room: Room) -> Self {
        Board { room }
    }

    async fn on_message(&mut self, message: Message, sender: &Connection) -> Result<()> {
        let storage = self.room.storage();
        let count = storage.get::<u64>("messages").await?.unwrap_or(0) + 1;
        storage.put("messages", &count).await?;
        // A closed sender has nobody to answer.
        let _ = sender.send(message);
        let _ = sender.send(count.to_string());
        Ok(())
    }
}

/// Where the dashboard test writes its screenshot, as (directory, name without `.png`):
/// `$PARTYKIT_DASHBOARD_SCREENSHOT` if set (a relative path is taken from the workspace
/// root), else `dashboard.png` in `$CARGO_TARGET_TMPDIR/browser/dashboard`.
fn dashboard_screenshot() -> (PathBuf, String) {
    let Some(path) = std::env::var_os("PARTYKIT_DASHBOARD_SCREENSHOT") else {
        return (screenshots("dashboard"), "dashboard".to_owned());
    };
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate is in the workspace");
    let path = workspace.join(path);
    let name = path
        .file_name()
        .and_then(|name| name.to_str())
        .and_then(|name| name.strip_suffix(".png"))
        .unwrap_or_else(|| {
            panic!(
                "PARTYKIT_DASHBOARD_SCREENSHOT must name a .png file, not {}",
                path.display()
            )
        })
        .to_owned();
    let dir = path.parent().expect("a file has a parent").to_path_buf();
    (dir, name)
}

#[tokio::test]
async fn the_dashboard_shows_a_room_its_traffic_and_closes_a_connection() {
    if !browser_ready() {
        return;
    }
    let server = TestServer::start(
        Server::new()
            .in_memory()
            .no_env_file()
            .admin_token(ADMIN_TOKEN)
            .party::<Board>(),
    )
    .await;
    // The room exists while its clients are connected.
    let mut client = server
        .connect(&format!("/parties/board/{DASHBOARD_ROOM}?_pk={WATCHER}"))
        .await;
    let _markup = server
        .connect(&format!(
            "/parties/board/{DASHBOARD_ROOM}?_pk={MARKUP_QUERY}"
        ))
        .await;
    let host = server.addr().to_string();
    let (dir, name) = dashboard_screenshot();
    let dir_arg = dir.to_str().expect("a UTF-8 screenshot directory");
    let messages: u64 = BURSTS.iter().sum();
    let mut script = NodeScript::start(
        "browser-dashboard.mjs",
        &[
            &host,
            ADMIN_TOKEN,
            "board",
            DASHBOARD_ROOM,
            WATCHER,
            MARKUP,
            &BURSTS.len().to_string(),
            &messages.to_string(),
            CHROMIUM,
            dir_arg,
            &name,
        ],
    );

    // Traffic while the page charts it, a burst each time the script asks; every message
    // answered before the next.
    let mut sent = 0;
    for burst in BURSTS {
        script.expect_line("burst").await;
        for _ in 0..burst {
            sent += 1;
            let text = format!("message {sent}");
            client.send_text(text.as_str()).await;
            assert_eq!(client.recv_text().await, text);
            assert_eq!(client.recv_text().await, sent.to_string());
        }
        script.say("sent").await;
    }

    // The page's Close button closes the client's socket with the dashboard's reason.
    script.expect_line("close-clicked").await;
    assert_eq!(
        client.closed().await,
        (1000, "closed from the dashboard".to_owned())
    );
    script.finish().await;
    assert_screenshot(&dir.join(format!("{name}.png")));
}
