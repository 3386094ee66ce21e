//! The default storage, SQLite under `.partykit/`, opened when a room first writes: a
//! server whose parties never touch storage creates no `.partykit/` directory.

use std::path::{Path, PathBuf};

use tokio::sync::OnceCell;

use super::backend::{Backend, BackendError, BoxFuture, RoomCommit, RoomKey, RoomSnapshot};
use super::sqlite::SqliteBackend;

/// SQLite at `path`, opened at once when the file exists (its rooms and alarms are read
/// from it, and a file that cannot be opened fails the server's start), and otherwise on
/// the first commit. Until then no room has stored anything: loads see empty rooms and
/// there are no alarms.
pub(crate) struct SqliteOnFirstWrite {
    path: PathBuf,
    opened: OnceCell<SqliteBackend>,
}

impl SqliteOnFirstWrite {
    /// Blocking when the file exists (it is opened): call it where blocking is allowed.
    pub(crate) fn new(path: impl AsRef<Path>) -> Result<Self, BackendError> {
        let path = path.as_ref().to_path_buf();
        let opened = OnceCell::new();
        if path.exists() {
            let backend = SqliteBackend::open(&path)?;
            let _ = opened.set(backend);
        }
        Ok(Self { path, opened })
    }

    async fn backend(&self) -> Result<&SqliteBackend, BackendError> {
        self.opened
            .get_or_try_init(|| async {
                let path = self.path.clone();
                tracing::info!(path = %path.display(), "a room wrote first: creating its database");
                tokio::task::spawn_blocking(move || SqliteBackend::open(path))
                    .await
                    .map_err(|error| {
                        BackendError::new(format!("opening the database failed: {error}"))
                    })?
            })
            .await
    }
}

impl Backend for SqliteOnFirstWrite {
    fn load(&self, room: &RoomKey) -> BoxFuture<'_, Result<RoomSnapshot, BackendError>> {
        match self.opened.get() {
            Some(backend) => Backend::load(backend, room),
            None => Box::pin(std::future::ready(Ok(RoomSnapshot::default()))),
        }
    }

    fn commit(&self, commit: RoomCommit) -> BoxFuture<'_, Result<(), BackendError>> {
        Box::pin(async move { Backend::commit(self.backend().await?, commit).await })
    }

    fn alarms(&self) -> BoxFuture<'_, Result<Vec<(RoomKey, i64)>, BackendError>> {
        match self.opened.get() {
            Some(backend) => Backend::alarms(backend),
            None => Box::pin(std::future::ready(Ok(Vec::new()))),
        }
    }

    fn close(&self) -> BoxFuture<'_, ()> {
        match self.opened.get() {
            Some(backend) => Backend::close(backend),
            None => Box::pin(std::future::ready(())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::Mutation;

    #[tokio::test]
    async fn the_database_is_created_by_the_first_write_only() {
        let dir = std::env::temp_dir().join(format!("partykit-first-write-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("state.sqlite3");
        let room = RoomKey::new("main", "r1");

        let backend = SqliteOnFirstWrite::new(&path).expect("no file yet");
        assert_eq!(
            backend.load(&room).await.expect("a load"),
            RoomSnapshot::default()
        );
        assert!(backend.alarms().await.expect("alarms").is_empty());
        assert!(!dir.exists(), "reads create nothing");

        let put = Mutation::Put("k".into(), "v".into());
        backend
            .commit(RoomCommit::new(room.clone(), vec![put]))
            .await
            .expect("the first write");
        assert!(path.exists(), "the first write creates the database");
        backend.close().await;

        // A server started later opens the existing file at once and sees the write.
        let reopened = SqliteOnFirstWrite::new(&path).expect("the file opens");
        assert_eq!(reopened.load(&room).await.expect("a load").entries.len(), 1);
        reopened.close().await;
        let _ = std::fs::remove_dir_all(&dir);
    }
}
