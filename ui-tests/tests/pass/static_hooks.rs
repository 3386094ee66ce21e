//! The static hooks: sync or async, trailing parameters left out, every accepted return.

// Class style only: the generated code must trigger no lint at all.
#![deny(warnings)]

use partykit_runtime::{
    Before, Cron, CronLobby, Error, FetchLobby, FetchSocket, Handlers, Lobby, Party, Request,
    Response, StatusCode, party,
};

#[party]
#[derive(Default)]
struct Full;

#[party]
impl Full {
    async fn on_before_connect(request: Request, lobby: &Lobby) -> Result<Request, Error> {
        if lobby.id().is_empty() {
            return Err(Error::with_status(StatusCode::FORBIDDEN, "no room"));
        }
        Ok(request)
    }

    async fn on_before_request(request: Request, _lobby: &Lobby) -> Before {
        Before::Forward(request)
    }

    async fn on_fetch(
        request: Request,
        _lobby: &FetchLobby,
    ) -> Result<Option<String>, Error> {
        Ok(Some(request.path().to_owned()))
    }

    async fn on_socket(socket: FetchSocket, _lobby: &FetchLobby) -> Result<(), Error> {
        drop(socket);
        Ok(())
    }

    async fn on_cron(cron: Cron, _lobby: &CronLobby) {
        let _ = cron.name();
    }
}

#[party(name = "short")]
#[derive(Default)]
struct Short;

#[party]
impl Short {
    fn on_before_connect(request: Request) -> Request {
        request
    }

    fn on_before_request() -> Result<Response, Error> {
        Err(Error::msg("requests are not allowed"))
    }

    fn on_fetch() -> Option<&'static str> {
        None
    }

    fn on_socket(_socket: FetchSocket) {}

    fn on_cron() {}
}

fn main() {
    assert_eq!(
        <Full as Party>::HANDLERS,
        Handlers {
            on_request: false,
            on_fetch: true,
            on_socket: true,
            on_cron: true,
        }
    );
    let _ = partykit_runtime::Server::new().party::<Full>().party::<Short>();
}
