//! `list`'s options and their exact semantics, as in Durable Objects.

use std::collections::BTreeMap;
use std::ops::Bound;

use bytes::Bytes;

use crate::Error;

/// Which keys [`Storage::list`](super::Storage::list) returns.
///
/// Bounds combine: `start`/`start_after` and `prefix` narrow from below, `end` from
/// above. `reverse` walks the same keys from the last, and does **not** swap the meaning
/// of `start` and `end`. `limit` counts from the first key walked.
///
/// ```
/// use partykit_runtime::storage::ListOptions;
///
/// let newest_ten = ListOptions::new().prefix("msg:").reverse(true).limit(10);
/// # drop(newest_ten);
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ListOptions {
    pub(crate) start: Option<String>,
    pub(crate) start_after: Option<String>,
    pub(crate) end: Option<String>,
    pub(crate) prefix: Option<String>,
    pub(crate) reverse: bool,
    pub(crate) limit: Option<usize>,
}

impl ListOptions {
    /// Every key, ascending.
    pub fn new() -> Self {
        Self::default()
    }

    /// Keys ≥ `key`. Not with [`start_after`](Self::start_after).
    #[must_use]
    pub fn start(mut self, key: impl Into<String>) -> Self {
        self.start = Some(key.into());
        self
    }

    /// Keys > `key`. Not with [`start`](Self::start).
    #[must_use]
    pub fn start_after(mut self, key: impl Into<String>) -> Self {
        self.start_after = Some(key.into());
        self
    }

    /// Keys < `key`.
    #[must_use]
    pub fn end(mut self, key: impl Into<String>) -> Self {
        self.end = Some(key.into());
        self
    }

    /// Keys that begin with `prefix`.
    #[must_use]
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = Some(prefix.into());
        self
    }

    /// Descending order.
    #[must_use]
    pub fn reverse(mut self, reverse: bool) -> Self {
        self.reverse = reverse;
        self
    }

    /// At most `limit` keys.
    #[must_use]
    pub fn limit(mut self, limit: usize) -> Self {
        self.limit = Some(limit);
        self
    }

    /// The selected entries of `entries`, in the order asked for.
    pub(crate) fn select<'m>(
        &self,
        entries: &'m BTreeMap<String, Bytes>,
    ) -> Result<Vec<(&'m String, &'m Bytes)>, Error> {
        if self.start.is_some() && self.start_after.is_some() {
            return Err(Error::msg(
                "list: `start` and `start_after` cannot be used together",
            ));
        }
        let mut lower: Bound<&str> = match (&self.start, &self.start_after) {
            (Some(start), _) => Bound::Included(start),
            (_, Some(after)) => Bound::Excluded(after),
            _ => Bound::Unbounded,
        };
        if let Some(prefix) = &self.prefix {
            // The prefix is a lower bound too; keep whichever bound is higher.
            let above_prefix = match lower {
                Bound::Unbounded => true,
                Bound::Included(key) | Bound::Excluded(key) => key < prefix.as_str(),
            };
            if above_prefix {
                lower = Bound::Included(prefix);
            }
        }
        let upper: Bound<&str> = match &self.end {
            Some(end) => Bound::Excluded(end),
            None => Bound::Unbounded,
        };
        if is_empty_range(lower, upper) {
            return Ok(Vec::new());
        }
        let prefix = self.prefix.as_deref().unwrap_or("");
        // Keys with a prefix are contiguous in byte order, so the walk can stop at the
        // first key without it: no successor of the prefix needs computing, which keeps
        // prefixes ending in U+10FFFF (bytes F4 8F BF BF) correct.
        let forward = entries
            .range::<str, _>((lower, upper))
            .take_while(|(key, _)| key.starts_with(prefix));
        let limit = self.limit.unwrap_or(usize::MAX);
        Ok(if self.reverse {
            let mut all: Vec<_> = forward.collect();
            all.reverse();
            all.truncate(limit);
            all
        } else {
            forward.take(limit).collect()
        })
    }
}

