//! Logs an operator can ship: one line per event on stdout, as text or as JSON, filtered
//! by an environment variable.
//!
//! [`Server::run`](crate::Server::run) installs this logging itself unless the program
//! has already set a global `tracing` subscriber of its own (which is then kept). A
//! program that serves with [`Server::listen`](crate::Server::listen) or
//! [`Server::serve`](crate::Server::serve) calls [`try_init`] (or [`init`]) first:
//!
//! ```no_run
//! use partykit_runtime::{party, Server};
//!
//! #[party]
//! #[derive(Default)]
//! struct Main;
//!
//! #[party]
//! impl Main {}
//!
//! #[tokio::main]
//! async fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     // Refuses a PARTYKIT_LOG_FORMAT other than `text` or `json`, and a filter that
//!     // does not parse, naming the variable.
//!     let _logs = partykit_runtime::logging::try_init()?;
//!     Server::new().party::<Main>().listen("0.0.0.0:8080").await?;
//!     Ok(())
//! }
//! ```
//!
//! # Variables
//!
//! | variable | meaning | default |
//! |---|---|---|
//! | `PARTYKIT_LOG` | which lines to keep, as `tracing-subscriber`'s `EnvFilter` reads it: `warn`, `info,partykit_runtime=debug`, `warn,my_party=debug` | `RUST_LOG`, else `info` |
//! | `PARTYKIT_LOG_FORMAT` | `text` (one human-readable line per event) or `json` (one JSON object per line) | `text` |
//!
//! # What a line carries
//!
//! Each room runs its events in a span named `room` with the fields `party` and `room`
//! (its id); each connection's events (`connection_tags`, `on_connect`, `on_message`,
//! `on_error`, `on_close`) run in a child span named `connection` with the field `id`.
//! A line logged there, the runtime's or a handler's own `tracing::info!`, carries
//! them:
//!
//! ```text
//! 2026-12-02T07:36:05.909288Z  INFO room{party="chat" room="lobby"}:connection{id="bob"}: my_party: joined connections=1
//! ```
//!
//! (Text quotes and escapes the ids, which clients choose, so that an id cannot forge a
//! line.) In JSON, the event's fields (`message` among them) sit beside `timestamp`,
//! `level` and `target`; `span` is the innermost span, `spans` every span from the room
//! down:
//!
//! ```text
//! {"timestamp":"2026-12-02T07:36:05.902772Z","level":"INFO","message":"joined","connections":1,"target":"my_party","span":{"id":"bob","name":"connection"},"spans":[{"party":"chat","room":"lobby","name":"room"},{"id":"bob","name":"connection"}]}
//! ```
//!
//! The spans are at level `error`, so any filter that keeps `partykit_runtime`'s
//! errors keeps them too; a filter that turns `partykit_runtime` off entirely
//! (`my_party=debug` alone) drops them, and with them the fields.

use std::fmt;
use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// The environment variable that filters log lines (`tracing-subscriber`'s `EnvFilter`
/// syntax); `RUST_LOG` is read when it is not set, and `info` is the default.
pub const LOG_VAR: &str = "PARTYKIT_LOG";
/// The environment variable that chooses the log format: `text` (the default) or `json`.
pub const LOG_FORMAT_VAR: &str = "PARTYKIT_LOG_FORMAT";
/// The filter read when [`LOG_VAR`] is not set.
const FALLBACK_LOG_VAR: &str = "RUST_LOG";
/// The filter when neither variable is set.
const DEFAULT_FILTER: &str = "info";

