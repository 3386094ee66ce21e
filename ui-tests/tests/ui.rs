//! Locks what `#[party]` accepts (`pass/`), the compile errors it reports (`fail/*.rs`
//! with the expected `.stderr` beside each) and its deprecation warnings (`warn/*.rs`,
//! made errors by `#![deny(deprecated)]` so that trybuild can lock them).
//!
//! Regenerate the `.stderr` files with `TRYBUILD=overwrite cargo test -p partykit-ui-tests`
//! and read every one: each message must say what to write instead. They depend on the
//! pinned toolchain (`rust-toolchain.toml`).

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.pass("tests/pass/*.rs");
    t.compile_fail("tests/fail/*.rs");
    t.compile_fail("tests/warn/*.rs");
}
