//! Project variables, as `room.env` gives them in PartyKit: from a `.env` file, from
//! `PARTYKIT_VAR_*` process variables and from [`Server::var`](crate::Server::var).

use std::ffi::OsString;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use serde_json::{Map, Value};

use crate::ServerError;

/// The project's variables: what PartyKit calls `room.env`.
///
/// Values are JSON, so a variable can hold a number or a nested object. The server
/// collects them when it starts, from three sources; a later one wins over an earlier one
/// for the same name:
///
/// 1. the `.env` file ([`Env::DEFAULT_FILE`] in the current directory, or
///    [`Server::env_file`](crate::Server::env_file)); a missing file is fine;
/// 2. process environment variables named [`Env::PROCESS_PREFIX`]`<NAME>`
///    (`PARTYKIT_VAR_API_URL=…` gives `API_URL`);
/// 3. [`Server::var`](crate::Server::var).
///
/// Nothing else of the process environment leaks in: `PATH`, `HOME` or `PARTYKIT_PORT`
/// are not project variables.
///
/// Text from the file and the process environment becomes JSON when it is JSON: `42`,
/// `-1.5`, `true`, `null`, `{"max": 3}`, `[1, 2]` and `"quoted"` give those values, anything
/// else (`hello`, `1.0.2`, `0042`) stays a string. A number becomes a number only when
/// JSON would write it back the same way, so `12345678901234567890123` or `1e3` stay
/// strings instead of losing digits. In the `.env` file, a quoted value (`"…"` or `'…'`)
/// is always a string.
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
    /// The prefix of process environment variables that become project variables:
    /// `PARTYKIT_VAR_<NAME>` gives `<NAME>` (the prefix is case-sensitive, the name keeps
    /// its case).
    pub const PROCESS_PREFIX: &'static str = "PARTYKIT_VAR_";

    /// The file read unless [`Server::env_file`](crate::Server::env_file) names another:
    /// `.env`, relative to the current directory.
    pub const DEFAULT_FILE: &'static str = ".env";

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

/// Which `.env` file the server reads.
#[derive(Debug, Default)]
pub(crate) enum EnvFile {
    /// [`Env::DEFAULT_FILE`] in the current directory, if it exists.
    #[default]
    Default,
    /// This file, chosen with `Server::env_file`; a missing one is logged.
    Chosen(PathBuf),
    /// None.
    Off,
}

/// The project's variables: the `.env` file, then `PARTYKIT_VAR_*` process variables,
/// then `builder` (the builder's `var` calls, in order), a later source winning.
pub(crate) fn load(file: &EnvFile, builder: Vec<(String, Value)>) -> Result<Env, ServerError> {
    let mut vars = Map::new();
    let (path, chosen) = match file {
        EnvFile::Default => (Some(PathBuf::from(Env::DEFAULT_FILE)), false),
        EnvFile::Chosen(path) => (Some(path.clone()), true),
        EnvFile::Off => (None, false),
    };
    if let Some(path) = path {
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                let found = parse_dotenv(&text).map_err(|DotenvError { line, message }| {
                    ServerError::EnvFile {
                        path: path.clone(),
                        line,
                        message,
                    }
                })?;
                tracing::info!(path = %path.display(), count = found.len(), "loaded project variables");
                vars.extend(found);
            }
            Err(error) if error.kind() == io::ErrorKind::NotFound => {
                if chosen {
                    tracing::warn!(path = %path.display(), "no project variables file here");
                }
            }
            Err(error) => return Err(ServerError::ReadEnvFile { path, error }),
        }
    }
    vars.extend(from_process(std::env::vars_os()));
    vars.extend(builder);
    Ok(Env {
        vars: Arc::new(vars),
    })
}

