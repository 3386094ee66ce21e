//! Runnable partykit-rs examples. Each module is one party; each binary in `src/bin/`
//! serves it on `127.0.0.1:1999` (`PARTYKIT_HOST`/`PARTYKIT_PORT` override) with
//! `Server::run`, which logs to stdout (`PARTYKIT_LOG` filters, `PARTYKIT_LOG_FORMAT=json`
//! for JSON lines: see `partykit_runtime::logging`).
//!
//! | example | run | shows |
//! |---|---|---|
//! | [`auth`] | `cargo run -p partykit-examples --bin auth` | tokens checked in `on_before_connect` / `on_before_request`; the user id passed to the room in a header |
//! | [`chat`] | `cargo run -p partykit-examples --bin chat` | broadcast to everyone else; JSON over HTTP |
//! | [`counter`] | `cargo run -p partykit-examples --bin counter` | durable state shared by HTTP and WebSocket clients |
//! | [`cursors`] | `cargo run -p partykit-examples --bin cursors` | a static page (with the `partysocket` client) showing everyone's cursor; connection state; hibernation |
//! | [`echo`] | `cargo run -p partykit-examples --bin echo` | every message back to its sender, same type; the server Autobahn\|Testsuite runs against |
//! | `legacy` | `cargo run -p partykit-examples --features legacy --bin legacy` | object-style (legacy) handlers and their deprecation warnings (behind the `legacy` feature, so that only building it prints them) |
//! | [`multi_party`] | `cargo run -p partykit-examples --bin multi-party` | two parties: chat rooms report their users to a lobby room through `context().parties()` |
//! | [`reminders`] | `cargo run -p partykit-examples --bin reminders` | alarms: several timers on a room's one alarm |
//! | [`yjs`] | `cargo run -p partykit-examples --bin yjs` | a collaborative text document for the npm `y-partykit` provider (Yjs), persisted; a page to edit it |

pub mod auth;
pub mod chat;
pub mod counter;
pub mod cursors;
pub mod echo;
#[cfg(feature = "legacy")]
pub mod legacy;
pub mod multi_party;
pub mod reminders;
pub mod yjs;
