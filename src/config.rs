//! Configuration with Pyroscope's own key names, from four layers (later wins):
//! built-in defaults < YAML file (`--config`) < environment (`PYROSCOPE_…`) < command-line flags
//! (`--auth.ingestion.enabled`).
//!
//! Every key is declared once, in [`KEYS`]: its name, default, type and help. The flags, the
//! environment names, `docs/configuration.md` and `config/pyrogate.example.yaml` all follow from
//! that table (a test checks the docs against it), so a key can't exist in one place and not
//! another. Each value remembers where it came from, so an unknown key or a bad value is a
//! startup error that names both the key and its source. Secret values are never echoed.
//!
//! Unknown `PYROSCOPE_*` environment variables are ignored with a warning rather than refused:
//! that namespace is shared with Pyroscope's agents (`PYROSCOPE_AUTH_TOKEN`,
//! `PYROSCOPE_SERVER_ADDRESS`, …), which often run on the same hosts.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Arg, ArgAction, ArgMatches, Args, FromArgMatches};

use crate::core::token::Secret;

/// The value type of a key; decides parsing and how the docs describe it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Bool,
    String,
    /// A string that is never printed (passwords, secrets).
    Secret,
    /// A non-negative integer.
    Count,
    /// `90`, `90s`, `5m`, `2h`, `1d`.
    Duration,
    /// `host:port` or `:port`.
    Addr,
    /// One of a fixed set of words (case-insensitive).
    Choice(&'static [&'static str]),
    /// An `http://` or `https://` URL, or empty.
    Url,
}

impl Kind {
    pub fn describe(self) -> String {
        match self {
            Kind::Bool => "bool".into(),
            Kind::String => "string".into(),
            Kind::Secret => "secret string".into(),
            Kind::Count => "integer".into(),
            Kind::Duration => "duration".into(),
            Kind::Addr => "address".into(),
            Kind::Choice(words) => words.join(" \\| "),
            Kind::Url => "URL".into(),
        }
    }
}

/// One configuration key.
#[derive(Debug, Clone, Copy)]
pub struct Key {
    pub name: &'static str,
    pub default: &'static str,
    pub kind: Kind,
    pub help: &'static str,
}

impl Key {
    /// `auth.ingestion.enabled` → `PYROSCOPE_AUTH_INGESTION_ENABLED`.
    pub fn env_name(&self) -> String {
        let mut out = String::from("PYROSCOPE_");
        for c in self.name.chars() {
            out.push(match c {
                '.' | '-' => '_',
                c => c.to_ascii_uppercase(),
            });
        }
        out
    }

    pub fn flag(&self) -> String {
        format!("--{}", self.name)
    }
}

const fn key(name: &'static str, default: &'static str, kind: Kind, help: &'static str) -> Key {
    Key {
        name,
        default,
        kind,
        help,
    }
}

