//! A transaction over a room's storage: reads see its own writes; its writes apply all
//! together or not at all.

use std::collections::BTreeMap;

use bytes::Bytes;
use serde::{Serialize, de::DeserializeOwned};

use super::{ListOptions, Mutation, check_key, decode, encode};
use crate::Error;

/// The storage as seen inside [`Storage::transaction`](super::Storage::transaction).
///
/// ```
/// # async fn demo(storage: partykit_runtime::storage::Storage) -> partykit_runtime::Result<()> {
/// // Move 10 from one balance to another, or nothing if funds are short.
/// let moved = storage
///     .transaction(|txn| {
///         let from: i64 = txn.get("alice")?.unwrap_or(0);
///         let to: i64 = txn.get("bob")?.unwrap_or(0);
///         txn.put("alice", &(from - 10))?;
///         txn.put("bob", &(to + 10))?;
///         if from < 10 {
///             txn.rollback();
///             return Ok(false);
///         }
///         Ok(true)
///     })
///     .await?;
/// # let _ = moved; Ok(()) }
/// ```
#[derive(Debug)]
pub struct Transaction<'s> {
    base: &'s BTreeMap<String, Bytes>,
    /// Keys written inside the transaction: `None` is a deletion.
    overlay: BTreeMap<String, Option<Bytes>>,
    /// `delete_all` was called: the base no longer shows through.
    cleared: bool,
    mutations: Vec<Mutation>,
    rolled_back: bool,
    max_value_size: usize,
}

impl<'s> Transaction<'s> {
    pub(crate) fn new(base: &'s BTreeMap<String, Bytes>, max_value_size: usize) -> Self {
        Self {
            base,
            overlay: BTreeMap::new(),
            cleared: false,
            mutations: Vec::new(),
            rolled_back: false,
            max_value_size,
        }
    }

    /// The value under `key`, decoded from JSON.
    pub fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, Error> {
        self.get_bytes(key)?
            .map(|bytes| decode(key, &bytes))
            .transpose()
    }

    /// The raw bytes under `key`.
    pub fn get_bytes(&self, key: &str) -> Result<Option<Bytes>, Error> {
        self.usable()?;
        check_key(key)?;
        Ok(match self.overlay.get(key) {
            Some(written) => written.clone(),
            None if self.cleared => None,
            None => self.base.get(key).cloned(),
        })
    }

    /// Stores `value` (as JSON) under `key`.
    pub fn put<T: Serialize + ?Sized>(&mut self, key: &str, value: &T) -> Result<(), Error> {
        let bytes = encode(key, value)?;
        self.put_bytes(key, bytes)
    }

    /// Stores raw bytes under `key`.
    pub fn put_bytes(&mut self, key: &str, value: impl Into<Bytes>) -> Result<(), Error> {
        self.usable()?;
        check_key(key)?;
        let value = value.into();
        if value.len() > self.max_value_size {
            return Err(Error::msg(format!(
                "the value for key {key:?} is {} bytes; the limit is {} bytes",
                value.len(),
                self.max_value_size
            )));
        }
        self.overlay.insert(key.to_owned(), Some(value.clone()));
        self.mutations.push(Mutation::Put(key.to_owned(), value));
        Ok(())
    }

    /// Removes `key`; whether it existed.
    pub fn delete(&mut self, key: &str) -> Result<bool, Error> {
        let existed = self.get_bytes(key)?.is_some();
        self.overlay.insert(key.to_owned(), None);
        self.mutations.push(Mutation::Delete(key.to_owned()));
        Ok(existed)
    }

    /// The entries `options` select, decoded from JSON.
    pub fn list<T: DeserializeOwned>(
        &self,
        options: ListOptions,
    ) -> Result<Vec<(String, T)>, Error> {
        self.usable()?;
        let mut view = if self.cleared {
            BTreeMap::new()
        } else {
            self.base.clone()
        };
        for (key, written) in &self.overlay {
            match written {
                Some(value) => view.insert(key.clone(), value.clone()),
                None => view.remove(key),
            };
        }
        options
            .select(&view)?
            .into_iter()
            .map(|(key, bytes)| Ok((key.clone(), decode(key, bytes)?)))
            .collect()
    }

    /// Removes every key.
    pub fn delete_all(&mut self) -> Result<(), Error> {
        self.usable()?;
        self.cleared = true;
        self.overlay.clear();
        self.mutations.push(Mutation::DeleteAll);
        Ok(())
    }

    /// Discards every write of the transaction. Any further use of it is an error.
    pub fn rollback(&mut self) {
        self.rolled_back = true;
        self.overlay.clear();
        self.mutations.clear();
    }

    /// The writes to apply, or `None` after a rollback.
    pub(crate) fn into_mutations(self) -> Option<Vec<Mutation>> {
        (!self.rolled_back).then_some(self.mutations)
    }

    fn usable(&self) -> Result<(), Error> {
        if self.rolled_back {
            return Err(Error::msg(
                "the transaction was rolled back; it cannot be used any more",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::apply;
    use super::*;

    #[test]
    fn reads_its_own_writes_and_rolls_back() {
        let mut base = BTreeMap::new();
        base.insert("a".to_owned(), Bytes::from_static(b"1"));
        let mut txn = Transaction::new(&base, 1024);
        assert_eq!(txn.get::<i32>("a").unwrap(), Some(1));
        txn.put("a", &2).unwrap();
        txn.put("b", &3).unwrap();
        assert_eq!(txn.get::<i32>("a").unwrap(), Some(2));
        assert!(txn.delete("b").unwrap());
        assert_eq!(txn.get::<i32>("b").unwrap(), None);
        let listed: Vec<(String, i32)> = txn.list(ListOptions::new()).unwrap();
        assert_eq!(listed, [("a".to_owned(), 2)]);
        txn.rollback();
        assert!(txn.get::<i32>("a").is_err());
        assert!(txn.put("a", &1).is_err());
        assert!(txn.into_mutations().is_none());
    }

    #[test]
    fn writes_apply_in_order() {
        let base = BTreeMap::new();
        let mut txn = Transaction::new(&base, 4);
        txn.put("a", &1).unwrap();
        txn.delete_all().unwrap();
        txn.put("b", &2).unwrap();
        assert!(txn.put("c", "too long").is_err());
        let mut entries = BTreeMap::new();
        for mutation in txn.into_mutations().unwrap() {
            apply(&mut entries, &mutation);
        }
        assert_eq!(entries.keys().collect::<Vec<_>>(), ["b"]);
    }
}
