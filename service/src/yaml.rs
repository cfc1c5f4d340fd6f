//! Reading a YAML configuration file, with errors that say where:
//! `path:line:column: field: reason`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};

/// A file that does not parse into the configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}:{line}:{column}: {message}", path.display())]
pub struct YamlError {
    pub path: PathBuf,
    pub line: usize,
    pub column: usize,
    /// The field (its path in the file) and the reason.
    pub message: String,
}

/// Parse `text`, read from `path` (named in errors only). An empty file is
/// the empty mapping.
pub fn parse<T: DeserializeOwned>(path: &Path, text: &str) -> Result<T, YamlError> {
    parse_noting_unknown(path, text).map(|(value, _)| value)
}

/// [`parse`], and the keys the configuration does not know (`tickets.foo`),
/// so the caller can say it ignores them — gokeyless ignores them silently.
pub fn parse_noting_unknown<T: DeserializeOwned>(path: &Path, text: &str) -> Result<(T, Vec<String>), YamlError> {
    let text = if text.trim().is_empty() { "{}" } else { text };
    let mut unknown = Vec::new();
    let value = serde_ignored::deserialize(serde_yaml_ng::Deserializer::from_str(text), |key| {
        unknown.push(key.to_string())
    })
    .map_err(|e| {
        let (line, column) = e.location().map_or((1, 1), |l| (l.line(), l.column()));
        // serde_yaml_ng appends " at line L column C"; it goes in front instead.
        let message = e.to_string();
        let message = plain(message.split(" at line ").next().unwrap_or(&message));
        // serde reports a duplicate at the start of its mapping: point at the
        // key's second appearance instead.
        let (line, column) = duplicate_line(text, &message).map_or((line, column), |l| (l, 1));
        YamlError {
            path: path.to_owned(),
            line,
            column,
            message,
        }
    })?;
    Ok((value, unknown))
}

/// For "duplicate field `key`": the line of the key's second appearance at
/// the start of a line (the top level, where serde's location is the
/// mapping's first line).
fn duplicate_line(text: &str, message: &str) -> Option<usize> {
    let key = message.split("duplicate field `").nth(1)?.split('`').next()?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| {
            l.strip_prefix(key)
                .is_some_and(|rest| rest.trim_start().starts_with(':'))
        })
        .nth(1)
        .map(|(i, _)| i + 1)
}

/// serde's type names, as an operator would say them.
fn plain(message: &str) -> String {
    [
        (
            "expected u16",
            "expected a whole number from 0 to 65535 (a port number)",
        ),
        ("expected u8", "expected a whole number from 0 to 255"),
        ("expected u64", "expected a whole number"),
        ("expected usize", "expected a whole number"),
        ("expected a nonzero u16", "expected a whole number from 1 to 65535"),
        ("expected a nonzero u64", "expected a whole number of at least 1"),
        ("expected a nonzero usize", "expected a whole number of at least 1"),
        ("expected a boolean", "expected true or false"),
    ]
    .iter()
    .fold(message.to_string(), |m, (from, to)| m.replace(from, to))
}

/// A duration in the file: a number of seconds (`30`), or a number with a
/// unit (`500ms`, `2s`, `5m`, `18h`), as humantime reads it.
pub fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    d.deserialize_option(OptionalDuration)
}

struct OptionalDuration;

impl<'de> serde::de::Visitor<'de> for OptionalDuration {
    type Value = Option<Duration>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a duration: seconds (30) or a number and a unit (500ms, 2s, 5m)")
    }

    fn visit_none<E: serde::de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }

    fn visit_u64<E: serde::de::Error>(self, s: u64) -> Result<Self::Value, E> {
        Ok(Some(Duration::from_secs(s)))
    }

    fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Self::Value, E> {
        humantime::parse_duration(text.trim()).map(Some).map_err(|e| {
            E::custom(format!(
                "{text:?} is not a duration ({e}): write seconds (30) or a number and a unit (500ms, 2s, 5m)"
            ))
        })
    }
}

/// A duration on the command line, as in the files: seconds (`30`) or a
/// number and a unit (`500ms`, `1h`, `18h`). A clap `value_parser`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if let Ok(seconds) = text.parse::<u64>() {
        return Ok(Duration::from_secs(seconds));
    }
    humantime::parse_duration(text)
        .map_err(|e| format!("{text:?} is not a duration ({e}): write seconds (30) or a number and a unit (500ms, 1h)"))
}

/// A duration in milliseconds (an old spelling, `*_ms`).
pub fn millis<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    Ok(Option::<u64>::deserialize(d)?.map(Duration::from_millis))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize, PartialEq)]
    struct T {
        #[serde(default, deserialize_with = "duration")]
        wait: Option<Duration>,
        port: Option<u16>,
    }

    #[test]
    fn errors_name_the_file_the_line_and_the_field() {
        let e = parse::<T>(Path::new("x.yaml"), "wait: 2s\nport: 70000\n").unwrap_err();
        assert_eq!((e.line, e.path.clone()), (2, PathBuf::from("x.yaml")));
        assert!(e.to_string().starts_with("x.yaml:2:"), "{e}");
        assert!(e.message.contains("port"), "{e}");
        let e = parse::<T>(Path::new("x.yaml"), "port: 1\nwait: soon\n").unwrap_err();
        assert!(
            e.to_string().starts_with("x.yaml:2:") && e.message.contains("wait"),
            "{e}"
        );
    }

    #[test]
    fn a_duplicate_key_is_placed_on_its_second_line() {
        let e = parse::<T>(Path::new("x.yaml"), "port: 1\nwait: 2\nport: 3\n").unwrap_err();
        assert_eq!(e.line, 3, "{e}");
        assert!(e.message.contains("duplicate field `port`"), "{e}");
    }

    #[test]
    fn unknown_keys_are_noted_not_refused() {
        let (t, unknown) = parse_noting_unknown::<T>(Path::new("x.yaml"), "port: 1\ncolour: blue\n").unwrap();
        assert_eq!((t.port, unknown), (Some(1), vec!["colour".to_string()]));
    }

    #[test]
    fn command_line_durations_read_as_the_files_do() {
        assert_eq!(parse_duration("30"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("18h"), Ok(Duration::from_secs(18 * 3600)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert!(parse_duration("soon")
            .unwrap_err()
            .contains("\"soon\" is not a duration"));
    }

    #[test]
    fn durations_take_seconds_or_a_unit() {
        let t = |text| parse::<T>(Path::new("x.yaml"), text).unwrap().wait;
        assert_eq!(t("wait: 30"), Some(Duration::from_secs(30)));
        assert_eq!(t("wait: 500ms"), Some(Duration::from_millis(500)));
        assert_eq!(t("wait: 5m"), Some(Duration::from_secs(300)));
        assert_eq!(t(""), None);
    }
}