/// Every configuration key. Keep related keys together; docs are generated in this order.
#[rustfmt::skip]
pub const KEYS: &[Key] = &[
    key("api-bind-addr", ":4040", Kind::Addr,
        "Address the HTTP server listens on."),
    key("storage-path", "data", Kind::String,
        "Directory for the database (authority) or the key-set cache and spool (ingest node)."),
    key("keys-dir", "keys", Kind::String,
        "Directory holding the Ed25519 signing keys (authority)."),
    key("log-level", "info", Kind::Choice(&["error", "warn", "info", "debug", "trace"]),
        "Log verbosity."),
    key("auth.ingestion.enabled", "false", Kind::Bool,
        "Require an Agent or Admin API key on ingest routes."),
    key("auth.ingestion.basic-user-is-tenant", "false", Kind::Bool,
        "Require the HTTP Basic username, when given, to equal the key's tenant (Grafana-Cloud style)."),
    key("auth.internal.enabled", "true", Kind::Bool,
        "Enable built-in users, login and UI sessions; when off, the admin API takes Admin API keys only."),
    key("auth.internal.admin.create", "true", Kind::Bool,
        "Create the first admin user on first start."),
    key("auth.internal.admin.name", "admin", Kind::String,
        "Name of the first admin user."),
    key("auth.internal.admin.email", "admin@localhost", Kind::String,
        "Email of the first admin user."),
    key("auth.internal.admin.password", "", Kind::Secret,
        "Password of the first admin user; empty generates a strong one and prints it once."),
    key("auth.jwt-secret", "", Kind::Secret,
        "Secret that signs UI session cookies; empty generates one and keeps it in the database."),
    key("auth.login-maximum-lifetime-days", "7", Kind::Count,
        "How long a login session lasts, in days (0 = 365)."),
    key("auth.cookie-secure", "false", Kind::Bool,
        "Mark the session cookie Secure (set when served over HTTPS)."),
    key("auth.cookie-same-site", "Lax", Kind::Choice(&["Strict", "Lax", "None"]),
        "SameSite attribute of the session cookie."),
    key("auth.issuer", "pyrogate", Kind::String,
        "The iss claim written into and required of every API key."),
    key("auth.clock-skew", "60s", Kind::Duration,
        "Allowed clock difference when checking exp, nbf and iat."),
    key("auth.cache-size", "65536", Kind::Count,
        "Verified tokens remembered per process (0 disables the cache)."),
    key("auth.login-max-failures", "10", Kind::Count,
        "Failed logins allowed per user and per client address within the lockout window."),
    key("auth.login-lockout", "15m", Kind::Duration,
        "Window over which failed logins are counted."),
    key("revocations.max-wait", "60s", Kind::Duration,
        "Longest long-poll a client may ask for with ?wait=."),
    key("revocations.prune-interval", "60s", Kind::Duration,
        "How often expired revocation entries are pruned and the signing keys re-read."),
    key("authority-url", "", Kind::Url,
        "Ingest node: base URL of the authority to pull the key set and revocation list from."),
    key("jwks-file", "", Kind::String,
        "Ingest node without an authority (air-gapped): JWK Set file to trust; re-read when it changes."),
    key("revocations-file", "", Kind::String,
        "Ingest node without an authority (air-gapped): signed revocation list file; re-read when it changes."),
    key("sync.wait", "30s", Kind::Duration,
        "Ingest node: how long each long-poll for revocation changes waits."),
    key("sync.jwks-interval", "60s", Kind::Duration,
        "Ingest node: how often the key set is re-fetched (also fetched at once on an unknown kid)."),
    key("sync.max-staleness", "0s", Kind::Duration,
        "Ingest node: refuse pushes (503) once the authority has not been reached for this long; 0 keeps serving with the last good copy."),
    key("upstream", "", Kind::Url,
        "URL of the Grafana Pyroscope to forward ingested profiles to; empty keeps them locally."),
    key("upstream-timeout", "30s", Kind::Duration,
        "Timeout of one request to the upstream."),
    key("tenant.default", "", Kind::String,
        "X-Scope-OrgID for keys without a tenant claim; empty sends none (single-tenant upstream)."),
    key("ingest.max-body-size", "16777216", Kind::Count,
        "Largest accepted push body, in bytes (413 beyond)."),
    key("ingest.spool.max-bytes", "1073741824", Kind::Count,
        "Disk space for pushes queued while the upstream is down; a full spool answers 503."),
    key("ingest.local.max-bytes", "268435456", Kind::Count,
        "Disk space for profiles kept locally when no upstream is set; the oldest are dropped first."),
];

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

/// The merged raw values, one per key, each with its source.
#[derive(Debug, Clone)]
pub struct Layers {
    values: BTreeMap<&'static str, (String, Source)>,
    /// Unknown `PYROSCOPE_*` environment variables, reported as warnings.
    pub ignored_env: Vec<String>,
}

