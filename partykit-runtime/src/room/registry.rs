//! The connections of one room, by id, in connection order.

use indexmap::IndexMap;

use crate::Connection;

#[derive(Default)]
pub(super) struct Registry {
    connections: IndexMap<String, Connection>,
}

impl Registry {
    /// Adds `connection`; one already registered under its id is replaced and returned.
    pub(super) fn insert(&mut self, connection: Connection) -> Option<Connection> {
        let id = connection.id().to_owned();
        // A reconnect takes the end of the order, as a new connection would.
        let replaced = self.connections.shift_remove(&id);
        self.connections.insert(id, connection);
        replaced
    }

    /// Removes `connection` if it is the one registered under its id. A socket replaced
    /// by a reconnect with the same id must not remove its successor.
    pub(super) fn remove(&mut self, connection: &Connection) -> bool {
        match self.connections.get(connection.id()) {
            Some(current) if current.same_socket(connection) => {
                self.connections.shift_remove(connection.id());
                true
            }
            _ => false,
        }
    }

    pub(super) fn get(&self, id: &str) -> Option<&Connection> {
        self.connections.get(id)
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = &Connection> {
        self.connections.values()
    }

    pub(super) fn len(&self) -> usize {
        self.connections.len()
    }
}
