//! Static assets: PartyKit's `serve` option, from a directory on disk.
//!
//! The request path is percent-decoded segment by segment and looked up below the
//! directory. PartyKit looked paths up in a manifest of the directory's files (no dot-files,
//! no `node_modules`); here the file system is asked on every request, so the rules that
//! made the manifest safe are checked explicitly: no `.`/`..`/dot segments, no
//! `node_modules`, no encoded separators, and the resolved file (after symlinks) must
//! still be inside the directory.

use std::fmt::Write as _;
use std::io;
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::response::Response;
use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use tokio::fs::File;
use tokio::io::{AsyncRead, AsyncReadExt};

use super::{Server, ServerError};
use crate::Request;

/// How much of a file is read at a time.
const CHUNK: usize = 64 * 1024;

/// What the builder collected.
#[derive(Debug, Default)]
pub(super) struct Config {
    pub(super) dir: Option<PathBuf>,
    pub(super) single_page_app: bool,
}

impl Server {
    /// Serves the files under `dir` at paths outside the parties, as PartyKit's `serve`
    /// option did.
    ///
    /// - Only `GET` and `HEAD`, and only for paths outside `/parties/…` and `/party/…`.
    /// - A static file wins over `on_fetch`; `/__scheduled__` (with `on_cron`) wins over
    ///   a file. When neither a file nor `on_fetch` answers, `dir/404.html` is sent with
    ///   status 404 (to any method), else 404 `Not found`.
    /// - The path is percent-decoded; a path ending in `/` gets `index.html` (`/` is
    ///   `/index.html`). `/docs` without the slash does not serve `docs/index.html`: as
    ///   in PartyKit it is a miss (a directory is not a file), which falls through to
    ///   `on_fetch` and 404.
    /// - Never served: dot-files and anything under a dot-directory (`/.env`,
    ///   `/.git/config`), anything under `node_modules`, paths with `..`, `.`, empty
    ///   segments or an encoded `/` or `\` (`%2F`, `%5C`), malformed percent-encoding,
    ///   and files whose real location (after symlinks) is outside `dir`. All of these are
    ///   misses, not errors.
    /// - Responses carry `Content-Type` (from the extension: html, css, js/mjs, json, svg,
    ///   png, jpg, gif, webp, avif, ico, wasm, txt, woff/woff2, map, …; otherwise
    ///   `application/octet-stream`), `Content-Length`, an `ETag` made of the file's size
    ///   and modification time, and `Last-Modified`. `If-None-Match` (or, without it,
    ///   `If-Modified-Since`) answers 304 when the file has not changed. `HEAD` gets the
    ///   headers without the body. No `Cache-Control` is set: browsers revalidate with
    ///   the `ETag`.
    /// - Files are read from disk on every request (streamed, not held in memory), so
    ///   edits show up without a restart.
    ///
    /// The server refuses to start if `dir` is not a readable directory.
    ///
    /// ```no_run
    /// use partykit_runtime::{party, Server};
    ///
    /// #[party]
    /// #[derive(Default)]
    /// struct Main;
    ///
    /// #[party]
    /// impl Main {}
    ///
    /// #[tokio::main]
    /// async fn main() -> Result<(), partykit_runtime::ServerError> {
    ///     Server::new()
    ///         .party::<Main>()
    ///         .serve_dir("public")
    ///         .single_page_app(true)
    ///         .run()
    ///         .await
    /// }
    /// ```
    #[must_use]
    pub fn serve_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.assets.dir = Some(dir.into());
        self
    }

    /// PartyKit's `serve.singlePageApp`: when on, a `GET`/`HEAD` that matches no file
    /// and carries `Sec-Fetch-Mode: navigate` (a browser loading a page, not a script or
    /// an image) gets `index.html` with status 200, so that client-side routes survive a
    /// reload. Other requests still miss (on to `on_fetch`, then 404). Off by default;
    /// only has an effect with [`serve_dir`](Self::serve_dir).
    #[must_use]
    pub fn single_page_app(mut self, on: bool) -> Self {
        self.assets.single_page_app = on;
        self
    }
}