fn lookup(name: &str) -> Option<&'static Key> {
    KEYS.iter().find(|k| k.name == name)
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
            match KEYS.iter().find(|k| k.env_name() == var) {
                Some(key) => self.set(key, value, Source::Env(var)),
                None => self.ignored_env.push(var),
            }
        }
    }

    fn raw(&self, name: &'static str) -> (&str, &Source) {
        match self.values.get(name) {
            Some((value, source)) => (value.as_str(), source),
            None => ("", &Source::Default),
        }
    }

    fn bad(&self, name: &'static str, reason: impl Into<String>) -> ConfigError {
        ConfigError::BadValue {
            key: name,
            from: self.raw(name).1.clone(),
            reason: reason.into(),
        }
    }

    fn shown(&self, name: &'static str) -> String {
        let secret = lookup(name).is_some_and(|k| k.kind == Kind::Secret);
        if secret {
            "[redacted]".into()
        } else {
            format!("{:?}", self.raw(name).0)
        }
    }

    pub fn bool(&self, name: &'static str) -> Result<bool, ConfigError> {
        match self.raw(name).0.to_ascii_lowercase().as_str() {
            "true" | "1" => Ok(true),
            "false" | "0" => Ok(false),
            _ => Err(self.bad(
                name,
                format!("expected true or false, got {}", self.shown(name)),
            )),
        }
    }

    pub fn string(&self, name: &'static str) -> String {
        self.raw(name).0.to_owned()
    }

    pub fn secret(&self, name: &'static str) -> Option<Secret> {
        Some(self.raw(name).0)
            .filter(|s| !s.is_empty())
            .map(|s| Secret::new(s.to_owned()))
    }

    pub fn count(&self, name: &'static str) -> Result<u64, ConfigError> {
        self.raw(name).0.trim().parse().map_err(|_| {
            self.bad(
                name,
                format!("expected a non-negative integer, got {}", self.shown(name)),
            )
        })
    }

    pub fn duration(&self, name: &'static str) -> Result<Duration, ConfigError> {
        parse_duration(self.raw(name).0).ok_or_else(|| {
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
        let raw = self.raw(name).0.trim();
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
        let raw = self.raw(name).0;
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
        let raw = self.raw(name).0.trim();
        if raw.is_empty() {
            return Ok(None);
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

/// The `--<key>` flags of every configuration key, plus `--config FILE`. Flatten into any
/// subcommand that reads configuration.
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

impl FromArgMatches for ConfigFlags {
    fn from_arg_matches(m: &ArgMatches) -> Result<Self, clap::Error> {
        let mut flags = ConfigFlags {
            config: m.get_one::<PathBuf>("config").cloned(),
            values: Vec::new(),
        };
        for key in KEYS {
            if m.value_source(key.name) == Some(clap::parser::ValueSource::CommandLine)
                && let Some(v) = m.get_one::<String>(key.name)
            {
                flags.values.push((key.name.to_owned(), v.clone()));
            }
        }
        Ok(flags)
    }

    fn update_from_arg_matches(&mut self, m: &ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(m)?;
        Ok(())
    }
}

impl Args for ConfigFlags {
    fn augment_args(mut cmd: clap::Command) -> clap::Command {
        cmd = cmd.arg(
            Arg::new("config")
                .long("config")
                .value_name("FILE")
                .value_parser(clap::value_parser!(PathBuf))
                .help("YAML configuration file")
                .help_heading("Configuration"),
        );
        for key in KEYS {
            let mut arg = Arg::new(key.name)
                .long(key.name)
                .help(key.help)
                .help_heading("Configuration")
                .action(ArgAction::Set);
            arg = match key.kind {
                Kind::Bool => arg
                    .value_name("BOOL")
                    .num_args(0..=1)
                    .default_missing_value("true"),
                Kind::Secret => arg.value_name("SECRET"),
                _ => arg.value_name("VALUE"),
            };
            cmd = cmd.arg(arg);
        }
        cmd
    }

    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        Self::augment_args(cmd)
    }
}

/// Every key, parsed and checked. Built once at startup; a bad value anywhere fails here.
#[derive(Debug, Clone)]
pub struct Settings {
    pub api_bind_addr: SocketAddr,
    pub storage_path: PathBuf,
    pub keys_dir: PathBuf,
    pub log_level: &'static str,
    pub ingestion_enabled: bool,
    pub internal_enabled: bool,
    pub admin_create: bool,
    pub admin_name: String,
    pub admin_email: String,
    pub admin_password: Option<Secret>,
    pub jwt_secret: Option<Secret>,
    pub login_lifetime: Duration,
    pub cookie_secure: bool,
    pub cookie_same_site: &'static str,
    pub issuer: String,
    pub clock_skew: Duration,
    pub cache_size: usize,
    pub login_max_failures: u32,
    pub login_lockout: Duration,
    pub revocations_max_wait: Duration,
    pub prune_interval: Duration,
    pub basic_user_is_tenant: bool,
    pub authority_url: Option<String>,
    pub jwks_file: Option<PathBuf>,
    pub revocations_file: Option<PathBuf>,
    pub sync_wait: Duration,
    pub sync_jwks_interval: Duration,
    pub sync_max_staleness: Option<Duration>,
    pub upstream: Option<String>,
    pub upstream_timeout: Duration,
    pub default_tenant: Option<String>,
    pub max_body_size: usize,
    pub spool_max_bytes: u64,
    pub local_max_bytes: u64,
}

impl Settings {
    pub fn from_layers(l: &Layers) -> Result<Self, ConfigError> {
        let non_empty = |name: &'static str| {
            let v = l.string(name);
            if v.trim().is_empty() {
                Err(l.bad(name, "must not be empty"))
            } else {
                Ok(v)
            }
        };
        let days = l.count("auth.login-maximum-lifetime-days")?;
        let days = match days {
            0 => 365,
            d if d > 3650 => {
                return Err(l.bad("auth.login-maximum-lifetime-days", "must be at most 3650"));
            }
            d => d,
        };
        let same_site = l.choice("auth.cookie-same-site")?;
        let cookie_secure = l.bool("auth.cookie-secure")?;
        if same_site == "None" && !cookie_secure {
            return Err(l.bad(
                "auth.cookie-same-site",
                "SameSite=None requires auth.cookie-secure: true (browsers drop such cookies otherwise)",
            ));
        }
        let small = |name: &'static str, max: u64| -> Result<u64, ConfigError> {
            let n = l.count(name)?;
            if n > max {
                Err(l.bad(name, format!("must be at most {max}")))
            } else {
                Ok(n)
            }
        };
        Ok(Settings {
            api_bind_addr: l.addr("api-bind-addr")?,
            storage_path: non_empty("storage-path")?.into(),
            keys_dir: non_empty("keys-dir")?.into(),
            log_level: l.choice("log-level")?,
            ingestion_enabled: l.bool("auth.ingestion.enabled")?,
            internal_enabled: l.bool("auth.internal.enabled")?,
            admin_create: l.bool("auth.internal.admin.create")?,
            admin_name: non_empty("auth.internal.admin.name")?,
            admin_email: l.string("auth.internal.admin.email"),
            admin_password: l.secret("auth.internal.admin.password"),
            jwt_secret: l.secret("auth.jwt-secret"),
            login_lifetime: Duration::from_secs(days * 86_400),
            cookie_secure,
            cookie_same_site: same_site,
            issuer: non_empty("auth.issuer")?,
            clock_skew: l.duration("auth.clock-skew")?,
            cache_size: small("auth.cache-size", 100_000_000)? as usize,
            login_max_failures: small("auth.login-max-failures", 1_000_000)? as u32,
            login_lockout: l.duration("auth.login-lockout")?,
            revocations_max_wait: l.duration("revocations.max-wait")?,
            prune_interval: l.duration("revocations.prune-interval")?,
            basic_user_is_tenant: l.bool("auth.ingestion.basic-user-is-tenant")?,
            authority_url: l.url("authority-url")?,
            jwks_file: Some(l.string("jwks-file"))
                .filter(|s| !s.is_empty())
                .map(PathBuf::from),
            revocations_file: Some(l.string("revocations-file"))
                .filter(|s| !s.is_empty())
                .map(PathBuf::from),
            sync_wait: l.duration("sync.wait")?,
            sync_jwks_interval: l.duration("sync.jwks-interval")?,
            sync_max_staleness: Some(l.duration("sync.max-staleness")?).filter(|d| !d.is_zero()),
            upstream: l.url("upstream")?,
            upstream_timeout: l.duration("upstream-timeout")?,
            default_tenant: {
                let t = l.string("tenant.default");
                if t.is_empty() {
                    None
                } else {
                    crate::core::token::validate_tenant(&t)
                        .map_err(|e| l.bad("tenant.default", e.to_string()))?;
                    Some(t)
                }
            },
            max_body_size: small("ingest.max-body-size", 1 << 30)? as usize,
            spool_max_bytes: l.count("ingest.spool.max-bytes")?,
            local_max_bytes: l.count("ingest.local.max-bytes")?,
        })
    }
}

/// Renders docs/configuration.md's key table from [`KEYS`].
pub fn markdown_table() -> String {
    let mut out = String::from(
        "| key | flag | environment variable | type | default | description |\n|---|---|---|---|---|---|\n",
    );
    for k in KEYS {
        let default = if k.default.is_empty() {
            "(empty)".to_owned()
        } else {
            format!("`{}`", k.default)
        };
        out.push_str(&format!(
            "| `{}` | `{}` | `{}` | {} | {} | {} |\n",
            k.name,
            k.flag(),
            k.env_name(),
            k.kind.describe(),
            default,
            k.help
        ));
    }
    out
}

/// Renders `config/pyrogate.example.yaml`: every key, nested as Pyroscope writes them, each
/// with its help, flag and environment variable, set to its default.
pub fn example_yaml() -> String {
    let mut out = String::from(
        "# pyrogate configuration: every key with its default.\n\
         # Precedence: built-in defaults < this file (--config) < PYROSCOPE_* environment < flags.\n\
         # Generated from src/config.rs (`pyrogate config example`); a test keeps it in sync.\n",
    );
    let mut open: Vec<&str> = Vec::new();
    for key in KEYS {
        let segments: Vec<&str> = key.name.split('.').collect();
        let (leaf, parents) = segments.split_last().unwrap_or((&key.name, &[]));
        let common = open
            .iter()
            .zip(parents.iter())
            .take_while(|(a, b)| a == b)
            .count();
        open.truncate(common);
        out.push('\n');
        for (depth, parent) in parents.iter().enumerate().skip(common) {
            out.push_str(&format!("{}{parent}:\n", "  ".repeat(depth)));
            open.push(parent);
        }
        let indent = "  ".repeat(parents.len());
        out.push_str(&format!("{indent}# {}\n", key.help));
        out.push_str(&format!(
            "{indent}# flag {}, env {}\n",
            key.flag(),
            key.env_name()
        ));
        let value = match key.kind {
            Kind::Bool | Kind::Count => key.default.to_owned(),
            _ => format!("{:?}", key.default),
        };
        out.push_str(&format!("{indent}{leaf}: {value}\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn env_names_follow_pyroscope() {
        let k = lookup("auth.ingestion.enabled").unwrap();
        assert_eq!(k.env_name(), "PYROSCOPE_AUTH_INGESTION_ENABLED");
        assert_eq!(
            lookup("api-bind-addr").unwrap().env_name(),
            "PYROSCOPE_API_BIND_ADDR"
        );
        assert_eq!(k.flag(), "--auth.ingestion.enabled");
    }

    #[test]
    fn env_names_are_unambiguous() {
        let mut names: Vec<String> = KEYS.iter().map(Key::env_name).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), KEYS.len());
    }

    #[test]
    fn every_default_parses() {
        let l = Layers::defaults();
        for k in KEYS {
            let ok = match k.kind {
                Kind::Bool => l.bool(k.name).is_ok(),
                Kind::Count => l.count(k.name).is_ok(),
                Kind::Duration => l.duration(k.name).is_ok(),
                Kind::Addr => l.addr(k.name).is_ok(),
                Kind::Choice(_) => l.choice(k.name).is_ok(),
                Kind::Url => l.url(k.name).is_ok(),
                Kind::String | Kind::Secret => true,
            };
            assert!(ok, "default of {} does not parse", k.name);
        }
    }

    #[test]
    fn flags_beat_env_beat_file_beat_defaults() {
        let mut l = Layers::defaults();
        l.merge_yaml(
            "auth:\n  ingestion:\n    enabled: true\n  issuer: from-file\nlog-level: debug\n",
            Path::new("f.yaml"),
        )
        .unwrap();
        assert!(l.bool("auth.ingestion.enabled").unwrap());
        l.merge_env(env(&[
            ("PYROSCOPE_AUTH_INGESTION_ENABLED", "false"),
            ("PYROSCOPE_AUTH_ISSUER", "from-env"),
        ]));
        assert!(!l.bool("auth.ingestion.enabled").unwrap());
        let flags = ConfigFlags {
            config: None,
            values: vec![("auth.issuer".into(), "from-flag".into())],
        };
        let mut merged =
            Layers::load(None, env(&[("PYROSCOPE_AUTH_ISSUER", "from-env")]), &flags).unwrap();
        assert_eq!(merged.string("auth.issuer"), "from-flag");
        merged
            .merge_yaml("log-level: warn", Path::new("x.yaml"))
            .unwrap();
        assert_eq!(l.string("auth.issuer"), "from-env");
        assert_eq!(l.choice("log-level").unwrap(), "debug");
    }

    #[test]
    fn dotted_yaml_keys_work_too() {
        let mut l = Layers::defaults();
        l.merge_yaml("auth.ingestion.enabled: true\n", Path::new("f.yaml"))
            .unwrap();
        assert!(l.bool("auth.ingestion.enabled").unwrap());
    }

    #[test]
    fn unknown_file_key_names_key_and_file() {
        let mut l = Layers::defaults();
        let err = l
            .merge_yaml(
                "auth:\n  ingestion:\n    enabeld: true\n",
                Path::new("/etc/p.yaml"),
            )
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown configuration key \"auth.ingestion.enabeld\" in config file /etc/p.yaml"
        );
    }

    #[test]
    fn bad_values_name_key_and_source() {
        let mut l = Layers::defaults();
        l.merge_env(env(&[("PYROSCOPE_AUTH_INGESTION_ENABLED", "yes")]));
        assert_eq!(
            l.bool("auth.ingestion.enabled").unwrap_err().to_string(),
            "invalid value for auth.ingestion.enabled from environment variable \
             PYROSCOPE_AUTH_INGESTION_ENABLED: expected true or false, got \"yes\""
        );
    }

    #[test]
    fn unknown_env_vars_are_ignored_not_fatal() {
        let mut l = Layers::defaults();
        l.merge_env(env(&[("PYROSCOPE_AUTH_TOKEN", "x"), ("HOME", "/root")]));
        assert_eq!(l.ignored_env, vec!["PYROSCOPE_AUTH_TOKEN".to_owned()]);
    }

    #[test]
    fn secrets_are_not_echoed_in_errors() {
        let mut l = Layers::defaults();
        l.merge_env(env(&[("PYROSCOPE_AUTH_JWT_SECRET", "hunter2")]));
        assert_eq!(l.shown("auth.jwt-secret"), "[redacted]");
    }

    #[test]
    fn durations_and_addresses_parse() {
        assert_eq!(parse_duration("90"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("5m"), Some(Duration::from_secs(300)));
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("1d"), Some(Duration::from_secs(86_400)));
        assert_eq!(parse_duration("-1s"), None);
        assert_eq!(parse_duration("5 minutes"), None);
        let mut l = Layers::defaults();
        assert_eq!(l.addr("api-bind-addr").unwrap().port(), 4040);
        l.merge_env(env(&[("PYROSCOPE_API_BIND_ADDR", "localhost")]));
        assert!(l.addr("api-bind-addr").is_err());
    }

    #[test]
    fn the_example_file_parses_to_the_defaults() {
        let mut l = Layers::defaults();
        l.merge_yaml(&example_yaml(), Path::new("example.yaml"))
            .unwrap();
        for k in KEYS {
            assert_eq!(l.raw(k.name).0, k.default, "{}", k.name);
            assert!(
                matches!(l.raw(k.name).1, Source::File(_)),
                "{} not in example",
                k.name
            );
        }
    }

    #[test]
    fn committed_example_and_docs_match_the_key_table() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let example = std::fs::read_to_string(root.join("config/pyrogate.example.yaml")).unwrap();
        assert_eq!(
            example,
            example_yaml(),
            "run: pyrogate config example > config/pyrogate.example.yaml"
        );
        let docs = std::fs::read_to_string(root.join("docs/configuration.md")).unwrap();
        assert!(
            docs.contains(&markdown_table()),
            "run: pyrogate config docs, paste into docs/configuration.md"
        );
    }

    #[test]
    fn every_committed_config_file_is_valid() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
        let mut checked = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "yaml") {
                let mut l = Layers::defaults();
                l.merge_file(&path).unwrap();
                Settings::from_layers(&l).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                checked += 1;
            }
        }
        assert!(
            checked >= 3,
            "expected the example, authority and ingest-node files"
        );
    }

    #[test]
    fn lists_are_refused_as_values() {
        let mut l = Layers::defaults();
        let err = l
            .merge_yaml("keys-dir: [a, b]\n", Path::new("f.yaml"))
            .unwrap_err();
        assert!(matches!(
            err,
            ConfigError::BadValue {
                key: "keys-dir",
                ..
            }
        ));
    }
}
