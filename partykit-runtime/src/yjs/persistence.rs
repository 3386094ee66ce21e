//! A document's updates in room storage, in y-partykit's layout, so that a room's data
//! reads the same whichever server wrote it.
//!
//! Keys (strings quoted, numbers zero-padded to 9 digits, parts joined by `#`):
//!
//! | key | value |
//! |---|---|
//! | `"v1"#"<room>"#"update"#<clock>#<chunk>` | one stored update |
//! | `"v1_sv"#"<room>"#<chunk>` | varuint clock, then the state vector (varUint8Array) |
//!
//! A value longer than 128 KiB is split over keys ending `#000`, `#001`, …, which read
//! back joined in key order. Updates are appended with increasing clocks; compaction
//! merges them into one update at the next clock and deletes the older ones.

use bytes::Bytes;
use yrs::encoding::write::Write;
use yrs::updates::decoder::Decode;
use yrs::updates::encoder::Encode;
use yrs::{ReadTxn, StateVector, Transact, Update};

use crate::storage::{ListOptions, Storage};
use crate::{Error, Result};

/// The largest storage value y-partykit writes.
pub(crate) const VALUE_CHUNK: usize = 128 * 1024;
/// The largest batch of keys one delete takes.
const DELETE_BATCH: usize = 128;
/// The largest clock y-partykit's key range covers (`0xffffffff`).
const MAX_CLOCK: u64 = 0xffff_ffff;

/// One document's stored updates.
#[derive(Debug, Clone)]
pub(crate) struct Store {
    storage: Storage,
    name: String,
}

impl Store {
    /// The store of document `name` (the room id) in `storage`.
    pub(crate) fn new(storage: Storage, name: &str) -> Self {
        Self {
            storage,
            name: name.to_owned(),
        }
    }

    /// Every stored update, oldest first.
    pub(crate) async fn updates(&self) -> Result<Vec<Bytes>> {
        Ok(self
            .stored_updates()
            .await?
            .into_iter()
            .map(|(_, update)| update)
            .collect())
    }

    /// Appends `update`; returns its clock. The first update also writes a state vector,
    /// so that stored documents can be found by their `v1_sv` key.
    pub(crate) async fn store_update(&self, update: &[u8]) -> Result<u64> {
        let clock = match self.current_clock().await? {
            Some(current) => current + 1,
            None => {
                let state_vector = merge([update])?.1;
                self.write_state_vector(&state_vector, 0).await?;
                0
            }
        };
        self.put_chunked(&update_key(&self.name, clock), update)
            .await?;
        Ok(clock)
    }

    /// Replaces the stored updates by their merge when there are more than
    /// `max_updates` of them, or when there are several and together they exceed
    /// `max_bytes`. Snapshot mode is `compact(0, 0)`: always, if anything is stored.
    pub(crate) async fn compact(&self, max_updates: u64, max_bytes: u64) -> Result<()> {
        let updates = self.stored_updates().await?;
        let count = updates.len() as u64;
        let bytes: u64 = updates.iter().map(|(_, update)| update.len() as u64).sum();
        if count > max_updates || (bytes > max_bytes && count > 1) {
            let (update, state_vector) = merge(updates.iter().map(|(_, update)| update))?;
            let clock = self.store_update(&update).await?;
            self.write_state_vector(&state_vector, clock).await?;
            self.clear_updates(clock).await?;
        }
        Ok(())
    }

    /// The stored updates with their clocks, oldest first.
    async fn stored_updates(&self) -> Result<Vec<(u64, Bytes)>> {
        let options = ListOptions::new()
            .start(update_key(&self.name, 0))
            .end(update_key(&self.name, MAX_CLOCK));
        let entries = self.storage.list_bytes(options).await?;
        group_chunks(entries)
            .into_iter()
            .map(|(key, value)| Ok((clock_of(&key)?, value)))
            .collect()
    }

    /// The clock of the newest stored update.
    async fn current_clock(&self) -> Result<Option<u64>> {
        let options = ListOptions::new()
            .start(update_key(&self.name, 0))
            .end(update_key(&self.name, MAX_CLOCK))
            .reverse(true)
            .limit(1);
        let newest = self.storage.list_bytes(options).await?;
        newest
            .first()
            .map(|(key, _)| clock_of(without_chunk(key)))
            .transpose()
    }