/// The static assets of a running server.
#[derive(Debug)]
pub(crate) struct Assets {
    /// The directory, canonical (absolute, no symlinks).
    root: PathBuf,
    single_page_app: bool,
}

/// A file that may be served.
struct Found {
    /// The path the client asked for (or `index.html`), for the content type.
    name: PathBuf,
    file: File,
    len: u64,
    modified: Option<SystemTime>,
}

impl Assets {
    /// The assets of `config`, if it names a directory.
    pub(super) fn open(config: Config) -> Result<Option<Self>, ServerError> {
        let Some(dir) = config.dir else {
            return Ok(None);
        };
        let fail = |error| ServerError::Assets {
            path: dir.clone(),
            error,
        };
        let root = std::fs::canonicalize(&dir).map_err(fail)?;
        if !std::fs::metadata(&root).map_err(fail)?.is_dir() {
            return Err(fail(io::Error::new(
                io::ErrorKind::NotADirectory,
                "not a directory",
            )));
        }
        std::fs::read_dir(&root).map_err(fail)?;
        Ok(Some(Self {
            root,
            single_page_app: config.single_page_app,
        }))
    }

    /// The file `request` asks for , or `None` to fall through to `on_fetch`.
    pub(crate) async fn serve(&self, request: &Request) -> Option<Response> {
        let method = request.method();
        if method != Method::GET && method != Method::HEAD {
            return None;
        }
        let found = match self.find(request.path()).await {
            Some(found) => found,
            None if self.single_page_app
                && request.header("sec-fetch-mode") == Some("navigate") =>
            {
                self.find("/index.html").await?
            }
            None => return None,
        };
        let head = method == Method::HEAD;
        Some(respond(
            found,
            StatusCode::OK,
            Some(request.headers()),
            head,
        ))
    }

    /// `404.html` with status 404, if there is one: the answer when nothing else matched,
    /// whatever the method (without the body for `HEAD`).
    pub(crate) async fn not_found(&self, head: bool) -> Option<Response> {
        let found = self.find("/404.html").await?;
        Some(respond(found, StatusCode::NOT_FOUND, None, head))
    }

    /// The file at the raw (percent-encoded) request path, if it may be served.
    async fn find(&self, raw_path: &str) -> Option<Found> {
        let segments = decode_path(raw_path)?;
        let name: PathBuf = segments.iter().collect();
        let real = tokio::fs::canonicalize(self.root.join(&name)).await.ok()?;
        // Symlinks may point anywhere: what is served must really be inside the
        // directory, and not somewhere the rules exclude.
        let inside = real.strip_prefix(&self.root).ok()?;
        let allowed = inside.components().all(|component| match component {
            Component::Normal(part) => part.to_str().is_some_and(is_servable_name),
            _ => false,
        });
        if !allowed {
            return None;
        }
        let file = File::open(&real).await.ok()?;
        let metadata = file.metadata().await.ok()?;
        if !metadata.is_file() {
            return None;
        }
        Some(Found {
            name,
            file,
            len: metadata.len(),
            modified: metadata.modified().ok(),
        })
    }
}

/// The response for `found`: 304 if the `conditions` (the request's headers) match the
/// file, else `status` with the headers, and the body unless `head`. Only a 200 has
/// validators: on a `404.html` they would describe the page, not the missing resource.
fn respond(
    found: Found,
    status: StatusCode,
    conditions: Option<&HeaderMap>,
    head: bool,
) -> Response {
    let mut headers = HeaderMap::new();
    let mut etag = None;
    if status == StatusCode::OK
        && let Some(modified) = found.modified
    {
        let tag = make_etag(found.len, modified);
        if let Ok(value) = HeaderValue::from_str(&tag) {
            headers.insert(header::ETAG, value);
        }
        if let Ok(value) = HeaderValue::from_str(&format_http_date(modified)) {
            headers.insert(header::LAST_MODIFIED, value);
        }
        etag = Some(tag);
    }
    let mut response = Response::new(Body::empty());
    if status == StatusCode::OK
        && let Some(conditions) = conditions
        && not_modified(conditions, etag.as_deref(), found.modified)
    {
        *response.status_mut() = StatusCode::NOT_MODIFIED;
        *response.headers_mut() = headers;
        return response;
    }
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(content_type(&found.name)),
    );
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(found.len));
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    if !head {
        *response.body_mut() = file_body(found.file.take(found.len));
    }
    response
}