/// Installs the log subscriber the environment asks for as the global default:
/// [`LOG_VAR`] (else `RUST_LOG`, else `info`) filters, [`LOG_FORMAT_VAR`] chooses
/// `text` or `json`; lines go to stdout, coloured only on a terminal (and without
/// `NO_COLOR`). Records of the `log` crate (some dependencies log through it) are
/// logged too.
///
/// Lines are written by a thread of their own, not by the task that logs: a stdout
/// that blocks (a full pipe to a slow log shipper) must not stall rooms. Up to 128,000
/// lines wait for it; beyond that, lines are dropped rather than waited for. Keep the
/// returned [`LogGuard`] until the program ends: dropping it writes what is still
/// waiting and stops the thread.
///
/// Fails, naming the variable, on a format other than `text` or `json` or a filter
/// that does not parse; and when a global subscriber (or `log` logger) is already set.
///
/// ```no_run
/// let _logs = match partykit_runtime::logging::try_init() {
///     Ok(guard) => guard,
///     Err(error) => {
///         eprintln!("{error}");
///         std::process::exit(2);
///     }
/// };
/// tracing::info!("logging is set up");
/// ```
pub fn try_init() -> Result<LogGuard, LoggingError> {
    let config = Config::from_vars(|name| std::env::var(name))?;
    let ansi = std::io::stdout().is_terminal()
        && std::env::var_os("NO_COLOR").is_none_or(|value| value.is_empty());
    let (writer, guard) = tracing_appender::non_blocking(std::io::stdout());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(config.filter)
        .with_ansi(ansi)
        .with_writer(writer);
    let installed = match config.format {
        Format::Text => builder.try_init(),
        Format::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(true)
            .try_init(),
    };
    installed.map_err(|error| LoggingError::Install(error.to_string()))?;
    Ok(LogGuard { _writer: guard })
}

/// [`try_init`], panicking with its error's message if it fails.
///
/// ```no_run
/// let _logs = partykit_runtime::logging::init();
/// ```
pub fn init() -> LogGuard {
    match try_init() {
        Ok(guard) => guard,
        Err(error) => panic!("{error}"),
    }
}

/// Keeps the log's writer thread: dropping it writes the lines still waiting and stops
/// the thread. Hold it in `main` (`let _logs = …`, not `let _ = …`, which drops it at
/// once).
#[must_use = "dropping the guard stops the log's writer thread: hold it until the program ends"]
pub struct LogGuard {
    _writer: tracing_appender::non_blocking::WorkerGuard,
}

impl fmt::Debug for LogGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LogGuard").finish_non_exhaustive()
    }
}

/// What [`Server::run`](crate::Server::run) does: installs the logging unless a global
/// subscriber is already set, so a program that set its own keeps it.
pub(crate) fn init_unless_set() -> Result<Option<LogGuard>, LoggingError> {
    if tracing::dispatcher::has_been_set() {
        return Ok(None);
    }
    match try_init() {
        Ok(guard) => Ok(Some(guard)),
        // Another thread set one meanwhile (or a `log` logger was set: the subscriber
        // is installed all the same, only `log` records are not bridged).
        Err(LoggingError::Install(_)) if tracing::dispatcher::has_been_set() => Ok(None),
        Err(error) => Err(error),
    }
}

/// Why the logging could not be set up.
#[derive(Debug)]
#[non_exhaustive]
pub enum LoggingError {
    /// [`LOG_FORMAT_VAR`] is neither `text` nor `json`.
    InvalidFormat {
        /// The variable: [`LOG_FORMAT_VAR`].
        variable: &'static str,
        /// Its value.
        value: String,
    },
    /// The filter in [`LOG_VAR`] (or `RUST_LOG`) does not parse.
    InvalidFilter {
        /// The variable the filter was read from.
        variable: &'static str,
        /// Its value.
        value: String,
        /// What is wrong with it.
        message: String,
    },
    /// The subscriber could not be installed: a global `tracing` subscriber (or a `log`
    /// logger) is already set.
    Install(String),
}

impl fmt::Display for LoggingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidFormat { variable, value } => write!(
                f,
                "{variable}={value:?} is not a log format: use `text` (the default, one \
                 line per event) or `json` (one JSON object per line)"
            ),
            Self::InvalidFilter {
                variable,
                value,
                message,
            } => write!(
                f,
                "{variable}={value:?} is not a log filter ({message}): use a level \
                 (`error`, `warn`, `info`, `debug`, `trace`) and `target=level` pairs, \
                 comma-separated, e.g. {variable}=warn,my_party=debug"
            ),
            Self::Install(error) => write!(f, "cannot install the log subscriber: {error}"),
        }
    }
}

impl std::error::Error for LoggingError {}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Text,
    Json,
}

#[derive(Debug)]
struct Config {
    filter: EnvFilter,
    format: Format,
}