/// Whether `(lower, upper)` holds no key; `BTreeMap::range` panics on such ranges.
fn is_empty_range(lower: Bound<&str>, upper: Bound<&str>) -> bool {
    match (lower, upper) {
        (Bound::Included(low), Bound::Excluded(high))
        | (Bound::Excluded(low), Bound::Excluded(high)) => low >= high,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(keys: &[&str]) -> BTreeMap<String, Bytes> {
        keys.iter()
            .map(|key| ((*key).to_owned(), Bytes::new()))
            .collect()
    }

    fn keys(options: ListOptions, entries: &BTreeMap<String, Bytes>) -> Vec<String> {
        options
            .select(entries)
            .unwrap()
            .into_iter()
            .map(|(key, _)| key.clone())
            .collect()
    }

    #[test]
    fn options_and_combinations() {
        let entries = map(&["a", "b", "ba", "bb", "c", "d"]);
        let all = ["a", "b", "ba", "bb", "c", "d"];
        assert_eq!(keys(ListOptions::new(), &entries), all);
        assert_eq!(
            keys(ListOptions::new().start("b"), &entries),
            ["b", "ba", "bb", "c", "d"]
        );
        assert_eq!(
            keys(ListOptions::new().start_after("b"), &entries),
            ["ba", "bb", "c", "d"]
        );
        assert_eq!(
            keys(ListOptions::new().end("c"), &entries),
            ["a", "b", "ba", "bb"]
        );
        assert_eq!(
            keys(ListOptions::new().prefix("b"), &entries),
            ["b", "ba", "bb"]
        );
        assert_eq!(keys(ListOptions::new().limit(2), &entries), ["a", "b"]);
        assert_eq!(
            keys(ListOptions::new().reverse(true).limit(2), &entries),
            ["d", "c"]
        );
        // reverse walks the same range from its end; start/end keep their meaning.
        assert_eq!(
            keys(
                ListOptions::new().start("b").end("c").reverse(true),
                &entries
            ),
            ["bb", "ba", "b"]
        );
        assert_eq!(
            keys(
                ListOptions::new().prefix("b").start_after("b").limit(1),
                &entries
            ),
            ["ba"]
        );
        assert_eq!(
            keys(ListOptions::new().prefix("b").start("a"), &entries),
            ["b", "ba", "bb"]
        );
        assert_eq!(
            keys(ListOptions::new().prefix("b").end("bb"), &entries),
            ["b", "ba"]
        );
        assert_eq!(
            keys(
                ListOptions::new().prefix("b").reverse(true).limit(2),
                &entries
            ),
            ["bb", "ba"]
        );
        assert!(keys(ListOptions::new().start("c").end("b"), &entries).is_empty());
        assert!(keys(ListOptions::new().start("b").end("b"), &entries).is_empty());
        assert!(keys(ListOptions::new().start_after("b").end("b"), &entries).is_empty());
        assert!(keys(ListOptions::new().limit(0), &entries).is_empty());
        assert!(keys(ListOptions::new().prefix("z"), &entries).is_empty());
        assert!(
            ListOptions::new()
                .start("a")
                .start_after("a")
                .select(&entries)
                .is_err()
        );
    }

    #[test]
    fn order_is_utf8_bytes_and_high_prefixes_work() {
        let top = "\u{10FFFF}";
        let entries = map(&[
            "z",
            "é",
            "\u{FFFF}",
            top,
            &format!("{top}{top}"),
            &format!("{top}a"),
        ]);
        assert_eq!(
            keys(ListOptions::new(), &entries),
            [
                "z",
                "é",
                "\u{FFFF}",
                top,
                &format!("{top}a"),
                &format!("{top}{top}")
            ]
        );
        assert_eq!(
            keys(ListOptions::new().prefix(top), &entries),
            [top, &format!("{top}a"), &format!("{top}{top}")]
        );
        assert_eq!(
            keys(ListOptions::new().prefix(format!("{top}{top}")), &entries),
            [format!("{top}{top}")]
        );
    }
}
