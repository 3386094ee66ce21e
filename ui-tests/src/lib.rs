//! trybuild tests of `#[party]`: the cases live in `tests/pass`, `tests/fail` and
//! `tests/warn`.
