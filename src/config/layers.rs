//! The four layers merged into one value per key, each remembering its source, and the typed
//! readers [`super::Settings`] is built with.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::core::token::Secret;

use super::keys::{KEYS, Key, Kind, lookup};

/// Where a value came from, for error messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Default,
    File(PathBuf),
    Env(String),
    Flag(String),
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Default => f.write_str("the built-in default"),
            Source::File(path) => write!(f, "config file {}", path.display()),
            Source::Env(var) => write!(f, "environment variable {var}"),
            Source::Flag(flag) => write!(f, "flag {flag}"),
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigError {
    #[error("unknown configuration key {key:?} in {from}")]
    UnknownKey { key: String, from: Source },
    #[error("invalid value for {key} from {from}: {reason}")]
    BadValue {
        key: &'static str,
        from: Source,
        reason: String,
    },
    #[error("cannot read config file {path}: {reason}")]
    File { path: PathBuf, reason: String },
}

/// The merged raw values, one per key, each with its source. Its `Debug` shows secrets as
/// `[redacted]` and URLs without their `user:password@`.
#[derive(Clone)]
pub struct Layers {
    values: BTreeMap<&'static str, (String, Source)>,
    /// Unknown `PYROSCOPE_*` environment variables, reported as warnings.
    pub ignored_env: Vec<String>,
}

impl fmt::Debug for Layers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut map = f.debug_map();
        for (name, (_, source)) in &self.values {
            map.entry(name, &format_args!("{} from {source}", self.shown(name)));
        }
        map.finish()?;
        if !self.ignored_env.is_empty() {
            write!(f, " ignoring {:?}", self.ignored_env)?;
        }
        Ok(())
    }
}

/// Where the `user:password@` of a URL ends (the `@`), if it has one: an `@` before the first
/// `/`, `?` or `#` after the scheme.
fn userinfo_at(raw: &str) -> Option<usize> {
    let start = raw.find("://").map_or(0, |i| i + 3);
    let rest = &raw[start..];
    let host_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    rest[..host_end].rfind('@').map(|at| start + at)
}

/// `https://user:pass@host/x` → `https://[redacted]@host/x`.
fn without_userinfo(raw: &str) -> String {
    match userinfo_at(raw) {
        Some(at) => {
            let start = raw.find("://").map_or(0, |i| i + 3);
            format!("{}[redacted]{}", &raw[..start], &raw[at..])
        }
        None => raw.to_owned(),
    }
}

impl Layers {
    /// Built-in defaults only.
    pub fn defaults() -> Self {
        Layers {
            values: KEYS
                .iter()
                .map(|k| (k.name, (k.default.to_owned(), Source::Default)))
                .collect(),
            ignored_env: Vec::new(),
        }
    }