    async fn write_state_vector(&self, state_vector: &[u8], clock: u64) -> Result<()> {
        let mut value = Vec::with_capacity(state_vector.len() + 10);
        value.write_var(clock);
        value.write_buf(state_vector);
        self.put_chunked(&state_vector_key(&self.name), &value)
            .await
    }

    /// Deletes the updates with clocks below `clock`.
    async fn clear_updates(&self, clock: u64) -> Result<()> {
        let options = ListOptions::new()
            .start(update_key(&self.name, 0))
            .end(update_key(&self.name, clock));
        let keys: Vec<String> = self
            .storage
            .list_bytes(options)
            .await?
            .into_iter()
            .map(|(key, _)| key)
            .collect();
        for batch in keys.chunks(DELETE_BATCH) {
            let batch: Vec<&str> = batch.iter().map(String::as_str).collect();
            self.storage.delete_many(&batch).await?;
        }
        Ok(())
    }

    async fn put_chunked(&self, prefix: &str, value: &[u8]) -> Result<()> {
        for (index, chunk) in value.chunks(VALUE_CHUNK).enumerate() {
            let key = format!("{prefix}#{index:03}");
            self.storage
                .put_bytes(&key, Bytes::copy_from_slice(chunk))
                .await?;
        }
        Ok(())
    }
}

/// `"v1"#"<name>"#"update"#<clock, 9 digits>`
fn update_key(name: &str, clock: u64) -> String {
    format!("\"v1\"#\"{name}\"#\"update\"#{clock:09}")
}

/// `"v1_sv"#"<name>"`
fn state_vector_key(name: &str) -> String {
    format!("\"v1_sv\"#\"{name}\"")
}

/// A chunk's key without its `#<chunk>` suffix.
fn without_chunk(key: &str) -> &str {
    key.rsplit_once('#').map_or(key, |(prefix, _)| prefix)
}

/// The clock of an update key (without its chunk suffix).
fn clock_of(key: &str) -> Result<u64> {
    key.rsplit_once('#')
        .and_then(|(_, clock)| clock.parse().ok())
        .ok_or_else(|| Error::msg(format!("unexpected Yjs storage key {key:?}")))
}

/// Joins the chunks of each value, in key order.
fn group_chunks(entries: Vec<(String, Bytes)>) -> Vec<(String, Bytes)> {
    let mut grouped: Vec<(String, Vec<u8>)> = Vec::new();
    for (key, chunk) in entries {
        let prefix = without_chunk(&key);
        match grouped.last_mut() {
            Some((last, value)) if last == prefix => value.extend_from_slice(&chunk),
            _ => grouped.push((prefix.to_owned(), chunk.to_vec())),
        }
    }
    grouped
        .into_iter()
        .map(|(key, value)| (key, Bytes::from(value)))
        .collect()
}

