//! Static assets (`Server::serve_dir`, PartyKit's `serve` option) and their place in the
//! dispatch order (asset > `on_fetch` > `/404.html` > `Not found`), over TCP.

use std::path::PathBuf;

use partykit_runtime::{
    FetchLobby, Handlers, IntoResponse, Party, Request, Response, Result, Room, Server, ServerError,
};
use partykit_tests::{HttpResponse, TempDir, TestServer, init_tracing};

// ---------------------------------------------------------------------------------------
// A site on disk

const SECRET: &str = "TOP SECRET outside the site";
const NOT_FOUND_PAGE: &str = "<h1>custom 404</h1>";
const INDEX: &str = "<h1>home</h1>";

/// `root/` holds a secret file and `root/public/` the site, with every kind of file the
/// rules care about.
struct Site {
    root: TempDir,
}

impl Site {
    fn new(with_404: bool) -> Self {
        let root = TempDir::new("site");
        root.write("secret.txt", SECRET);
        let files: &[(&str, &[u8])] = &[
            ("index.html", INDEX.as_bytes()),
            ("style.css", b"body{}"),
            ("app.js", b"console.log(1)"),
            ("module.mjs", b"export {}"),
            ("data.json", b"{\"a\":1}"),
            ("logo.svg", b"<svg/>"),
            ("img.png", b"\x89PNG"),
            ("photo.jpg", b"\xff\xd8"),
            ("anim.gif", b"GIF89a"),
            ("pic.webp", b"RIFF"),
            ("favicon.ico", b"\0\0\x01\0"),
            ("mod.wasm", b"\0asm"),
            ("notes.txt", b"some notes"),
            ("font.woff2", b"wOF2"),
            ("app.js.map", b"{}"),
            ("blob.bin", b"\x01\x02"),
            ("UPPER.HTML", b"upper"),
            ("docs/index.html", b"docs home"),
            ("docs/page.html", b"docs page"),
            ("a b.txt", b"spaced"),
            ("caf\u{e9}.txt", b"accent"),
            ("api/shadowed.txt", b"the file wins"),
            ("parties/main/index.html", b"not a party path"),
            ("parties/main/room", b"never served"),
            ("__scheduled__", b"cron wins"),
            (".env", b"SECRET=1"),
            (".git/config", b"[core]"),
            ("docs/.hidden", b"hidden"),
            ("node_modules/pkg/index.js", b"dependency"),
            ("nested/node_modules/x.js", b"dependency"),
        ];
        for (name, contents) in files {
            root.write(&format!("public/{name}"), contents);
        }
        if with_404 {
            root.write("public/404.html", NOT_FOUND_PAGE);
        }
        Self { root }
    }

    fn public(&self) -> PathBuf {
        self.root.path().join("public")
    }
}

// ---------------------------------------------------------------------------------------
// The parties

/// The main party: `on_fetch` answers `/api/…`, `on_request` describes the room request.
struct Main {
    room: Room,
}

impl Party for Main {
    const HANDLERS: Handlers = Handlers {
        on_fetch: true,
        on_cron: true,
        ..Handlers::DEFAULT
    };

    fn new(room: Room) -> Self {
        Main { room }
    }

    async fn on_request(&mut self, request: Request) -> Result<Response> {
        Ok(format!("room {} {}", self.room.id(), request.path()).into_response())
    }

    async fn on_fetch(request: Request, _lobby: &FetchLobby) -> Result<Option<Response>> {
        if request.path().starts_with("/api/") {
            let body = format!("on_fetch {} {}", request.method(), request.path());
            return Ok(Some(body.into_response()));
        }
        Ok(None)
    }

    async fn on_cron(
        _cron: partykit_runtime::Cron,
        _lobby: &partykit_runtime::CronLobby,
    ) -> Result<()> {
        Ok(())
    }
}

/// A party that is not `main`: without a main party there is no `on_fetch`.
struct Other;