    /// Merges all four layers. `env` is passed in (not read here) so tests never touch the
    /// process environment.
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
        flags: &ConfigFlags,
    ) -> Result<Self, ConfigError> {
        let mut layers = Layers::defaults();
        if let Some(path) = file {
            layers.merge_file(path)?;
        }
        layers.merge_env(env);
        for (name, value) in &flags.values {
            let key = lookup(name).ok_or_else(|| ConfigError::UnknownKey {
                key: name.clone(),
                from: Source::Flag(format!("--{name}")),
            })?;
            layers.set(key, value.clone(), Source::Flag(key.flag()));
        }
        Ok(layers)
    }

    fn set(&mut self, key: &'static Key, value: String, source: Source) {
        self.values.insert(key.name, (value, source));
    }

    pub fn merge_file(&mut self, path: &Path) -> Result<(), ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::File {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
        self.merge_yaml(&text, path)
    }

    pub fn merge_yaml(&mut self, text: &str, path: &Path) -> Result<(), ConfigError> {
        let source = Source::File(path.to_owned());
        let doc: serde_yaml_ng::Value =
            serde_yaml_ng::from_str(text).map_err(|e| ConfigError::File {
                path: path.to_owned(),
                reason: e.to_string(),
            })?;
        let mut flat = Vec::new();
        match doc {
            serde_yaml_ng::Value::Null => {}
            serde_yaml_ng::Value::Mapping(map) => flatten("", &map, &mut flat, &source)?,
            _ => {
                return Err(ConfigError::File {
                    path: path.to_owned(),
                    reason: "the top level must be a mapping of keys to values".into(),
                });
            }
        }
        for (name, value) in flat {
            let key = lookup(&name).ok_or_else(|| ConfigError::UnknownKey {
                key: name.clone(),
                from: source.clone(),
            })?;
            self.set(key, value, source.clone());
        }
        Ok(())
    }

    pub fn merge_env(&mut self, env: impl IntoIterator<Item = (String, String)>) {
        for (var, value) in env {
            if !var.starts_with("PYROSCOPE_") {
                continue;
            }
            match KEYS.iter().find(|k| k.answers_to_env(&var)) {
                Some(key) => self.set(key, value, Source::Env(var)),
                None => self.ignored_env.push(var),
            }
        }
    }

    /// The merged value of `name`. Every key has one (the defaults layer holds them all), so
    /// a name that is not in the key table is refused rather than read as empty: a misspelt
    /// name in [`super::Settings::from_layers`] fails every start-up, and its tests.
    pub(crate) fn raw(&self, name: &'static str) -> Result<(&str, &Source), ConfigError> {
        match self.values.get(name) {
            Some((value, source)) => Ok((value.as_str(), source)),
            None => Err(ConfigError::UnknownKey {
                key: name.to_owned(),
                from: Source::Default,
            }),
        }
    }

    /// True when no layer set `name` (it has its built-in default).
    pub(crate) fn is_default(&self, name: &'static str) -> bool {
        self.source(name) == Source::Default
    }

    fn source(&self, name: &'static str) -> Source {
        self.values
            .get(name)
            .map(|(_, s)| s.clone())
            .unwrap_or(Source::Default)
    }

    pub(crate) fn bad(&self, name: &'static str, reason: impl Into<String>) -> ConfigError {
        ConfigError::BadValue {
            key: name,
            from: self.source(name),
            reason: reason.into(),
        }
    }

    /// The value for a message: secrets as `[redacted]`, URLs without `user:password@`.
    pub(crate) fn shown(&self, name: &str) -> String {
        let value = self.values.get(name).map_or("", |(v, _)| v.as_str());
        match lookup(name).map(|k| k.kind) {
            Some(Kind::Secret) => "[redacted]".into(),
            Some(Kind::Url) => format!("{:?}", without_userinfo(value)),
            _ => format!("{value:?}"),
        }
    }

    pub fn bool(&self, name: &'static str) -> Result<bool, ConfigError> {
        match self.raw(name)?.0.to_ascii_lowercase().as_str() {
            "true" | "1" => Ok(true),
            "false" | "0" => Ok(false),
            _ => Err(self.bad(
                name,
                format!("expected true or false, got {}", self.shown(name)),
            )),
        }
    }

    pub fn string(&self, name: &'static str) -> Result<String, ConfigError> {
        Ok(self.raw(name)?.0.to_owned())
    }

    pub fn secret(&self, name: &'static str) -> Result<Option<Secret>, ConfigError> {
        Ok(Some(self.raw(name)?.0)
            .filter(|s| !s.is_empty())
            .map(|s| Secret::new(s.to_owned())))
    }

    pub fn count(&self, name: &'static str) -> Result<u64, ConfigError> {
        self.raw(name)?.0.trim().parse().map_err(|_| {
            self.bad(
                name,
                format!("expected a non-negative integer, got {}", self.shown(name)),
            )
        })
    }

    pub fn duration(&self, name: &'static str) -> Result<Duration, ConfigError> {
        parse_duration(self.raw(name)?.0).ok_or_else(|| {
            self.bad(
                name,
                format!(
                    "expected a duration such as 30s, 5m, 2h or 1d, got {}",
                    self.shown(name)
                ),
            )
        })
    }

    pub fn addr(&self, name: &'static str) -> Result<SocketAddr, ConfigError> {
        let raw = self.raw(name)?.0.trim();
        let full = if raw.starts_with(':') {
            format!("0.0.0.0{raw}")
        } else {
            raw.to_owned()
        };
        full.parse().map_err(|_| {
            self.bad(
                name,
                format!("expected host:port or :port, got {}", self.shown(name)),
            )
        })
    }

    pub fn choice(&self, name: &'static str) -> Result<&'static str, ConfigError> {
        let Some(Kind::Choice(words)) = lookup(name).map(|k| k.kind) else {
            return Err(self.bad(name, "not a choice key"));
        };
        let raw = self.raw(name)?.0;
        words
            .iter()
            .find(|w| w.eq_ignore_ascii_case(raw))
            .copied()
            .ok_or_else(|| {
                self.bad(
                    name,
                    format!(
                        "expected one of {}, got {}",
                        words.join(", "),
                        self.shown(name)
                    ),
                )
            })
    }

    pub fn url(&self, name: &'static str) -> Result<Option<String>, ConfigError> {
        let raw = self.raw(name)?.0.trim();
        if raw.is_empty() {
            return Ok(None);
        }
        // Credentials in a URL end up wherever the URL is printed (logs, errors, Debug):
        // refused, pointing at the keys that keep them secret.
        if userinfo_at(raw).is_some() {
            let instead = if name == "upstream.url" {
                "; set upstream.basic-auth-username and upstream.basic-auth-password (or upstream.bearer-token) instead"
            } else {
                ""
            };
            return Err(self.bad(
                name,
                format!(
                    "must not contain credentials (user:password@ before the host), got {}{instead}",
                    self.shown(name)
                ),
            ));
        }
        let ok = (raw.starts_with("http://") || raw.starts_with("https://"))
            && raw
                .split_once("://")
                .is_some_and(|(_, rest)| !rest.is_empty())
            && !raw.chars().any(char::is_whitespace);
        if !ok {
            return Err(self.bad(
                name,
                format!(
                    "expected an http:// or https:// URL, got {}",
                    self.shown(name)
                ),
            ));
        }
        Ok(Some(raw.trim_end_matches('/').to_owned()))
    }
}

