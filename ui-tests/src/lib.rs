//! trybuild tests of `#[party]`: the cases live in `tests/pass`, `tests/fail` and
//! `tests/warn`.
//!
//! This library itself holds one more case, which trybuild cannot run: handlers written
//! exactly as `#[party]`'s documentation shows raise no `clippy::pedantic` lint about
//! code the macro generated. The workspace's `cargo clippy -- -D warnings` checks it.

#[warn(clippy::pedantic)]
pub mod pedantic {
    //! A party with every handler and hook, class style.

    use partykit_runtime::{
        Before, Connection, ConnectionContext, Cron, CronLobby, Error, FetchLobby, FetchSocket,
        Lobby, Message, Request, Response, Room, party,
    };

    /// A party with every handler.
    #[party(name = "pedantic")]
    #[derive(Debug)]
    pub struct Everything {
        room: Room,
        seen: usize,
    }

    #[party]
    impl Everything {
        fn new(room: Room) -> Self {
            Everything { room, seen: 0 }
        }

        async fn on_start(&mut self) -> Result<(), Error> {
            self.seen = self.room.storage().get::<usize>("seen").await?.unwrap_or(0);
            Ok(())
        }

        fn connection_tags(
            &mut self,
            connection: &Connection,
            ctx: &ConnectionContext,
        ) -> Vec<String> {
            self.seen += 1;
            vec![
                connection.id().to_owned(),
                ctx.request().uri().path().to_owned(),
            ]
        }

        fn on_connect(&mut self, connection: &Connection, ctx: &ConnectionContext) {
            self.seen += 1;
            let _ = (connection.id(), ctx.request().method());
        }

        fn on_message(&mut self, message: Message, sender: &Connection) {
            self.room.broadcast(message, &[sender.id()]);
        }

        fn on_close(&mut self, connection: &Connection) {
            self.seen += connection.id().len();
        }

        fn on_error(&mut self, connection: &Connection, error: Error) {
            self.seen += connection.id().len() + error.to_string().len();
        }

        fn on_request(&mut self, request: Request) -> String {
            self.seen += 1;
            request.path().to_owned()
        }

        async fn on_alarm(&mut self) -> Result<(), Error> {
            self.room.storage().put("seen", &self.seen).await?;
            Ok(())
        }

        fn on_before_connect(request: Request, lobby: &Lobby) -> Before {
            let _ = lobby.id();
            Before::Forward(request)
        }

        fn on_before_request(request: Request, lobby: &Lobby) -> Request {
            let _ = lobby.id();
            request
        }

        fn on_fetch(request: Request, lobby: &FetchLobby) -> Option<Response> {
            let _ = (request.path(), lobby.env());
            None
        }

        fn on_socket(socket: FetchSocket, lobby: &FetchLobby) {
            let _ = (socket, lobby.env());
        }

        fn on_cron(cron: Cron, lobby: &CronLobby) {
            let _ = (cron.name(), lobby.env());
        }
    }
}
