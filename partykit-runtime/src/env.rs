//! Project variables, as `room.env` gives them in PartyKit.

use std::sync::Arc;

use serde_json::{Map, Value};

/// The project's variables: what PartyKit calls `room.env`.
///
/// Values are JSON, so a variable can hold a number or a nested object. Only what you
/// set on the [`Server`](crate::Server) appears here; the process environment does not
/// leak in.
///
/// ```
/// use partykit_runtime::Env;
///
/// let env = Env::from_iter([
///     ("GREETING".to_owned(), serde_json::json!("hi")),
///     ("LIMITS".to_owned(), serde_json::json!({"max": 3})),
/// ]);
/// assert_eq!(env.get_str("GREETING"), Some("hi"));
/// assert_eq!(env.get("LIMITS").unwrap()["max"], 3);
/// assert!(env.get("PATH").is_none());
/// ```
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Env {
    vars: Arc<Map<String, Value>>,
}

impl Env {
    /// A variable's value.
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.vars.get(name)
    }

    /// A variable's value, if it is a JSON string.
    pub fn get_str(&self, name: &str) -> Option<&str> {
        self.vars.get(name)?.as_str()
    }

    /// Every variable, in name order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.vars.iter().map(|(name, value)| (name.as_str(), value))
    }

    /// How many variables there are.
    pub fn len(&self) -> usize {
        self.vars.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.vars.is_empty()
    }
}

impl FromIterator<(String, Value)> for Env {
    fn from_iter<I: IntoIterator<Item = (String, Value)>>(iter: I) -> Self {
        Self {
            vars: Arc::new(iter.into_iter().collect()),
        }
    }
}