/// Applies `updates` to a fresh document (with garbage collection, as y-partykit's
/// merge does): its whole state as one update, and its state vector.
pub(crate) fn merge<U: AsRef<[u8]>>(
    updates: impl IntoIterator<Item = U>,
) -> Result<(Vec<u8>, Vec<u8>)> {
    let doc = yrs::Doc::new();
    {
        let mut txn = doc.transact_mut();
        for update in updates {
            txn.apply_update(Update::decode_v1(update.as_ref())?)?;
        }
    }
    let txn = doc.transact();
    let update = txn.encode_state_as_update_v1(&StateVector::default());
    Ok((update, txn.state_vector().encode_v1()))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use yrs::{GetString, Text};

    use super::*;
    use crate::storage::{MemoryBackend, RoomKey};

    fn storage() -> Storage {
        Storage::new(
            RoomKey::new("main", "doc"),
            Arc::new(MemoryBackend::new()),
            128 * 1024,
            Arc::new(|_, _| {}),
            crate::tasks::Tasks::new(),
            None,
            Arc::clone(
                &crate::metrics::Metrics::new(&["main"])
                    .party("main")
                    .storage,
            ),
        )
    }

    /// An update inserting `text` at the start of a fresh document's `t`.
    fn insert(doc: &yrs::Doc, text: &str) -> Vec<u8> {
        let before = doc.transact().state_vector();
        let shared = doc.get_or_insert_text("t");
        shared.insert(&mut doc.transact_mut(), 0, text);
        doc.transact().encode_state_as_update_v1(&before)
    }

    fn text_of(updates: &[Bytes]) -> String {
        let doc = yrs::Doc::new();
        for update in updates {
            doc.transact_mut()
                .apply_update(Update::decode_v1(update).unwrap())
                .unwrap();
        }
        doc.get_or_insert_text("t").get_string(&doc.transact())
    }

    async fn keys(storage: &Storage) -> Vec<String> {
        let entries = storage.list_bytes(ListOptions::new()).await.unwrap();
        entries.into_iter().map(|(key, _)| key).collect()
    }

    #[test]
    fn keys_are_y_partykit_s() {
        assert_eq!(update_key("doc", 7), r##""v1"#"doc"#"update"#000000007"##);
        assert_eq!(state_vector_key("doc"), r##""v1_sv"#"doc""##);
        assert_eq!(
            update_key("doc", MAX_CLOCK),
            r##""v1"#"doc"#"update"#4294967295"##
        );
        assert_eq!(clock_of(&update_key("doc", 42)).unwrap(), 42);
    }

    #[tokio::test]
    async fn updates_are_appended_chunked_and_compacted() {
        let storage = storage();
        let store = Store::new(storage.clone(), "doc");
        let doc = yrs::Doc::new();
        assert_eq!(store.store_update(&insert(&doc, "world")).await.unwrap(), 0);
        assert_eq!(
            store.store_update(&insert(&doc, "hello ")).await.unwrap(),
            1
        );
        // Over 128 KiB: three values under one clock.
        let big = "x".repeat(300_000);
        assert_eq!(store.store_update(&insert(&doc, &big)).await.unwrap(), 2);
        assert_eq!(
            keys(&storage).await,
            [
                r##""v1"#"doc"#"update"#000000000#000"##,
                r##""v1"#"doc"#"update"#000000001#000"##,
                r##""v1"#"doc"#"update"#000000002#000"##,
                r##""v1"#"doc"#"update"#000000002#001"##,
                r##""v1"#"doc"#"update"#000000002#002"##,
                r##""v1_sv"#"doc"#000"##,
            ]
        );
        let updates = store.updates().await.unwrap();
        assert_eq!(updates.len(), 3);
        assert_eq!(text_of(&updates), format!("{big}hello world"));

        // History limits that are not exceeded keep the log.
        store.compact(10, 10_000_000).await.unwrap();
        assert_eq!(store.updates().await.unwrap().len(), 3);

        // Snapshot: one update at the next clock, the old ones gone.
        store.compact(0, 0).await.unwrap();
        let keys = keys(&storage).await;
        assert!(
            keys[0].starts_with(r##""v1"#"doc"#"update"#000000003#"##),
            "{keys:?}"
        );
        assert_eq!(keys.last().unwrap(), r##""v1_sv"#"doc"#000"##);
        let updates = store.updates().await.unwrap();
        assert_eq!(updates.len(), 1);
        assert_eq!(text_of(&updates), format!("{big}hello world"));

        // The state vector records the snapshot's clock.
        let sv = storage
            .get_bytes(r##""v1_sv"#"doc"#000"##)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(sv[0], 3);
        let state_vector = StateVector::decode_v1(&sv[2..]).unwrap();
        assert_eq!(state_vector, doc.transact().state_vector());

        // One update alone is not compacted for its size.
        store.compact(10, 1).await.unwrap();
        assert_eq!(store.current_clock().await.unwrap(), Some(3));
    }

    #[tokio::test]
    async fn history_is_compacted_past_its_limits() {
        let storage = storage();
        let store = Store::new(storage.clone(), "doc");
        let doc = yrs::Doc::new();
        for word in ["a", "b", "c"] {
            store.store_update(&insert(&doc, word)).await.unwrap();
        }
        store.compact(2, 10_000_000).await.unwrap();
        let updates = store.updates().await.unwrap();
        assert_eq!(updates.len(), 1);
        assert_eq!(text_of(&updates), "cba");

        store.store_update(&insert(&doc, "d")).await.unwrap();
        store.compact(100, 1).await.unwrap();
        assert_eq!(store.updates().await.unwrap().len(), 1);
        assert_eq!(text_of(&store.updates().await.unwrap()), "dcba");
    }
}