/// The project variables the process environment sets: `PARTYKIT_VAR_<NAME>` gives
/// `<NAME>`. Names that are not Unicode, values that are not Unicode (logged) and the bare
/// prefix are skipped.
pub(crate) fn from_process(
    vars: impl IntoIterator<Item = (OsString, OsString)>,
) -> Vec<(String, Value)> {
    let mut found = Vec::new();
    for (name, value) in vars {
        let Some(name) = name
            .to_str()
            .and_then(|name| name.strip_prefix(Env::PROCESS_PREFIX))
            .filter(|name| !name.is_empty())
        else {
            continue;
        };
        match value.into_string() {
            Ok(value) => found.push((name.to_owned(), parse_value(&value))),
            Err(_) => tracing::warn!(
                variable = %format!("{}{name}", Env::PROCESS_PREFIX),
                "skipping a project variable whose value is not Unicode"
            ),
        }
    }
    found
}

/// A variable's text as a value: JSON when it is JSON (numbers only when nothing is lost),
/// else a string.
pub(crate) fn parse_value(text: &str) -> Value {
    match serde_json::from_str::<Value>(text) {
        Ok(value) if is_lossless(&value, text.trim()) => value,
        _ => Value::String(text.to_owned()),
    }
}

/// Whether `value`, parsed from `text`, keeps all of it: true unless it is a number that
/// JSON would write otherwise (`1e3`, more digits than a float holds).
fn is_lossless(value: &Value, text: &str) -> bool {
    match value {
        Value::Number(number) => number.to_string() == text,
        _ => true,
    }
}

/// A malformed line of a `.env` file: its number (from 1) and what is wrong.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct DotenvError {
    pub(crate) line: usize,
    pub(crate) message: String,
}

/// Parses a `.env` file: `NAME=value` lines, optionally prefixed with `export `; blank
/// lines and `#` comments are skipped. Names match `[A-Za-z_][A-Za-z0-9_.-]*`. A value is
/// `"double-quoted"` (escapes `\n`, `\r`, `\t`, `\"`, `\\`), `'single-quoted'` (literal),
/// or bare: trimmed, with a trailing ` # comment` removed unless the whole text is JSON.
/// Quoted values are strings; bare ones go through [`parse_value`]. A later line wins
/// over an earlier one with the same name.
pub(crate) fn parse_dotenv(text: &str) -> Result<Vec<(String, Value)>, DotenvError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut vars = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let fail = |message: String| DotenvError {
            line: index + 1,
            message,
        };
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let rest = line
            .strip_prefix("export")
            .filter(|rest| rest.starts_with([' ', '\t']))
            .map_or(line, str::trim_start);
        let Some((name, value)) = rest.split_once('=') else {
            return Err(fail(format!("expected `NAME=value`, found {line:?}")));
        };
        let name = name.trim();
        if !is_valid_name(name) {
            return Err(fail(format!(
                "invalid variable name {name:?}: use letters, digits, `_`, `.` and `-`, not starting with a digit"
            )));
        }
        let value = value.trim();
        let value = match value.chars().next() {
            Some(quote @ ('"' | '\'')) => {
                let (text, after) = unquote(&value[1..], quote)
                    .ok_or_else(|| fail(format!("the value of `{name}` has no closing {quote}")))?;
                let after = after.trim_start();
                if !(after.is_empty() || after.starts_with('#')) {
                    return Err(fail(format!(
                        "unexpected text after the closing {quote} of `{name}`: {after:?}"
                    )));
                }
                Value::String(text)
            }
            _ => bare_value(value),
        };
        vars.push((name.to_owned(), value));
    }
    Ok(vars)
}

fn is_valid_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes
        .next()
        .is_some_and(|first| first.is_ascii_alphabetic() || first == b'_')
        && bytes.all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'_' | b'.' | b'-'))
}

/// The text up to the closing `quote` and what follows it; `None` if it is not closed.
/// Double quotes take backslash escapes; single quotes are literal.
fn unquote(text: &str, quote: char) -> Option<(String, &str)> {
    let mut value = String::new();
    let mut chars = text.char_indices();
    while let Some((at, char)) = chars.next() {
        match char {
            _ if char == quote => return Some((value, &text[at + 1..])),
            '\\' if quote == '"' => match chars.next()?.1 {
                'n' => value.push('\n'),
                'r' => value.push('\r'),
                't' => value.push('\t'),
                escaped @ ('"' | '\\') => value.push(escaped),
                other => {
                    value.push('\\');
                    value.push(other);
                }
            },
            _ => value.push(char),
        }
    }
    None
}

