//! Anything that implements the documented trait works, however it is spelled: aliases,
//! `Result`s whose error is a response, boxed errors, receivers naming the type.

use std::error::Error as StdError;

// A glob import brings `Party` (with its own `new` and handlers) into scope: the macro's
// generated code must not become ambiguous.
use partykit_runtime::*;

type AnyError = Box<dyn StdError + Send + Sync>;
type Res<T> = std::result::Result<T, std::io::Error>;
type Answer = std::result::Result<Json<Vec<u32>>, (StatusCode, String)>;

#[party]
struct Shapes {
    room: Room,
}

#[party]
impl Shapes {
    // `Shapes` for `Self`.
    fn new(room: Room) -> Shapes {
        Shapes { room }
    }

    // A boxed error, `Send + Sync` or not.
    async fn on_start(self: &mut Self) -> std::result::Result<(), AnyError> {
        Ok(())
    }

    fn on_message(self: &mut Shapes, _message: Message) -> std::result::Result<(), Box<dyn StdError>> {
        let _ = &self.room;
        Ok(())
    }

    fn on_close(self: &Self, _connection: &Connection) -> Res<()> {
        Ok(())
    }

    fn connection_tags(&mut self, _connection: &Connection) -> std::result::Result<Vec<&'static str>, AnyError> {
        Ok(vec!["a"])
    }

    // A `Result` whose error is a response answers with it, as in axum.
    fn on_request(&mut self, request: Request) -> Answer {
        if request.method() == Method::POST {
            return Err((StatusCode::BAD_REQUEST, "no".to_owned()));
        }
        Ok(Json(vec![1, 2]))
    }

    fn on_alarm(&mut self) -> Result {
        Ok(())
    }

    fn on_before_connect(request: Request, _lobby: &Lobby) -> std::result::Result<Request, AnyError> {
        Ok(request)
    }

    fn on_fetch(_request: Request, _lobby: &FetchLobby) -> Res<Option<String>> {
        Ok(None)
    }
}

// An error that converts into a response, a `String` error (a response too), an alias
// over an error type, and an I/O error behind an opaque response.
#[party(name = "more")]
#[derive(Default)]
struct More;

#[party]
impl More {
    fn on_request(&mut self, _request: Request) -> std::result::Result<String, String> {
        Ok(String::new())
    }
}

#[party(name = "opaque")]
#[derive(Default)]
struct Opaque;

#[party]
impl Opaque {
    async fn on_request(&mut self, _request: Request) -> std::result::Result<impl IntoResponse, std::io::Error> {
        Ok("text")
    }
}

#[party(name = "boxed")]
#[derive(Default)]
struct Boxed;

#[party]
impl Boxed {
    fn on_request(&mut self, _request: Request) -> std::result::Result<&'static str, AnyError> {
        Ok("text")
    }
}

// The constructor in an impl block of its own: used, as `Chat::new` is the constructor.
#[party(name = "split")]
struct Split {
    count: u32,
}

impl Split {
    fn new(_room: Room) -> Self {
        Split { count: 0 }
    }
}

#[party]
impl Split {
    fn on_alarm(&mut self) {
        self.count += 1;
    }
}

fn main() {
    // A party inside a fn body (as in a test), with a constructor in another block.
    #[party(name = "local")]
    struct Local {
        started: bool,
    }

    impl Local {
        fn new() -> Self {
            Local { started: false }
        }
    }

    #[party]
    impl Local {
        fn on_start(&mut self) {
            self.started = true;
        }
    }

    let _ = Server::new()
        .party::<Local>()
        .party::<Shapes>()
        .party::<More>()
        .party::<Opaque>()
        .party::<Boxed>()
        .party::<Split>();
}
