//! Runnable partykit-rs examples. Each module is one party; each binary in `src/bin/`
//! serves it on `127.0.0.1:1999` (`PARTYKIT_HOST`/`PARTYKIT_PORT` override).
//!
//! | example | run | shows |
//! |---|---|---|
//! | [`chat`] | `cargo run -p partykit-examples --bin chat` | broadcast to everyone else; JSON over HTTP |
//! | [`counter`] | `cargo run -p partykit-examples --bin counter` | durable state shared by HTTP and WebSocket clients |
//! | [`legacy`] | `cargo run -p partykit-examples --bin legacy` | object-style (legacy) handlers and their deprecation warnings |
//! | [`reminders`] | `cargo run -p partykit-examples --bin reminders` | alarms: several timers on a room's one alarm |

pub mod chat;
pub mod counter;
pub mod legacy;
pub mod reminders;

/// Logs to stderr; `RUST_LOG` filters (default: `info`).
pub fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt().with_env_filter(filter).init();
}
