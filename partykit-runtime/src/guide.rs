//! Guides: longer documentation than fits on one item.
//!
//! - [`tutorial`]: a party from zero to tested: a chat room, storage, an alarm, and a
//!   test with `partykit_runtime::testing`.
//! - [`migration`]: from object-style (legacy) handlers to class style, handler by
//!   handler.
//! - `testing` (with the cargo feature `testing`): testing your parties with the test
//!   kit, `partykit_runtime::testing`.
//! - [`debugging`]: what `#[party]`'s compile errors and warnings mean, and what to write
//!   instead.

#[doc = include_str!("../../docs/TUTORIAL.md")]
pub mod tutorial {}

#[doc = include_str!("../../docs/MIGRATION.md")]
pub mod migration {}

#[doc = include_str!("../../docs/DEBUGGING.md")]
pub mod debugging {}

#[cfg(feature = "testing")]
#[cfg_attr(docsrs, doc(cfg(feature = "testing")))]
#[doc = include_str!("../../docs/TESTING.md")]
pub mod testing {}
