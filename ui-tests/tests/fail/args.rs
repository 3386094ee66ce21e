//! Bad attribute arguments: each is reported, all in one compile.

use partykit_runtime::party;

#[party(nme = "chat")]
#[derive(Default)]
struct Unknown;

#[party]
impl Unknown {}

#[party(name = "chat", name = "chat2")]
#[derive(Default)]
struct Repeated;

#[party]
impl Repeated {}

#[party(name = "My Chat")]
#[derive(Default)]
struct InvalidName;

#[party]
impl InvalidName {}

#[party(name = chat)]
#[derive(Default)]
struct NotAString;

#[party]
impl NotAString {}

#[party(crate = "not a path")]
#[derive(Default)]
struct BadCrate;

#[party]
impl BadCrate {}

#[party("chat")]
#[derive(Default)]
struct Unparsable;

#[party]
impl Unparsable {}

#[party(crate = "partykit_runtime", crate = "partykit_runtime")]
#[derive(Default)]
struct RepeatedCrate;

#[party]
impl RepeatedCrate {}

#[party]
#[derive(Default)]
struct NameOnImpl;

#[party(name = "name-on-impl")]
impl NameOnImpl {}

#[party(hibernate = true)]
#[derive(Default)]
struct HibernateWithValue;

#[party]
impl HibernateWithValue {}

#[party(hibernate, hibernate)]
#[derive(Default)]
struct RepeatedHibernate;

#[party]
impl RepeatedHibernate {}

#[party]
#[derive(Default)]
struct HibernateOnImpl;

#[party(hibernate)]
impl HibernateOnImpl {}

fn main() {}