/// Whether the client's copy is current: `If-None-Match` decides when present (weak
/// comparison, `*` matches), else `If-Modified-Since` (to the second).
fn not_modified(headers: &HeaderMap, etag: Option<&str>, modified: Option<SystemTime>) -> bool {
    let mut if_none_match = headers.get_all(header::IF_NONE_MATCH).iter().peekable();
    if if_none_match.peek().is_some() {
        let Some(etag) = etag else {
            return false;
        };
        return if_none_match
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .map(str::trim)
            .any(|tag| tag == "*" || opaque(tag) == opaque(etag));
    }
    let since = headers
        .get(header::IF_MODIFIED_SINCE)
        .and_then(|value| value.to_str().ok())
        .and_then(parse_http_date);
    match (since, modified) {
        (Some(since), Some(modified)) => unix_seconds(modified) <= since,
        _ => false,
    }
}

/// An entity tag without its weakness marker.
fn opaque(tag: &str) -> &str {
    tag.strip_prefix("W/").unwrap_or(tag)
}

/// A strong validator from what changes when the file does: its modification time (to
/// the nanosecond, where the file system keeps it) and its size.
fn make_etag(len: u64, modified: SystemTime) -> String {
    let since_epoch = modified.duration_since(UNIX_EPOCH).unwrap_or_default();
    format!("\"{:x}-{:x}\"", since_epoch.as_nanos(), len)
}

/// Reads the file as the body, a chunk at a time.
fn file_body(reader: impl AsyncRead + Send + Unpin + 'static) -> Body {
    let chunks = futures_util::stream::unfold(Some(reader), |state| async move {
        let mut reader = state?;
        let mut chunk = BytesMut::with_capacity(CHUNK);
        match reader.read_buf(&mut chunk).await {
            Ok(0) => None,
            Ok(_) => Some((Ok::<Bytes, io::Error>(chunk.freeze()), Some(reader))),
            Err(error) => Some((Err(error), None)),
        }
    });
    Body::from_stream(chunks)
}

/// The segments of a raw request path, decoded, with `index.html` for a trailing `/`;
/// `None` if the path may not name a servable file.
fn decode_path(raw: &str) -> Option<Vec<String>> {
    let path = raw.strip_prefix('/')?;
    let parts: Vec<&str> = path.split('/').collect();
    let last = parts.len() - 1;
    let mut segments = Vec::with_capacity(parts.len());
    for (at, part) in parts.into_iter().enumerate() {
        if part.is_empty() && at == last {
            segments.push("index.html".to_owned());
            continue;
        }
        let segment = percent_decode(part)?;
        if !is_servable_name(&segment) {
            return None;
        }
        segments.push(segment);
    }
    Some(segments)
}

/// Whether a file or directory name may appear in a served path: not empty, not a dot
/// name (which covers `.` and `..`), not `node_modules`, no separator or NUL.
fn is_servable_name(name: &str) -> bool {
    let excluded = name.is_empty()
        || name.starts_with('.')
        || name == "node_modules"
        || name.contains(['/', '\\', '\0'])
        || (cfg!(windows) && name.contains(':'));
    !excluded
}

/// `%XX` sequences decoded (as `decodeURIComponent` does: `+` stays `+`); `None` if one
/// is malformed or the result is not UTF-8.
fn percent_decode(text: &str) -> Option<String> {
    if !text.contains('%') {
        return Some(text.to_owned());
    }
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut at = 0;
    while at < bytes.len() {
        if bytes[at] == b'%' {
            let hex = bytes.get(at + 1..at + 3)?;
            let high = (hex[0] as char).to_digit(16)?;
            let low = (hex[1] as char).to_digit(16)?;
            decoded.push((high * 16 + low) as u8);
            at += 3;
        } else {
            decoded.push(bytes[at]);
            at += 1;
        }
    }
    String::from_utf8(decoded).ok()
}

