//! Locks what `#[party]` accepts (`pass/`) and the compile errors it reports
//! (`fail/*.rs` with the expected `.stderr` beside each).
//!
//! Regenerate the `.stderr` files with `TRYBUILD=overwrite cargo test -p partykit-ui-tests`
//! and read every one: each message must say what to write instead. They depend on the
//! pinned toolchain (`rust-toolchain.toml`).

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.pass("tests/pass/*.rs");
    t.compile_fail("tests/fail/*.rs");
}
