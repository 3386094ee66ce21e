//! Guides: longer documentation than fits on one item.
//!
//! - [`migration`]: from object-style (legacy) handlers to class style, handler by
//!   handler.
//! - [`debugging`]: what `#[party]`'s compile errors and warnings mean, and what to write
//!   instead.

#[doc = include_str!("../../docs/MIGRATION.md")]
pub mod migration {}

#[doc = include_str!("../../docs/DEBUGGING.md")]
pub mod debugging {}