/// The media type for a file name's extension.
fn content_type(name: &Path) -> &'static str {
    let extension = name
        .extension()
        .and_then(|extension| extension.to_str())
        .map(str::to_ascii_lowercase)
        .unwrap_or_default();
    match extension.as_str() {
        "html" | "htm" => "text/html; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "js" | "mjs" | "cjs" => "text/javascript; charset=utf-8",
        "json" | "map" => "application/json",
        "webmanifest" => "application/manifest+json",
        "txt" => "text/plain; charset=utf-8",
        "md" => "text/markdown; charset=utf-8",
        "csv" => "text/csv; charset=utf-8",
        "xml" => "application/xml",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "avif" => "image/avif",
        "ico" => "image/x-icon",
        "wasm" => "application/wasm",
        "woff" => "font/woff",
        "woff2" => "font/woff2",
        "ttf" => "font/ttf",
        "otf" => "font/otf",
        "pdf" => "application/pdf",
        "mp3" => "audio/mpeg",
        "wav" => "audio/wav",
        "ogg" => "audio/ogg",
        "mp4" => "video/mp4",
        "webm" => "video/webm",
        "zip" => "application/zip",
        _ => "application/octet-stream",
    }
}

// HTTP dates (RFC 9110 §5.6.7), in the preferred IMF-fixdate form only: it is the form
// this server sends, so it is the form clients echo in `If-Modified-Since`. A date in
// an obsolete form is ignored, which only costs a full response.

const WEEKDAYS: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

fn unix_seconds(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs()
}

/// `Sun, 06 Nov 1994 08:49:37 GMT`.
fn format_http_date(time: SystemTime) -> String {
    let seconds = unix_seconds(time);
    let days = (seconds / 86_400) as i64;
    let of_day = seconds % 86_400;
    let (year, month, day) = civil_from_days(days);
    // 1970-01-01 was a Thursday.
    let weekday = WEEKDAYS[((days + 4) % 7) as usize];
    let mut date = String::with_capacity(29);
    let _ = write!(
        date,
        "{weekday}, {day:02} {} {year:04} {:02}:{:02}:{:02} GMT",
        MONTHS[month as usize - 1],
        of_day / 3600,
        of_day / 60 % 60,
        of_day % 60,
    );
    date
}

/// Seconds since the Unix epoch of an IMF-fixdate; `None` for anything else.
fn parse_http_date(text: &str) -> Option<u64> {
    let text = text.trim();
    let bytes = text.as_bytes();
    if bytes.len() != 29 || !text.is_ascii() || &text[3..5] != ", " || &text[25..] != " GMT" {
        return None;
    }
    if !WEEKDAYS.contains(&&text[..3]) {
        return None;
    }
    let number = |range: std::ops::Range<usize>| -> Option<u64> {
        let digits = &text[range];
        digits
            .bytes()
            .all(|byte| byte.is_ascii_digit())
            .then(|| digits.parse().ok())?
    };
    let day = number(5..7)?;
    let month = MONTHS.iter().position(|name| *name == &text[8..11])? as u64 + 1;
    let year = number(12..16)?;
    let (hour, minute, second) = (number(17..19)?, number(20..22)?, number(23..25)?);
    let separators = [(7, b' '), (11, b' '), (16, b' '), (19, b':'), (22, b':')];
    if separators.iter().any(|&(at, byte)| bytes[at] != byte)
        || !(1..=31).contains(&day)
        || year < 1970
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let days = days_from_civil(year as i64, month as i64, day as i64);
    let seconds = days * 86_400 + (hour * 3600 + minute * 60 + second) as i64;
    u64::try_from(seconds).ok()
}