fn flatten(
    prefix: &str,
    map: &serde_yaml_ng::Mapping,
    out: &mut Vec<(String, String)>,
    source: &Source,
) -> Result<(), ConfigError> {
    use serde_yaml_ng::Value;
    for (k, v) in map {
        let name = match k {
            Value::String(s) => s.clone(),
            Value::Bool(b) => b.to_string(),
            Value::Number(n) => n.to_string(),
            _ => {
                return Err(ConfigError::UnknownKey {
                    key: format!("{prefix}<non-string key>"),
                    from: source.clone(),
                });
            }
        };
        let full = if prefix.is_empty() {
            name
        } else {
            format!("{prefix}.{name}")
        };
        let value = match v {
            Value::Mapping(inner) => {
                flatten(&full, inner, out, source)?;
                continue;
            }
            Value::Null => String::new(),
            Value::Bool(b) => b.to_string(),
            Value::Number(n) => n.to_string(),
            Value::String(s) => s.clone(),
            Value::Sequence(_) | Value::Tagged(_) => {
                let key = lookup(&full).map(|k| k.name).unwrap_or("?");
                if key == "?" {
                    return Err(ConfigError::UnknownKey {
                        key: full,
                        from: source.clone(),
                    });
                }
                return Err(ConfigError::BadValue {
                    key,
                    from: source.clone(),
                    reason: "expected a single value, not a list".into(),
                });
            }
        };
        out.push((full, value));
    }
    Ok(())
}

/// `90` (seconds), `90s`, `500ms`, `5m`, `2h`, `1d`.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let n: u64 = digits.parse().ok()?;
    let secs = |mult: u64| n.checked_mul(mult).map(Duration::from_secs);
    match unit {
        "" | "s" => secs(1),
        "ms" => Some(Duration::from_millis(n)),
        "m" => secs(60),
        "h" => secs(3600),
        "d" => secs(86_400),
        _ => None,
    }
}

/// What was given on the command line: `--config FILE` and the `--<key>` flags.
#[derive(Debug, Clone, Default)]
pub struct ConfigFlags {
    pub config: Option<PathBuf>,
    /// Only the flags given on the command line, by key name.
    pub values: Vec<(String, String)>,
}

impl ConfigFlags {
    /// Merges the layers with the real process environment.
    pub fn load(&self) -> Result<Layers, ConfigError> {
        Layers::load(self.config.as_deref(), std::env::vars(), self)
    }
}