impl Party for Other {
    const NAME: &'static str = "other";

    fn new(_room: Room) -> Self {
        Other
    }
}

fn server(site: &Site) -> Server {
    init_tracing();
    Server::new()
        .in_memory()
        .no_env_file()
        .party::<Main>()
        .serve_dir(site.public())
}

async fn start(site: &Site) -> TestServer {
    TestServer::start(server(site)).await
}

#[track_caller]
fn assert_file(response: &HttpResponse, body: &str, content_type: &str) {
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.text(), body);
    assert_eq!(response.header("content-type"), Some(content_type));
    let length = body.len().to_string();
    assert_eq!(response.header("content-length"), Some(length.as_str()));
}

#[track_caller]
fn assert_not_found_page(response: &HttpResponse) {
    assert_eq!(response.status, 404, "{}", response.text());
    assert_eq!(response.text(), NOT_FOUND_PAGE);
    assert!(!response.text().contains(SECRET));
}

// ---------------------------------------------------------------------------------------
// Files and content types

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_are_served_with_their_content_type() {
    let site = Site::new(true);
    let server = start(&site).await;
    let cases = [
        ("/style.css", "body{}", "text/css; charset=utf-8"),
        (
            "/app.js",
            "console.log(1)",
            "text/javascript; charset=utf-8",
        ),
        ("/module.mjs", "export {}", "text/javascript; charset=utf-8"),
        ("/data.json", "{\"a\":1}", "application/json"),
        ("/logo.svg", "<svg/>", "image/svg+xml"),
        ("/notes.txt", "some notes", "text/plain; charset=utf-8"),
        ("/app.js.map", "{}", "application/json"),
        ("/docs/page.html", "docs page", "text/html; charset=utf-8"),
        // Extensions are case-insensitive.
        ("/UPPER.HTML", "upper", "text/html; charset=utf-8"),
    ];
    for (path, body, content_type) in cases {
        assert_file(&server.get(path).await, body, content_type);
    }
    let binary = [
        ("/img.png", "image/png"),
        ("/photo.jpg", "image/jpeg"),
        ("/anim.gif", "image/gif"),
        ("/pic.webp", "image/webp"),
        ("/favicon.ico", "image/x-icon"),
        ("/mod.wasm", "application/wasm"),
        ("/font.woff2", "font/woff2"),
        ("/blob.bin", "application/octet-stream"),
    ];
    for (path, content_type) in binary {
        let response = server.get(path).await;
        assert_eq!(response.status, 200, "{path}");
        assert_eq!(
            response.header("content-type"),
            Some(content_type),
            "{path}"
        );
        let on_disk = std::fs::read(site.public().join(&path[1..])).unwrap();
        assert_eq!(response.body, on_disk, "{path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trailing_slash_serves_index_html_and_a_bare_directory_is_a_miss() {
    let site = Site::new(true);
    let server = start(&site).await;
    assert_file(&server.get("/").await, INDEX, "text/html; charset=utf-8");
    assert_file(
        &server.get("/docs/").await,
        "docs home",
        "text/html; charset=utf-8",
    );
    // `/docs` is a directory, not a file: a miss, as in PartyKit's manifest.
    assert_not_found_page(&server.get("/docs").await);
    assert_not_found_page(&server.get("/docs/missing/").await);
    // The query string plays no part.
    assert_file(
        &server.get("/?x=1").await,
        INDEX,
        "text/html; charset=utf-8",
    );
    assert_file(
        &server.get("/notes.txt?v=2").await,
        "some notes",
        "text/plain; charset=utf-8",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_path_is_percent_decoded() {
    let site = Site::new(true);
    let server = start(&site).await;
    assert_file(
        &server.get("/a%20b.txt").await,
        "spaced",
        "text/plain; charset=utf-8",
    );
    assert_file(
        &server.get("/caf%C3%A9.txt").await,
        "accent",
        "text/plain; charset=utf-8",
    );
    assert_file(
        &server.get("/%6Eotes.txt").await,
        "some notes",
        "text/plain; charset=utf-8",
    );
    // Malformed or non-UTF-8 encodings are misses, not errors.
    assert_not_found_page(&server.get("/%zz").await);
    assert_not_found_page(&server.get("/caf%E9.txt").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_files_are_streamed_whole() {
    let site = Site::new(true);
    let big: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    site.root.write("public/big.bin", &big);
    let server = start(&site).await;
    let response = server.get("/big.bin").await;
    assert_eq!(response.status, 200);
    assert_eq!(response.header("content-length"), Some("300000"));
    assert!(response.body == big, "the body differs from the file");
}

// ---------------------------------------------------------------------------------------
// Methods and HEAD

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_has_the_headers_without_the_body() {
    let site = Site::new(true);
    let server = start(&site).await;
    let get = server.get("/notes.txt").await;
    let head = server.http("HEAD", "/notes.txt", &[], b"").await;
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
    for name in ["content-type", "content-length", "etag", "last-modified"] {
        assert!(head.header(name).is_some(), "HEAD lacks {name}");
        assert_eq!(head.header(name), get.header(name), "{name}");
    }
    assert_eq!(head.header("content-length"), Some("10"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_get_and_head_are_served() {
    let site = Site::new(true);
    let server = start(&site).await;
    for method in ["POST", "PUT", "DELETE", "PATCH", "OPTIONS"] {
        let response = server.http(method, "/notes.txt", &[], b"").await;
        assert_not_found_page(&response);
        // Other methods fall through to `on_fetch`.
        let response = server.http(method, "/api/shadowed.txt", &[], b"").await;
        assert_eq!(response.status, 200, "{method}");
        assert_eq!(
            response.text(),
            format!("on_fetch {method} /api/shadowed.txt")
        );
    }
}

// ---------------------------------------------------------------------------------------
// Dispatch order

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_asset_shadows_on_fetch_which_shadows_the_404_page() {
    let site = Site::new(true);
    let server = start(&site).await;
    assert_file(
        &server.get("/api/shadowed.txt").await,
        "the file wins",
        "text/plain; charset=utf-8",
    );
    let response = server.get("/api/other").await;
    assert_eq!(response.status, 200);
    assert_eq!(response.text(), "on_fetch GET /api/other");
    // `on_fetch` returned None: the 404 page.
    assert_not_found_page(&server.get("/nothing-here").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_404_page_has_status_404_for_any_method() {
    let site = Site::new(true);
    let server = start(&site).await;
    let response = server.get("/missing.js").await;
    assert_not_found_page(&response);
    assert_eq!(
        response.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    // No validators on a 404.
    assert_eq!(response.header("etag"), None);
    let head = server.http("HEAD", "/missing.js", &[], b"").await;
    assert_eq!(head.status, 404);
    assert!(head.body.is_empty());
    assert_not_found_page(&server.http("POST", "/missing", &[], b"x").await);
    // `/404.html` itself is an ordinary file when asked for.
    assert_file(
        &server.get("/404.html").await,
        NOT_FOUND_PAGE,
        "text/html; charset=utf-8",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_404_page_a_miss_is_not_found() {
    let site = Site::new(false);
    let server = start(&site).await;
    let response = server.get("/missing").await;
    assert_eq!(
        (response.status, response.text().as_str()),
        (404, "Not found")
    );
    assert_file(
        &server.get("/notes.txt").await,
        "some notes",
        "text/plain; charset=utf-8",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn party_paths_never_reach_assets() {
    let site = Site::new(true);
    let server = start(&site).await;
    // `parties/main/room` exists on disk, but the path addresses a room.
    let response = server.get("/parties/main/room").await;
    assert_eq!(response.status, 200);
    assert_eq!(response.text(), "room room /parties/main/room");
    let response = server.get("/party/room").await;
    assert_eq!(response.text(), "room room /party/room");
    // An unknown party is still "Party x not found", not the 404 page.
    let response = server.get("/parties/nope/room").await;
    assert_eq!(
        (response.status, response.text().as_str()),
        (404, "Party nope not found")
    );
    // An empty room id is not a party path: assets apply.
    assert_file(
        &server.get("/parties/main/").await,
        "not a party path",
        "text/html; charset=utf-8",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cron_trigger_wins_over_a_file() {
    let site = Site::new(true);
    let server = TestServer::start(server(&site).scheduled_token("t")).await;
    let response = server
        .http(
            "GET",
            "/__scheduled__?cron=x",
            &[("authorization", "Bearer t")],
            b"",
        )
        .await;
    // `x` is not declared: the trigger answers, not the file.
    assert_eq!(response.status, 404, "{}", response.text());
    assert_eq!(response.text(), "No cron schedule named \"x\" is declared");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_scheduled_token_the_file_is_served() {
    let site = Site::new(true);
    let server = start(&site).await;
    assert_file(
        &server.get("/__scheduled__?cron=x").await,
        "cron wins",
        "application/octet-stream",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn assets_work_without_a_main_party() {
    let site = Site::new(true);
    let server = TestServer::start(
        Server::new()
            .in_memory()
            .no_env_file()
            .party::<Other>()
            .serve_dir(site.public()),
    )
    .await;
    assert_file(&server.get("/").await, INDEX, "text/html; charset=utf-8");
    assert_not_found_page(&server.get("/api/other").await);
}

// ---------------------------------------------------------------------------------------
// Single-page apps

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_page_app_gets_index_html_for_unmatched_navigations() {
    let site = Site::new(true);
    let server = TestServer::start(server(&site).single_page_app(true)).await;
    let navigate = [("Sec-Fetch-Mode", "navigate")];
    let response = server
        .http("GET", "/some/client/route", &navigate, b"")
        .await;
    assert_file(&response, INDEX, "text/html; charset=utf-8");
    // HEAD too.
    let response = server
        .http("HEAD", "/some/client/route", &navigate, b"")
        .await;
    assert_eq!(response.status, 200);
    assert!(response.body.is_empty());
    // Files still win.
    let response = server.http("GET", "/notes.txt", &navigate, b"").await;
    assert_eq!(response.text(), "some notes");
    // Not a navigation (a script, a fetch): a miss.
    assert_not_found_page(&server.get("/some/client/route").await);
    let cors = [("Sec-Fetch-Mode", "cors")];
    assert_not_found_page(&server.http("GET", "/missing.js", &cors, b"").await);
    // Not GET/HEAD: a miss.
    assert_not_found_page(&server.http("POST", "/some/route", &navigate, b"").await);
    // As in PartyKit, the fallback comes before `on_fetch`.
    let response = server.http("GET", "/api/other", &navigate, b"").await;
    assert_eq!(response.text(), INDEX);
    // An excluded path is unmatched like any other: the navigation gets index.html,
    // never the file.
    let response = server.http("GET", "/.env", &navigate, b"").await;
    assert_eq!(response.text(), INDEX);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_single_page_app_a_navigation_misses() {
    let site = Site::new(true);
    let server = start(&site).await;
    let navigate = [("Sec-Fetch-Mode", "navigate")];
    assert_not_found_page(
        &server
            .http("GET", "/some/client/route", &navigate, b"")
            .await,
    );
    let server = TestServer::start(server_with_spa_off(&site)).await;
    assert_not_found_page(
        &server
            .http("GET", "/some/client/route", &navigate, b"")
            .await,
    );
}

fn server_with_spa_off(site: &Site) -> Server {
    server(site).single_page_app(true).single_page_app(false)
}

// ---------------------------------------------------------------------------------------
// Caching

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etags_and_dates_answer_conditional_requests() {
    let site = Site::new(true);
    let server = start(&site).await;
    let first = server.get("/notes.txt").await;
    let etag = first.header("etag").expect("an ETag").to_owned();
    let modified = first
        .header("last-modified")
        .expect("Last-Modified")
        .to_owned();
    assert!(etag.starts_with('"') && etag.ends_with('"'), "{etag}");
    assert!(
        modified.ends_with(" GMT") && modified.len() == 29,
        "{modified}"
    );
    // The same file gives the same validators.
    let again = server.get("/notes.txt").await;
    assert_eq!(again.header("etag"), Some(etag.as_str()));

    let status = |headers: Vec<(&'static str, String)>| {
        let server = &server;
        async move {
            let headers: Vec<(&str, &str)> = headers
                .iter()
                .map(|(name, value)| (*name, value.as_str()))
                .collect();
            server.http("GET", "/notes.txt", &headers, b"").await
        }
    };
    let not_modified = status(vec![("If-None-Match", etag.clone())]).await;
    assert_eq!(not_modified.status, 304);
    assert!(not_modified.body.is_empty());
    assert_eq!(not_modified.header("etag"), Some(etag.as_str()));
    assert_eq!(
        not_modified.header("last-modified"),
        Some(modified.as_str())
    );

    for matching in [
        format!("W/{etag}"),
        format!("\"other\", {etag}"),
        "*".to_owned(),
    ] {
        let response = status(vec![("If-None-Match", matching.clone())]).await;
        assert_eq!(response.status, 304, "If-None-Match: {matching}");
    }
    let response = status(vec![("If-None-Match", "\"other\"".to_owned())]).await;
    assert_eq!(response.status, 200);
    assert_eq!(response.text(), "some notes");

    let response = status(vec![("If-Modified-Since", modified.clone())]).await;
    assert_eq!(response.status, 304);
    let response = status(vec![(
        "If-Modified-Since",
        "Thu, 01 Jan 1970 00:00:00 GMT".to_owned(),
    )])
    .await;
    assert_eq!(response.status, 200);
    let response = status(vec![("If-Modified-Since", "not a date".to_owned())]).await;
    assert_eq!(response.status, 200);
    // If-None-Match decides when both are present.
    let response = status(vec![
        ("If-None-Match", "\"other\"".to_owned()),
        ("If-Modified-Since", modified.clone()),
    ])
    .await;
    assert_eq!(response.status, 200);
    // HEAD revalidates too.
    let head = server
        .http(
            "HEAD",
            "/notes.txt",
            &[("If-None-Match", etag.as_str())],
            b"",
        )
        .await;
    assert_eq!(head.status, 304);

    // A changed file has a new ETag.
    site.root.write("public/notes.txt", "changed notes, longer");
    let response = status(vec![("If-None-Match", etag.clone())]).await;
    assert_eq!(response.status, 200);
    assert_eq!(response.text(), "changed notes, longer");
    assert_ne!(response.header("etag"), Some(etag.as_str()));
}

// ---------------------------------------------------------------------------------------
// What is never served

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dot_files_and_node_modules_are_never_served() {
    let site = Site::new(true);
    let server = start(&site).await;
    for path in [
        "/.env",
        "/%2Eenv",
        "/.git/config",
        "/.git/",
        "/docs/.hidden",
        "/node_modules/pkg/index.js",
        "/nested/node_modules/x.js",
        "/node_modules/pkg/",
    ] {
        let response = server.get(path).await;
        assert_not_found_page(&response);
        assert!(!response.text().contains("SECRET=1"), "{path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paths_cannot_escape_the_directory() {
    let site = Site::new(true);
    let server = start(&site).await;
    for path in [
        "/../secret.txt",
        "/docs/../../secret.txt",
        "/%2e%2e/secret.txt",
        "/%2E%2E/secret.txt",
        "/docs/%2e%2e/%2e%2e/secret.txt",
        "/%2e%2e%2fsecret.txt",
        "/docs/..%2f..%2fsecret.txt",
        "/docs%2f..%2f..%2fsecret.txt",
        "/..%5csecret.txt",
        "/docs/..%5C..%5Csecret.txt",
        "/%5C..%5Csecret.txt",
        "/./notes.txt",
        "//notes.txt",
        "/docs//page.html",
        "/notes.txt%00.html",
    ] {
        let response = server.get(path).await;
        assert_not_found_page(&response);
    }
    // The raw forms a client should never send: refused by the HTTP parser or missed,
    // but never the secret.
    for path in ["/..\\secret.txt", "/docs\\..\\..\\secret.txt"] {
        let response = server.get(path).await;
        assert_ne!(response.status, 200, "{path}");
        assert!(!response.text().contains(SECRET), "{path}");
    }
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn symlinks_are_followed_only_inside_the_directory() {
    use std::os::unix::fs::symlink;

    let site = Site::new(true);
    let public = site.public();
    symlink(site.root.path().join("secret.txt"), public.join("leak.txt")).unwrap();
    symlink(site.root.path(), public.join("up")).unwrap();
    symlink("/etc", public.join("etc")).unwrap();
    symlink(public.join("notes.txt"), public.join("alias.txt")).unwrap();
    symlink(public.join("docs"), public.join("manual")).unwrap();
    symlink(public.join(".env"), public.join("env.txt")).unwrap();
    symlink(public.join("node_modules/pkg"), public.join("pkg")).unwrap();
    let server = start(&site).await;
    for path in [
        "/leak.txt",
        "/up/secret.txt",
        "/etc/hostname",
        "/etc/passwd",
        // Inside the directory, but excluded once resolved.
        "/env.txt",
        "/pkg/index.js",
    ] {
        let response = server.get(path).await;
        assert_not_found_page(&response);
        assert!(!response.text().contains("SECRET=1"), "{path}");
    }
    // Links that stay inside, to servable files, work. What counts is where the file
    // really is: out through `up` and back in is inside.
    assert_file(
        &server.get("/up/public/notes.txt").await,
        "some notes",
        "text/plain; charset=utf-8",
    );
    assert_file(
        &server.get("/alias.txt").await,
        "some notes",
        "text/plain; charset=utf-8",
    );
    assert_file(
        &server.get("/manual/page.html").await,
        "docs page",
        "text/html; charset=utf-8",
    );
    assert_file(
        &server.get("/manual/").await,
        "docs home",
        "text/html; charset=utf-8",
    );
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_symlinked_directory_is_served_from_its_target() {
    use std::os::unix::fs::symlink;

    let site = Site::new(true);
    let link = site.root.path().join("public-link");
    symlink(site.public(), &link).unwrap();
    let server = TestServer::start(server(&site).serve_dir(&link)).await;
    assert_file(
        &server.get("/notes.txt").await,
        "some notes",
        "text/plain; charset=utf-8",
    );
    let response = server.get("/../secret.txt").await;
    assert_not_found_page(&response);
}

// ---------------------------------------------------------------------------------------
// Startup

#[tokio::test]
async fn a_missing_or_non_directory_path_refuses_to_start() {
    let site = Site::new(true);
    let missing = site.root.path().join("nope");
    let error = Server::new()
        .in_memory()
        .no_env_file()
        .serve_dir(&missing)
        .router()
        .await
        .expect_err("a missing directory");
    assert!(matches!(error, ServerError::Assets { ref path, .. } if *path == missing));
    let message = error.to_string();
    assert!(
        message.contains("cannot serve static assets from"),
        "{message}"
    );
    assert!(message.contains("nope"), "{message}");

    let file = site.root.path().join("secret.txt");
    let error = Server::new()
        .in_memory()
        .no_env_file()
        .serve_dir(&file)
        .router()
        .await
        .expect_err("a file");
    assert!(matches!(error, ServerError::Assets { .. }), "{error}");
}