/// A bare value: the whole text if it is JSON, else the text before a ` #` comment.
fn bare_value(value: &str) -> Value {
    if let Ok(json) = serde_json::from_str::<Value>(value)
        && is_lossless(&json, value)
    {
        return json;
    }
    let without_comment = value
        .char_indices()
        .find(|&(at, char)| char == '#' && value[..at].ends_with([' ', '\t']))
        .map_or(value, |(at, _)| value[..at].trim_end());
    parse_value(without_comment)
}

#[cfg(test)]
mod tests {
    use std::ffi::OsString;

    use serde_json::{Value, json};

    use super::{DotenvError, from_process, parse_dotenv, parse_value};

    #[test]
    fn values_are_json_when_nothing_is_lost() {
        let cases = [
            ("42", json!(42)),
            ("-1.5", json!(-1.5)),
            ("true", json!(true)),
            ("null", Value::Null),
            (r#"{"max": 3}"#, json!({"max": 3})),
            ("[1,2]", json!([1, 2])),
            (r#""quoted""#, json!("quoted")),
            ("hello", json!("hello")),
            ("1.0.2", json!("1.0.2")),
            ("0042", json!("0042")),
            ("1e3", json!("1e3")),
            ("12345678901234567890123", json!("12345678901234567890123")),
            ("", json!("")),
        ];
        for (text, expected) in cases {
            assert_eq!(parse_value(text), expected, "{text}");
        }
    }

    #[test]
    fn dotenv_lines() {
        let text = "\u{feff}# comment\n\
            \n\
            A=1\n\
            export B = two words  \n\
            C=\"quoted # not a comment\\n\\\"x\\\"\" # comment\n\
            D='single \\n' \n\
            E=value # comment\n\
            F={\"a\": \"b #c\"}\n\
            G=\n\
            H=\"42\"\n\
            A=3\r\n\
            I.J-K=x=y\n";
        let vars = parse_dotenv(text).unwrap();
        assert_eq!(
            vars,
            vec![
                ("A".to_owned(), json!(1)),
                ("B".to_owned(), json!("two words")),
                ("C".to_owned(), json!("quoted # not a comment\n\"x\"")),
                ("D".to_owned(), json!("single \\n")),
                ("E".to_owned(), json!("value")),
                ("F".to_owned(), json!({"a": "b #c"})),
                ("G".to_owned(), json!("")),
                ("H".to_owned(), json!("42")),
                ("A".to_owned(), json!(3)),
                ("I.J-K".to_owned(), json!("x=y")),
            ]
        );
    }

    #[test]
    fn malformed_dotenv_lines_name_their_line() {
        let cases = [
            ("A=1\nno equals sign\n", 2, "expected `NAME=value`"),
            ("\n\n1A=x", 3, "invalid variable name \"1A\""),
            ("=x", 1, "invalid variable name \"\""),
            ("A=\"open", 1, "no closing \""),
            ("A='open", 1, "no closing '"),
            ("A=\"x\" y", 1, "unexpected text after the closing"),
            ("export=1\nexport A", 2, "expected `NAME=value`"),
        ];
        for (text, line, message) in cases {
            let DotenvError {
                line: at,
                message: got,
            } = parse_dotenv(text).unwrap_err();
            assert_eq!(at, line, "{text:?}");
            assert!(got.contains(message), "{text:?}: {got}");
        }
    }

    #[test]
    fn only_prefixed_process_variables() {
        let vars = from_process([
            (OsString::from("PATH"), OsString::from("/bin")),
            (OsString::from("PARTYKIT_VAR_"), OsString::from("x")),
            (OsString::from("partykit_var_LOWER"), OsString::from("x")),
            (
                OsString::from("PARTYKIT_VAR_Name"),
                OsString::from("{\"a\":1}"),
            ),
            (OsString::from("PARTYKIT_PORT"), OsString::from("1999")),
        ]);
        assert_eq!(vars, vec![("Name".to_owned(), json!({"a": 1}))]);
    }
}
