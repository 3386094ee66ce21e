//! trybuild tests of `#[party]`: the cases live in `tests/pass` and `tests/fail`.
