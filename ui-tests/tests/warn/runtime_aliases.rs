//! PartyKit's deprecated runtime names: each warns with the name to use instead.

#![deny(deprecated)]

use partykit_runtime::deprecated as old;
use partykit_runtime::{Connection, Error, Room};

fn methods(room: &Room, connection: &Connection) -> Result<(), Error> {
    let _ = room.connections();
    let _ = room.parties();
    let _ = connection.socket();
    connection.serialize_attachment(&1)?;
    let _: Option<u32> = connection.deserialize_attachment()?;
    Ok(())
}

fn types(
    _room: &old::PartyKitRoom,
    _connection: &old::PartyKitConnection,
    _also: &old::PartyConnection,
    _ctx: &old::PartyKitContext,
    _also_ctx: &old::PartyConnectionContext,
    _storage: &old::PartyKitStorage,
    _also_storage: &old::PartyStorage,
    _request: old::PartyRequest,
    _lobby: &old::PartyLobby,
    _fetch_lobby: &old::PartyFetchLobby,
    _stub: &old::PartyStub,
    _context: &old::PartyContext,
) {
}

fn main() {
    let _ = (methods, types);
}