impl Config {
    /// Reads the variables through `var` (the process environment, or a test's); an
    /// empty variable counts as unset.
    fn from_vars(
        var: impl Fn(&str) -> Result<String, std::env::VarError>,
    ) -> Result<Self, LoggingError> {
        let read = |name: &'static str| match var(name) {
            Ok(value) if value.is_empty() => Ok(None),
            Ok(value) => Ok(Some(value)),
            Err(std::env::VarError::NotPresent) => Ok(None),
            Err(std::env::VarError::NotUnicode(value)) => Err((name, value)),
        };
        let format = match read(LOG_FORMAT_VAR) {
            Ok(None) => Format::Text,
            Ok(Some(value)) if value.eq_ignore_ascii_case("text") => Format::Text,
            Ok(Some(value)) if value.eq_ignore_ascii_case("json") => Format::Json,
            Ok(Some(value)) => {
                return Err(LoggingError::InvalidFormat {
                    variable: LOG_FORMAT_VAR,
                    value,
                });
            }
            Err((variable, value)) => {
                return Err(LoggingError::InvalidFormat {
                    variable,
                    value: value.to_string_lossy().into_owned(),
                });
            }
        };
        let not_unicode =
            |(variable, value): (&'static str, std::ffi::OsString)| LoggingError::InvalidFilter {
                variable,
                value: value.to_string_lossy().into_owned(),
                message: "not UTF-8".to_owned(),
            };
        let (variable, directives) = match read(LOG_VAR).map_err(not_unicode)? {
            Some(directives) => (LOG_VAR, directives),
            None => match read(FALLBACK_LOG_VAR).map_err(not_unicode)? {
                Some(directives) => (FALLBACK_LOG_VAR, directives),
                None => (LOG_VAR, DEFAULT_FILTER.to_owned()),
            },
        };
        let filter = EnvFilter::builder().parse(&directives).map_err(|error| {
            LoggingError::InvalidFilter {
                variable,
                value: directives.clone(),
                message: error.to_string(),
            }
        })?;
        Ok(Self { filter, format })
    }
}

#[cfg(test)]
mod tests {
    use std::env::VarError;

    use super::*;

    fn config(vars: &[(&str, &str)]) -> Result<Config, LoggingError> {
        Config::from_vars(|name| {
            vars.iter()
                .find(|(own, _)| *own == name)
                .map(|(_, value)| (*value).to_owned())
                .ok_or(VarError::NotPresent)
        })
    }

    #[test]
    fn the_filter_is_partykit_log_else_rust_log_else_info() {
        let both = config(&[(LOG_VAR, "warn"), ("RUST_LOG", "trace")]).expect("valid");
        assert_eq!(both.filter.to_string(), "warn");
        let fallback = config(&[("RUST_LOG", "debug")]).expect("valid");
        assert_eq!(fallback.filter.to_string(), "debug");
        let empty = config(&[(LOG_VAR, ""), ("RUST_LOG", "error")]).expect("valid");
        assert_eq!(empty.filter.to_string(), "error");
        let neither = config(&[]).expect("valid");
        assert_eq!(neither.filter.to_string(), "info");
        assert_eq!(neither.format, Format::Text);
    }

    #[test]
    fn formats_are_text_and_json() {
        assert_eq!(
            config(&[(LOG_FORMAT_VAR, "json")]).expect("json").format,
            Format::Json
        );
        assert_eq!(
            config(&[(LOG_FORMAT_VAR, "TEXT")]).expect("text").format,
            Format::Text
        );
        let error = config(&[(LOG_FORMAT_VAR, "yaml")]).expect_err("not a format");
        assert_eq!(
            error.to_string(),
            "PARTYKIT_LOG_FORMAT=\"yaml\" is not a log format: use `text` (the default, one \
             line per event) or `json` (one JSON object per line)"
        );
    }

    #[test]
    fn a_bad_filter_names_its_variable() {
        let error = config(&[(LOG_VAR, "info,partykit_runtime=loud")]).expect_err("bad level");
        let message = error.to_string();
        assert!(
            message
                .starts_with("PARTYKIT_LOG=\"info,partykit_runtime=loud\" is not a log filter ("),
            "{message}"
        );
        let error = config(&[("RUST_LOG", "=")]).expect_err("bad directive");
        assert!(error.to_string().starts_with("RUST_LOG=\"=\""), "{error}");
    }
}
