//! The rule for party names. `#[party]` checks names at compile time with the same rule:
//! its tests include this file and compare both on the same names, so the two cannot
//! drift apart. Self-contained for that reason.

/// Whether `name` can be a party's name. It appears in URLs as `/parties/<name>/<room>`:
/// lowercase ASCII letters, digits, `_` and `-`, at least one.
pub(crate) fn is_valid_party_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|byte| matches!(byte, b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-'))
}
