//! The debugging guide (`docs/DEBUGGING.md`, shown as `partykit_runtime::guide::debugging`)
//! quotes `#[party]`'s messages: each one it quotes must be one the macro prints, as
//! locked in the `.stderr` files here, so that the guide cannot go stale when a message
//! changes.

use std::fs;
use std::path::Path;

/// Every `.stderr` of `tests/fail` and `tests/warn`, concatenated.
fn printed_messages() -> String {
    let mut all = String::new();
    for dir in ["tests/fail", "tests/warn"] {
        for entry in fs::read_dir(dir).expect("the UI test directories") {
            let path = entry.expect("a directory entry").path();
            if path.extension().is_some_and(|ext| ext == "stderr") {
                all.push_str(&fs::read_to_string(&path).expect("a .stderr file"));
            }
        }
    }
    all
}

/// The messages the guide's tables quote: the first cell of a row, written
/// ``` `` message `` ```, where `…` stands for any text.
fn quoted_messages(guide: &str) -> Vec<&str> {
    guide
        .lines()
        .filter_map(|line| line.strip_prefix("| `` "))
        .filter_map(|cell| cell.split_once(" `` ").map(|(message, _)| message))
        .collect()
}

#[test]
fn every_message_the_debugging_guide_quotes_is_printed() {
    let guide = fs::read_to_string(Path::new("../docs/DEBUGGING.md")).expect("the guide");
    let printed = printed_messages();
    let quoted = quoted_messages(&guide);
    assert!(
        quoted.len() > 40,
        "the guide quotes {} messages",
        quoted.len()
    );
    let missing: Vec<&str> = quoted
        .iter()
        .copied()
        .filter(|message| {
            // Each piece between `…` in order, on one line of the compiler's output.
            !printed.lines().any(|line| {
                let mut rest = line;
                message
                    .split('…')
                    .all(|piece| match rest.find(piece.trim()) {
                        Some(at) => {
                            rest = &rest[at + piece.trim().len()..];
                            true
                        }
                        None => false,
                    })
            })
        })
        .collect();
    assert!(
        missing.is_empty(),
        "docs/DEBUGGING.md quotes messages no UI test prints:\n{}",
        missing.join("\n")
    );
}