/// The proleptic Gregorian date of a day number (days since 1970-01-01), by the
/// era-of-400-years method.
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let shifted = days + 719_468;
    let era = shifted.div_euclid(146_097);
    let day_of_era = shifted.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// The inverse of [`civil_from_days`].
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = year - i64::from(month <= 2);
    let era = year.div_euclid(400);
    let year_of_era = year.rem_euclid(400);
    let month_index = if month > 2 { month - 3 } else { month + 9 };
    let day_of_year = (153 * month_index + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::{Duration, UNIX_EPOCH};

    use super::{
        civil_from_days, content_type, days_from_civil, decode_path, format_http_date,
        parse_http_date,
    };

    #[test]
    fn http_dates() {
        let cases = [
            (0, "Thu, 01 Jan 1970 00:00:00 GMT"),
            (784_111_777, "Sun, 06 Nov 1994 08:49:37 GMT"),
            (951_782_400, "Tue, 29 Feb 2000 00:00:00 GMT"),
            (1_700_000_000, "Tue, 14 Nov 2023 22:13:20 GMT"),
            (4_102_444_799, "Thu, 31 Dec 2099 23:59:59 GMT"),
        ];
        for (seconds, text) in cases {
            let time = UNIX_EPOCH + Duration::from_secs(seconds);
            assert_eq!(format_http_date(time), text);
            assert_eq!(parse_http_date(text), Some(seconds), "{text}");
        }
        for bad in [
            "",
            "Sunday, 06-Nov-94 08:49:37 GMT",
            "Sun Nov  6 08:49:37 1994",
            "Sun, 06 Nov 1994 08:49:37 UTC",
            "Sun, 06 Foo 1994 08:49:37 GMT",
            "Sun, 6 Nov 1994 08:49:37 GMT",
            "Sun, 06 Nov 1994 25:49:37 GMT",
            "Sun, +6 Nov 1994 08:49:37 GMT",
        ] {
            assert_eq!(parse_http_date(bad), None, "{bad}");
        }
    }

    #[test]
    fn day_numbers_round_trip() {
        for days in -800_000..800_000 {
            let (year, month, day) = civil_from_days(days);
            assert_eq!(days_from_civil(year, month, day), days);
        }
    }

    #[test]
    fn paths() {
        let ok = |raw: &str, expected: &[&str]| {
            let expected: Vec<String> = expected.iter().map(|s| (*s).to_owned()).collect();
            assert_eq!(decode_path(raw), Some(expected), "{raw}");
        };
        ok("/", &["index.html"]);
        ok("/a.txt", &["a.txt"]);
        ok("/dir/", &["dir", "index.html"]);
        ok("/dir", &["dir"]);
        ok("/a%20b.txt", &["a b.txt"]);
        ok("/caf%C3%A9", &["café"]);
        ok("/a+b", &["a+b"]);
        for bad in [
            "",
            "*",
            "//a",
            "/a//b",
            "/..",
            "/../secret",
            "/a/../b",
            "/%2e%2e/secret",
            "/%2E%2E%2Fsecret",
            "/a%2fb",
            "/a%5Cb",
            "/..%5Csecret",
            "/.env",
            "/.git/config",
            "/dir/.hidden",
            "/node_modules/x.js",
            "/a/node_modules/",
            "/%zz",
            "/%2",
            "/%ff",
            "/a%00b",
            "/./a",
        ] {
            assert_eq!(decode_path(bad), None, "{bad}");
        }
    }

    #[test]
    fn content_types() {
        let cases = [
            ("index.html", "text/html; charset=utf-8"),
            ("a/B.CSS", "text/css; charset=utf-8"),
            ("app.mjs", "text/javascript; charset=utf-8"),
            ("app.js.map", "application/json"),
            ("logo.svg", "image/svg+xml"),
            ("font.woff2", "font/woff2"),
            ("module.wasm", "application/wasm"),
            ("README", "application/octet-stream"),
            ("archive.tar.xz", "application/octet-stream"),
        ];
        for (name, expected) in cases {
            assert_eq!(content_type(Path::new(name)), expected, "{name}");
        }
    }
}
