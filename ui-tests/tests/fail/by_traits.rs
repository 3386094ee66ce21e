//! Return types judged by the traits of `partykit_runtime::handler`: a type that does not
//! fit gets one message naming the trait and the shapes that fit, however it is spelled.

use partykit_runtime::{Error, Json, Message, Request, Room, party};

struct NotAnError;

struct NotDeserialize;

type Outcome = Result<(), String>;

#[party]
struct Types {
    room: Room,
}

#[party]
impl Types {
    // Fallible set-up belongs in `on_start`.
    fn new(room: Room) -> Result<Self, Error> {
        Ok(Types { room })
    }

    // `String` is a message, not an error.
    fn on_message(&mut self, _message: Message) -> Result<(), String> {
        Ok(())
    }

    // The same behind an alias.
    fn on_close(&mut self) -> Outcome {
        Ok(())
    }

    fn on_request(&mut self, _request: Request) -> Result<String, NotAnError> {
        Ok(String::new())
    }

    fn on_alarm(&mut self) -> Option<()> {
        None
    }
}

fn main() {}

#[party(name = "typed")]
#[derive(Default)]
struct Typed;

#[party]
impl Typed {
    // `Json<T>` needs a `T` that serde can decode.
    fn on_message(&mut self, _message: Json<NotDeserialize>) {}
}
