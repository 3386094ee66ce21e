//! Which room a path addresses: a prefix match and a split on `/`, on the raw
//! path, with no decoding and no normalisation.

/// The room a party path addresses.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Target<'p> {
    pub(crate) party: &'p str,
    pub(crate) room: &'p str,
}

/// `/parties/<party>/<room>[/…]` or `/party/<room>[/…]` (the `main` party); `None` for
/// any other path, including an empty room segment.
pub(crate) fn parse(path: &str) -> Option<Target<'_>> {
    let mut segments = path.split('/');
    if !segments.next()?.is_empty() {
        return None;
    }
    let target = match segments.next()? {
        "parties" => Target {
            party: segments.next()?,
            room: segments.next()?,
        },
        "party" => Target {
            party: "main",
            room: segments.next()?,
        },
        _ => return None,
    };
    (!target.room.is_empty()).then_some(target)
}

#[cfg(test)]
mod tests {
    use super::{Target, parse};

    #[test]
    fn party_paths() {
        let cases = [
            ("/parties/main/lobby", Some(("main", "lobby"))),
            ("/parties/chat/a%20b/sub/path", Some(("chat", "a%20b"))),
            ("/parties/Chat/x", Some(("Chat", "x"))),
            ("/party/lobby", Some(("main", "lobby"))),
            ("/party/lobby/", Some(("main", "lobby"))),
            ("/parties//room", Some(("", "room"))),
            ("/parties/main/", None),
            ("/parties/main", None),
            ("/party/", None),
            ("/party", None),
            ("/", None),
            ("/partyx/y", None),
            ("/api/parties/main/x", None),
        ];
        for (path, expected) in cases {
            let expected = expected.map(|(party, room)| Target { party, room });
            assert_eq!(parse(path), expected, "{path}");
        }
    }
}
