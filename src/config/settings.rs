//! Typed settings, nested by the part of the program that reads them, so each component is
//! handed only its own section (`IngestState::new(&settings.ingest, …)`). Built once at start-up
//! from the merged [`Layers`]; a bad value anywhere fails here, naming the key and its source.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::core::limits::KeyLimits;
use crate::core::token::Secret;
use crate::core::verifier::VerifierConfig;

use super::layers::{ConfigError, Layers};

/// One `server.allowed-hosts` entry: a host name (lowercase, no trailing dot) and, optionally,
/// the one port it is allowed on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPattern {
    host: String,
    port: Option<u16>,
}

impl HostPattern {
    pub fn parse(text: &str) -> Option<HostPattern> {
        let (host, port) = Self::split(text.trim())?;
        Some(HostPattern { host, port })
    }

    /// `host`, `host:port`, `[v6]` or `[v6]:port` → the host (lowercase, without a trailing dot
    /// or brackets) and the port, if one is named. `None` for anything else (userinfo, paths,
    /// an empty host or port, characters no host name has).
    pub fn split(text: &str) -> Option<(String, Option<u16>)> {
        let port = |p: &str| -> Option<u16> {
            (!p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
                .then(|| p.parse().ok())
                .flatten()
        };
        if let Some(rest) = text.strip_prefix('[') {
            let (ip, after) = rest.split_once(']')?;
            let ip: std::net::Ipv6Addr = ip.parse().ok()?;
            let port = match after {
                "" => None,
                p => Some(port(p.strip_prefix(':')?)?),
            };
            return Some((ip.to_string(), port));
        }
        let (host, port) = match text.split_once(':') {
            Some((host, p)) => (host, Some(port(p)?)),
            None => (text, None),
        };
        let host = host.strip_suffix('.').unwrap_or(host);
        let valid = |b: u8| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_';
        if host.is_empty() || !host.bytes().all(valid) {
            return None;
        }
        Some((host.to_ascii_lowercase(), port))
    }

    /// True when a request addressed to `host` (as [`HostPattern::split`] gives it) and `port`
    /// is allowed by this entry. A bare name allows every port; `name:port` allows that port,
    /// and a request that names no port counts as one on 80 or 443 (the default ports).
    pub fn allows(&self, host: &str, port: Option<u16>) -> bool {
        self.host == host
            && match (self.port, port) {
                (None, _) => true,
                (Some(want), Some(got)) => want == got,
                (Some(want), None) => want == 80 || want == 443,
            }
    }
}

/// Every setting, checked.
#[derive(Debug, Clone)]
pub struct Settings {
    pub server: ServerSettings,
    pub auth: AuthSettings,
    pub authority: AuthoritySettings,
    pub node: NodeSettings,
    pub ingest: IngestSettings,
}

/// The process: where it listens, logs and keeps its files.
#[derive(Debug, Clone)]
pub struct ServerSettings {
    pub api_bind_addr: SocketAddr,
    pub log_level: &'static str,
    /// The database (authority), the key-set cache (node), the spool and the local store.
    pub storage_path: PathBuf,
    /// HTTPS instead of HTTP when set.
    pub tls: Option<ServerTls>,
    /// Time to send a request's headers (and the idle keep-alive limit).
    pub read_timeout: Duration,
    /// 0 = no limit.
    pub max_connections: usize,
    /// 0 = no limit.
    pub max_connections_per_client: usize,
    /// `server.allowed-hosts`: empty allows any host.
    pub allowed_hosts: Vec<HostPattern>,
}

/// `server.http-tls-*`: the certificate served, and optionally the CA client certificates
/// must chain to.
#[derive(Debug, Clone)]
pub struct ServerTls {
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
    /// `RequireAndVerifyClientCert`: clients must present a certificate signed by this CA.
    pub client_ca_path: Option<PathBuf>,
}

/// TLS towards one peer (`upstream.tls-*`, `authority.tls-*`). `peer` names the keys in errors.
#[derive(Debug, Clone, Default)]
pub struct ClientTls {
    pub peer: &'static str,
    /// Trust only this CA bundle for the peer; without it, the system roots.
    pub ca_path: Option<PathBuf>,
    /// A client certificate and its key (mTLS).
    pub client_cert: Option<(PathBuf, PathBuf)>,
    pub insecure_skip_verify: bool,
}

/// What the node sends upstream in place of the agent's credentials.
#[derive(Debug, Clone)]
pub enum UpstreamAuth {
    Basic { username: String, password: Secret },
    Bearer(Secret),
}

/// API-key checks, the same on the authority and on every node.
#[derive(Debug, Clone)]
pub struct AuthSettings {
    pub ingestion_enabled: bool,
    pub basic_user_is_tenant: bool,
    pub issuer: String,
    pub clock_skew: Duration,
    pub cache_size: usize,
    /// `auth.trusted-proxies`: peers whose `X-Forwarded-For` names the client.
    pub trusted_proxies: std::sync::Arc<[crate::core::scope::Cidr]>,
}

impl AuthSettings {
    pub fn verifier_config(&self) -> VerifierConfig {
        VerifierConfig {
            issuer: self.issuer.clone(),
            clock_skew_secs: self.clock_skew.as_secs(),
            cache_capacity: self.cache_size,
        }
    }
}

/// Where the authority keeps its data (`database.*`).
#[derive(Debug, Clone)]
pub enum Database {
    /// The embedded SQLite file in this directory (`storage-path` unless `sqlite://DIR`).
    Sqlite(PathBuf),
    Postgres(PostgresSettings),
}

/// `database.*` for PostgreSQL.
#[derive(Debug, Clone)]
pub struct PostgresSettings {
    /// `postgres://…` or `postgresql://…`; may hold a password, so it is never printed.
    pub url: Secret,
    pub password_file: Option<PathBuf>,
    /// TLS towards the database (`database.tls-ca-path`; peer `database`).
    pub tls: ClientTls,
}

impl Database {
    /// `database.url` as the settings read it: empty or `sqlite://[DIR]` is SQLite (in
    /// `storage`, or in DIR), `postgres://`/`postgresql://` is PostgreSQL.
    fn parse(l: &Layers, storage: &std::path::Path) -> Result<Database, ConfigError> {
        let path = |name: &'static str| -> Result<Option<PathBuf>, ConfigError> {
            Ok(Some(l.string(name)?)
                .filter(|s| !s.trim().is_empty())
                .map(PathBuf::from))
        };
        let password_file = path("database.password-file")?;
        let ca_path = path("database.tls-ca-path")?;
        let Some(url) = l.secret("database.url")? else {
            return Database::sqlite_only(l, storage.to_owned(), &password_file, &ca_path);
        };
        let text = url.expose().trim();
        if let Some(dir) = text.strip_prefix("sqlite://") {
            let dir = if dir.is_empty() {
                storage.to_owned()
            } else {
                PathBuf::from(dir)
            };
            return Database::sqlite_only(l, dir, &password_file, &ca_path);
        }
        if !(text.starts_with("postgres://") || text.starts_with("postgresql://")) {
            // The value is never quoted: it may hold a password.
            return Err(l.bad(
                "database.url",
                "expected empty, sqlite://[DIR], postgres://… or postgresql://…",
            ));
        }
        Ok(Database::Postgres(PostgresSettings {
            url: Secret::new(text.to_owned()),
            password_file,
            tls: ClientTls {
                peer: "database",
                ca_path,
                client_cert: None,
                insecure_skip_verify: false,
            },
        }))
    }

    fn sqlite_only(
        l: &Layers,
        dir: PathBuf,
        password_file: &Option<PathBuf>,
        ca_path: &Option<PathBuf>,
    ) -> Result<Database, ConfigError> {
        for (name, set) in [
            ("database.password-file", password_file.is_some()),
            ("database.tls-ca-path", ca_path.is_some()),
        ] {
            if set {
                return Err(l.bad(name, "applies to a postgres:// database.url only"));
            }
        }
        Ok(Database::Sqlite(dir))
    }
}

/// `pyrogate server` only.
#[derive(Debug, Clone)]
pub struct AuthoritySettings {
    /// `database.*`.
    pub database: Database,
    pub keys_dir: PathBuf,
    /// `authority.key-encryption-key-file` (PostgreSQL only): seals the signing keys kept in
    /// the database.
    pub key_encryption_key_file: Option<PathBuf>,
    /// Built-in users, login and UI sessions.
    pub internal_enabled: bool,
    pub first_admin: FirstAdmin,
    pub sessions: SessionSettings,
    pub login_max_failures: u32,
    pub login_lockout: Duration,
    /// Progressive delays per user name (`auth.login-delay*`, `auth.login-max-*`).
    pub login_delays: LoginDelays,
    pub revocations_max_wait: Duration,
    pub revocations_resign_interval: Duration,
    pub revocations_max_long_polls: usize,
    pub prune_interval: Duration,
    /// `auth.key-expiry-warning`: keys expiring sooner are flagged.
    pub key_expiry_warning: Duration,
    /// `auth.oidc.*`: single sign-on, when enabled.
    pub oidc: Option<OidcSettings>,
    /// `auth.default-key-limits.*`: the limits of new keys created without any, by role.
    pub default_key_limits: DefaultKeyLimits,
}

/// `auth.oidc.*`: single sign-on with an OpenID Connect provider.
#[derive(Debug, Clone)]
pub struct OidcSettings {
    /// The login button's label.
    pub name: String,
    /// The issuer, exactly as the provider writes it into `iss`.
    pub issuer: String,
    pub client_id: String,
    pub client_secret: Secret,
    pub redirect_url: String,
    /// `openid` first, then the configured ones.
    pub scopes: Vec<String>,
    /// Lowercase; empty allows any.
    pub allowed_domains: Vec<String>,
    pub groups_claim: String,
    /// Groups per role, checked in this order: Admin, ReadOnly, Agent.
    pub role_mapping: Vec<(crate::core::token::Role, Vec<String>)>,
    pub role_attribute_strict: bool,
    pub allow_sign_up: bool,
    /// `auth.signup-default-role`: no mapped group and not strict.
    pub default_role: crate::core::token::Role,
    /// Towards the provider (`auth.oidc.tls-ca-path`).
    pub tls: ClientTls,
    /// `auth.clock-skew`, for `exp` and `iat`.
    pub clock_skew: Duration,
}

/// True for `https://…`, and for `http://` to a loopback address (`localhost`, 127.0.0.0/8,
/// `[::1]`): the provider's issuer and endpoints must be one of these.
pub fn secure_or_loopback(url: &str) -> bool {
    if url.len() > 8 && url[..8].eq_ignore_ascii_case("https://") {
        return true;
    }
    let Some(rest) = url
        .get(..7)
        .filter(|p| p.eq_ignore_ascii_case("http://"))
        .map(|_| &url[7..])
    else {
        return false;
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    if authority.contains('@') {
        return false;
    }
    match HostPattern::split(authority) {
        Some((host, _)) => {
            host == "localhost"
                || host
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback())
        }
        None => false,
    }
}

impl OidcSettings {
    fn parse(l: &Layers, clock_skew: Duration) -> Result<Option<OidcSettings>, ConfigError> {
        use crate::core::token::Role;
        if !l.bool("auth.oidc.enabled")? {
            return Ok(None);
        }
        let list = |name: &'static str, sep: &[char]| -> Result<Vec<String>, ConfigError> {
            Ok(l.string(name)?
                .split(sep)
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect())
        };
        let required_url = |name: &'static str| -> Result<String, ConfigError> {
            let url = l
                .url(name)?
                .ok_or_else(|| l.bad(name, "required with auth.oidc.enabled"))?;
            if !secure_or_loopback(&url) {
                return Err(l.bad(
                    name,
                    "must be https:// (http:// only to a loopback address)",
                ));
            }
            Ok(url)
        };
        let issuer = required_url("auth.oidc.issuer-url")?;
        let redirect_url = l
            .url("auth.oidc.redirect-url")?
            .ok_or_else(|| l.bad("auth.oidc.redirect-url", "required with auth.oidc.enabled"))?;
        let client_id = l.string("auth.oidc.client-id")?.trim().to_owned();
        if client_id.is_empty() {
            return Err(l.bad("auth.oidc.client-id", "required with auth.oidc.enabled"));
        }
        let file = Some(l.string("auth.oidc.client-secret-file")?)
            .filter(|s| !s.trim().is_empty())
            .map(PathBuf::from);
        let client_secret = match (l.secret("auth.oidc.client-secret")?, file) {
            (Some(_), Some(_)) => {
                return Err(l.bad(
                    "auth.oidc.client-secret-file",
                    "set either auth.oidc.client-secret or auth.oidc.client-secret-file, not both",
                ));
            }
            (Some(secret), None) => secret,
            (None, Some(file)) => {
                let text = std::fs::read_to_string(&file).map_err(|e| {
                    l.bad(
                        "auth.oidc.client-secret-file",
                        format!("cannot read {}: {e}", file.display()),
                    )
                })?;
                match text.trim() {
                    "" => {
                        return Err(l.bad(
                            "auth.oidc.client-secret-file",
                            format!("{} is empty", file.display()),
                        ));
                    }
                    secret => Secret::new(secret.to_owned()),
                }
            }
            (None, None) => {
                return Err(l.bad(
                    "auth.oidc.client-secret",
                    "required with auth.oidc.enabled (or auth.oidc.client-secret-file)",
                ));
            }
        };
        let mut scopes = vec!["openid".to_owned()];
        for scope in list("auth.oidc.scopes", &[' ', ','])? {
            if !scopes.contains(&scope) {
                scopes.push(scope);
            }
        }
        let groups_claim = l.string("auth.oidc.groups-claim")?.trim().to_owned();
        if groups_claim.is_empty() {
            return Err(l.bad("auth.oidc.groups-claim", "must not be empty"));
        }
        let role_mapping = vec![
            (Role::Admin, list("auth.oidc.role-mapping.admin", &[','])?),
            (
                Role::ReadOnly,
                list("auth.oidc.role-mapping.read-only", &[','])?,
            ),
            (Role::Agent, list("auth.oidc.role-mapping.agent", &[','])?),
        ];
        let default_role: Role = l
            .choice("auth.signup-default-role")?
            .parse()
            .map_err(|_| l.bad("auth.signup-default-role", "unknown role"))?;
        Ok(Some(OidcSettings {
            name: match l.string("auth.oidc.name")?.trim() {
                "" => "SSO".into(),
                name => name.to_owned(),
            },
            issuer,
            client_id,
            client_secret,
            redirect_url,
            scopes,
            allowed_domains: list("auth.oidc.allowed-domains", &[','])?
                .into_iter()
                .map(|d| d.trim_start_matches('@').to_ascii_lowercase())
                .collect(),
            groups_claim,
            role_mapping,
            role_attribute_strict: l.bool("auth.oidc.role-attribute-strict")?,
            allow_sign_up: l.bool("auth.oidc.allow-sign-up")?,
            default_role,
            tls: ClientTls {
                peer: "auth.oidc",
                ca_path: Some(l.string("auth.oidc.tls-ca-path")?)
                    .filter(|s| !s.trim().is_empty())
                    .map(PathBuf::from),
                client_cert: None,
                insecure_skip_verify: false,
            },
            clock_skew,
        }))
    }
}

/// `auth.default-key-limits.*`: the limits a new key gets when its request names none.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DefaultKeyLimits {
    pub agent: Option<KeyLimits>,
    pub admin: Option<KeyLimits>,
}

impl DefaultKeyLimits {
    /// The default for a new key of `role` (ReadOnly and Node keys can't push: none).
    pub fn for_role(&self, role: crate::core::token::Role) -> Option<KeyLimits> {
        match role {
            crate::core::token::Role::Agent => self.agent,
            crate::core::token::Role::Admin => self.admin,
            _ => None,
        }
    }
}

/// Progressive delays for guesses at one account from any number of addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoginDelays {
    /// Failures per user name before delays start; 0 turns them off.
    pub after: u32,
    /// First delay, whole seconds (at least 1).
    pub first_secs: u64,
    /// Longest delay, whole seconds.
    pub max_secs: u64,
    /// Attempts on one user name waiting at once (at least 1).
    pub max_waiting: u32,
}

/// Longest time an attempt can spend queued behind the others on its account
/// (`auth.login-max-waiting` × `auth.login-max-delay`): well inside the 300 s request timeout.
pub const LOGIN_MAX_QUEUE_SECS: u64 = 240;

/// Longest `revocations.max-wait`: a held poll answers well inside the 300 s request timeout
/// (the router's, and the server shell's for polls it holds itself).
pub const MAX_LONG_POLL_SECS: u64 = 240;

/// The admin user created on first start.
#[derive(Debug, Clone)]
pub struct FirstAdmin {
    pub create: bool,
    pub name: String,
    pub email: String,
    pub password: Option<Secret>,
}

/// UI session cookies.
#[derive(Debug, Clone)]
pub struct SessionSettings {
    pub jwt_secret: Option<Secret>,
    pub lifetime: Duration,
    pub cookie_secure: bool,
    pub cookie_same_site: &'static str,
}

/// `pyrogate ingest` only: where the key set and revocation list come from.
#[derive(Debug, Clone)]
pub struct NodeSettings {
    pub authority_url: Option<String>,
    pub authority_tls: ClientTls,
    /// `authority.trusted-keys`: the trust anchor.
    pub trusted_keys: Vec<String>,
    pub insecure_trust_first_use: bool,
    pub jwks_file: Option<PathBuf>,
    pub revocations_file: Option<PathBuf>,
    pub sync_wait: Duration,
    pub sync_jwks_interval: Duration,
    pub sync_max_staleness: Option<Duration>,
    /// `authority.node-key` (or the file's contents): the node reports only with one.
    pub node_key: Option<Secret>,
    /// `node.name`, the host name when not set.
    pub name: String,
    pub report_interval: Duration,
}

/// The ingest plane, on both roles.
#[derive(Debug, Clone)]
pub struct IngestSettings {
    pub upstream: Option<String>,
    pub upstream_timeout: Duration,
    pub upstream_auth: Option<UpstreamAuth>,
    pub upstream_tls: ClientTls,
    pub default_tenant: Option<String>,
    pub max_body_size: usize,
    pub spool_max_bytes: u64,
    /// Most spooled pushes in flight at once during a replay.
    pub spool_replay_concurrency: usize,
    pub local_max_bytes: u64,
    /// `server.storage-path`, repeated here so the ingest plane needs no other section.
    pub storage_path: PathBuf,
    /// Request-serving threads of an ingest node; 0 = one per CPU core.
    pub worker_threads: usize,
    /// Bind them one per CPU where that is possible ([`crate::edge::server::Placement`]).
    pub pin_threads: bool,
}

impl Settings {
    pub fn from_layers(l: &Layers) -> Result<Self, ConfigError> {
        let non_empty = |name: &'static str| {
            let v = l.string(name)?;
            if v.trim().is_empty() {
                Err(l.bad(name, "must not be empty"))
            } else {
                Ok(v)
            }
        };
        let optional = |name: &'static str| -> Result<Option<String>, ConfigError> {
            Ok(Some(l.string(name)?).filter(|s| !s.is_empty()))
        };
        let small = |name: &'static str, max: u64| -> Result<u64, ConfigError> {
            let n = l.count(name)?;
            if n > max {
                Err(l.bad(name, format!("must be at most {max}")))
            } else {
                Ok(n)
            }
        };
        let days = match l.count("auth.login-maximum-lifetime-days")? {
            0 => 365,
            d if d > 3650 => {
                return Err(l.bad("auth.login-maximum-lifetime-days", "must be at most 3650"));
            }
            d => d,
        };
        let path = |name: &'static str| -> Result<Option<PathBuf>, ConfigError> {
            Ok(optional(name)?.map(PathBuf::from))
        };
        let pair = |cert: &'static str, key: &'static str| match (path(cert)?, path(key)?) {
            (Some(c), Some(k)) => Ok(Some((c, k))),
            (None, None) => Ok(None),
            (Some(_), None) => Err(l.bad(cert, format!("needs {key} too"))),
            (None, Some(_)) => Err(l.bad(key, format!("needs {cert} too"))),
        };
        let client_tls = |peer: &'static str,
                          ca: &'static str,
                          cert: &'static str,
                          key: &'static str,
                          skip: Option<&'static str>|
         -> Result<ClientTls, ConfigError> {
            Ok(ClientTls {
                peer,
                ca_path: path(ca)?,
                client_cert: pair(cert, key)?,
                insecure_skip_verify: match skip {
                    Some(name) => l.bool(name)?,
                    None => false,
                },
            })
        };
        let server_tls = match pair("server.http-tls-cert-path", "server.http-tls-key-path")? {
            None => None,
            Some((cert_path, key_path)) => {
                let ca = path("server.http-tls-ca-path")?;
                let client_ca_path = match l.choice("server.http-tls-client-auth")? {
                    "RequireAndVerifyClientCert" => Some(ca.ok_or_else(|| {
                        l.bad(
                            "server.http-tls-client-auth",
                            "RequireAndVerifyClientCert needs server.http-tls-ca-path",
                        )
                    })?),
                    _ => None,
                };
                Some(ServerTls {
                    cert_path,
                    key_path,
                    client_ca_path,
                })
            }
        };
        let upstream_auth = match (
            optional("upstream.basic-auth-username")?,
            l.secret("upstream.basic-auth-password")?,
            l.secret("upstream.bearer-token")?,
        ) {
            (None, None, None) => None,
            (Some(username), Some(password), None) => {
                Some(UpstreamAuth::Basic { username, password })
            }
            (None, None, Some(token)) => Some(UpstreamAuth::Bearer(token)),
            (Some(_), None, _) => {
                return Err(l.bad(
                    "upstream.basic-auth-username",
                    "needs upstream.basic-auth-password too",
                ));
            }
            (None, Some(_), _) => {
                return Err(l.bad(
                    "upstream.basic-auth-password",
                    "needs upstream.basic-auth-username too",
                ));
            }
            (Some(_), Some(_), Some(_)) => {
                return Err(l.bad(
                    "upstream.bearer-token",
                    "set either upstream.bearer-token or upstream.basic-auth-*, not both",
                ));
            }
        };
        if upstream_auth.is_some() && l.bool("upstream.tls-insecure-skip-verify")? {
            return Err(l.bad(
                "upstream.tls-insecure-skip-verify",
                "would send the upstream credentials to whoever answers; verify the upstream (upstream.tls-ca-path) or drop the credentials",
            ));
        }
        let trusted_keys: Vec<String> = l
            .string("authority.trusted-keys")?
            .split(',')
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .map(str::to_owned)
            .collect();
        let cookie_same_site = l.choice("auth.cookie-same-site")?;
        // Served over HTTPS, the session cookie is Secure unless configured otherwise.
        let cookie_secure = if l.is_default("auth.cookie-secure") {
            server_tls.is_some()
        } else {
            l.bool("auth.cookie-secure")?
        };
        if cookie_same_site == "None" && !cookie_secure {
            return Err(l.bad(
                "auth.cookie-same-site",
                "SameSite=None requires auth.cookie-secure: true (browsers drop such cookies otherwise)",
            ));
        }
        let default_tenant = optional("tenant.default")?;
        if let Some(t) = &default_tenant {
            crate::core::token::validate_tenant(t)
                .map_err(|e| l.bad("tenant.default", e.to_string()))?;
        }
        let storage_path: PathBuf = non_empty("storage-path")?.into();
        let allowed_hosts = l
            .string("server.allowed-hosts")?
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| {
                HostPattern::parse(s).ok_or_else(|| {
                    l.bad(
                        "server.allowed-hosts",
                        format!("{s:?} is not a host name or host:port (pyrogate.example.com)"),
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let trusted_proxies = l
            .string("auth.trusted-proxies")?
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| {
                crate::core::scope::Cidr::parse(s).map_err(|why| l.bad("auth.trusted-proxies", why))
            })
            .collect::<Result<Vec<_>, _>>()?
            .into();
        let whole_secs = |name: &'static str| -> Result<u64, ConfigError> {
            let d = l.duration(name)?;
            Ok(d.as_secs() + u64::from(d.subsec_nanos() > 0))
        };
        let login_delays = LoginDelays {
            after: small("auth.login-delay-after", 1_000_000)? as u32,
            first_secs: whole_secs("auth.login-delay")?.max(1),
            max_secs: whole_secs("auth.login-max-delay")?,
            max_waiting: small("auth.login-max-waiting", 1_000)? as u32,
        };
        if login_delays.after > 0 {
            if login_delays.max_secs < login_delays.first_secs {
                return Err(l.bad("auth.login-max-delay", "must be at least auth.login-delay"));
            }
            if login_delays.max_waiting == 0 {
                return Err(l.bad(
                    "auth.login-max-waiting",
                    "must be at least 1 (0 would lock the account's owner out too)",
                ));
            }
            if u64::from(login_delays.max_waiting).saturating_mul(login_delays.max_secs)
                > LOGIN_MAX_QUEUE_SECS
            {
                return Err(l.bad(
                    "auth.login-max-waiting",
                    format!(
                        "times auth.login-max-delay must be at most {LOGIN_MAX_QUEUE_SECS}s, so a queued login ends within the request timeout"
                    ),
                ));
            }
        }
        let node_key = match (
            l.secret("authority.node-key")?,
            path("authority.node-key-file")?,
        ) {
            (Some(_), Some(_)) => {
                return Err(l.bad(
                    "authority.node-key-file",
                    "set either authority.node-key or authority.node-key-file, not both",
                ));
            }
            (Some(key), None) => Some(key),
            (None, Some(file)) => {
                let text = std::fs::read_to_string(&file).map_err(|e| {
                    l.bad(
                        "authority.node-key-file",
                        format!("cannot read {}: {e}", file.display()),
                    )
                })?;
                match text.trim() {
                    "" => {
                        return Err(l.bad(
                            "authority.node-key-file",
                            format!("{} is empty", file.display()),
                        ));
                    }
                    key => Some(Secret::new(key.to_owned())),
                }
            }
            (None, None) => None,
        };
        let node_name = match optional("node.name")? {
            Some(name) => name,
            None => host_name(),
        };
        if !valid_node_name(&node_name) {
            return Err(l.bad(
                "node.name",
                format!(
                    "{node_name:?} is not a node name: 1 to 64 letters, digits, '.', '_' or '-'"
                ),
            ));
        }
        let report_interval = l.duration("node.report-interval")?;
        if report_interval < Duration::from_secs(1) {
            return Err(l.bad("node.report-interval", "must be at least 1s"));
        }
        let revocations_max_wait = l.duration("revocations.max-wait")?;
        if revocations_max_wait.as_secs() > MAX_LONG_POLL_SECS {
            return Err(l.bad(
                "revocations.max-wait",
                format!(
                    "must be at most {MAX_LONG_POLL_SECS}s, so a held poll is answered within the request timeout"
                ),
            ));
        }
        let database = Database::parse(l, &storage_path)?;
        Ok(Settings {
            server: ServerSettings {
                api_bind_addr: l.addr("api-bind-addr")?,
                log_level: l.choice("log-level")?,
                storage_path: storage_path.clone(),
                tls: server_tls,
                read_timeout: l
                    .duration("server.http-server-read-timeout")?
                    .max(Duration::from_secs(1)),
                max_connections: small("server.http-max-connections", 10_000_000)? as usize,
                max_connections_per_client: small(
                    "server.http-max-connections-per-client",
                    10_000_000,
                )? as usize,
                allowed_hosts,
            },
            auth: AuthSettings {
                ingestion_enabled: l.bool("auth.ingestion.enabled")?,
                basic_user_is_tenant: l.bool("auth.ingestion.basic-user-is-tenant")?,
                issuer: non_empty("auth.issuer")?,
                clock_skew: l.duration("auth.clock-skew")?,
                cache_size: small("auth.cache-size", 100_000_000)? as usize,
                trusted_proxies,
            },
            authority: AuthoritySettings {
                key_encryption_key_file: {
                    let file = Some(l.string("authority.key-encryption-key-file")?)
                        .filter(|s| !s.trim().is_empty())
                        .map(PathBuf::from);
                    if file.is_some() && matches!(database, Database::Sqlite(_)) {
                        return Err(l.bad(
                            "authority.key-encryption-key-file",
                            "applies to a postgres:// database.url only (with SQLite the signing keys stay in keys-dir)",
                        ));
                    }
                    file
                },
                database,
                keys_dir: non_empty("keys-dir")?.into(),
                internal_enabled: l.bool("auth.internal.enabled")?,
                first_admin: FirstAdmin {
                    create: l.bool("auth.internal.admin.create")?,
                    name: non_empty("auth.internal.admin.name")?,
                    email: l.string("auth.internal.admin.email")?,
                    password: l.secret("auth.internal.admin.password")?,
                },
                sessions: SessionSettings {
                    jwt_secret: l.secret("auth.jwt-secret")?,
                    lifetime: Duration::from_secs(days * 86_400),
                    cookie_secure,
                    cookie_same_site,
                },
                login_max_failures: small("auth.login-max-failures", 1_000_000)? as u32,
                login_lockout: l.duration("auth.login-lockout")?,
                login_delays,
                revocations_max_wait,
                revocations_resign_interval: l.duration("revocations.resign-interval")?,
                revocations_max_long_polls: small("revocations.max-long-polls", 10_000_000)?
                    as usize,
                prune_interval: l.duration("revocations.prune-interval")?,
                key_expiry_warning: l.duration("auth.key-expiry-warning")?,
                oidc: OidcSettings::parse(l, l.duration("auth.clock-skew")?)?,
                default_key_limits: DefaultKeyLimits {
                    agent: default_limits(
                        l,
                        [
                            "auth.default-key-limits.agent.pushes-per-second",
                            "auth.default-key-limits.agent.burst-pushes",
                            "auth.default-key-limits.agent.bytes-per-second",
                            "auth.default-key-limits.agent.burst-bytes",
                        ],
                    )?,
                    admin: default_limits(
                        l,
                        [
                            "auth.default-key-limits.admin.pushes-per-second",
                            "auth.default-key-limits.admin.burst-pushes",
                            "auth.default-key-limits.admin.bytes-per-second",
                            "auth.default-key-limits.admin.burst-bytes",
                        ],
                    )?,
                },
            },
            node: NodeSettings {
                authority_url: l.url("authority.url")?,
                authority_tls: client_tls(
                    "authority",
                    "authority.tls-ca-path",
                    "authority.tls-cert-path",
                    "authority.tls-key-path",
                    None,
                )?,
                trusted_keys,
                insecure_trust_first_use: l.bool("authority.insecure-trust-first-use")?,
                jwks_file: optional("jwks-file")?.map(PathBuf::from),
                revocations_file: optional("revocations-file")?.map(PathBuf::from),
                sync_wait: l.duration("sync.wait")?,
                sync_jwks_interval: l.duration("sync.jwks-interval")?,
                sync_max_staleness: Some(l.duration("sync.max-staleness")?)
                    .filter(|d| !d.is_zero()),
                node_key,
                name: node_name,
                report_interval,
            },
            ingest: IngestSettings {
                upstream: l.url("upstream.url")?,
                upstream_timeout: l.duration("upstream.timeout")?,
                upstream_auth,
                upstream_tls: client_tls(
                    "upstream",
                    "upstream.tls-ca-path",
                    "upstream.tls-cert-path",
                    "upstream.tls-key-path",
                    Some("upstream.tls-insecure-skip-verify"),
                )?,
                default_tenant,
                max_body_size: small("ingest.max-body-size", 1 << 30)? as usize,
                spool_max_bytes: l.count("ingest.spool.max-bytes")?,
                spool_replay_concurrency: match small("ingest.spool.replay-concurrency", 4096)? {
                    0 => return Err(l.bad("ingest.spool.replay-concurrency", "must be at least 1")),
                    n => n as usize,
                },
                local_max_bytes: l.count("ingest.local.max-bytes")?,
                storage_path,
                worker_threads: small("ingest.worker-threads", 1024)? as usize,
                pin_threads: l.bool("ingest.pin-threads")?,
            },
        })
    }
}

/// A node name as reports carry it: 1 to 64 ASCII letters, digits, `.`, `_` or `-`.
/// One role's `auth.default-key-limits.<role>.*`: `None` when neither rate is set.
fn default_limits(l: &Layers, keys: [&'static str; 4]) -> Result<Option<KeyLimits>, ConfigError> {
    let [pps, bp, bps, bb] = keys;
    let text = l.string(pps)?;
    let rate = match text.trim() {
        "" => None,
        t => match t.parse::<f64>() {
            Ok(0.0) => None,
            Ok(r) if r.is_finite() && r > 0.0 => Some(r),
            _ => {
                return Err(l.bad(
                    pps,
                    "expected a number of pushes per second, such as 10 or 0.5",
                ));
            }
        },
    };
    let nonzero = |v: u64| (v > 0).then_some(v);
    let bytes = nonzero(l.count(bps)?);
    let limits = KeyLimits {
        pushes_per_second: rate,
        burst_pushes: rate.and(nonzero(l.count(bp)?)),
        bytes_per_second: bytes,
        burst_bytes: bytes.and(nonzero(l.count(bb)?)),
    };
    limits
        .normalize()
        .map_err(|errors| l.bad(pps, errors.join("; ")))
}

pub fn valid_node_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

/// This machine's host name, cut to a valid node name (`node` if there is none).
fn host_name() -> String {
    let uname = rustix::system::uname();
    let name: String = uname
        .nodename()
        .to_string_lossy()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || "._-".contains(*c))
        .take(64)
        .collect();
    if name.is_empty() { "node".into() } else { name }
}

#[cfg(test)]
mod tests {
    use super::HostPattern;

    fn settings(yaml: &str) -> Result<super::Settings, String> {
        let mut l = super::Layers::defaults();
        l.merge_yaml(yaml, std::path::Path::new("f.yaml"))
            .map_err(|e| e.to_string())?;
        super::Settings::from_layers(&l).map_err(|e| e.to_string())
    }

    #[test]
    fn the_node_key_comes_from_the_setting_or_a_file_and_bad_fleet_values_name_their_key() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("node.key");
        std::fs::write(&file, "the-node-key\n").unwrap();
        let s = settings(&format!("authority:\n  node-key-file: {file:?}\n")).unwrap();
        assert_eq!(s.node.node_key.unwrap().expose(), "the-node-key");
        let s = settings("authority:\n  node-key: k1\nnode:\n  name: ingest-3\n").unwrap();
        assert_eq!(s.node.node_key.unwrap().expose(), "k1");
        assert_eq!(s.node.name, "ingest-3");
        assert_eq!(s.node.report_interval, std::time::Duration::from_secs(15));
        assert!(!settings("").unwrap().node.name.is_empty(), "the host name");
        let empty = dir.path().join("empty.key");
        std::fs::write(&empty, "\n").unwrap();
        for (yaml, key) in [
            (
                format!("authority:\n  node-key: k\n  node-key-file: {file:?}\n"),
                "authority.node-key-file",
            ),
            (
                format!("authority:\n  node-key-file: {empty:?}\n"),
                "authority.node-key-file",
            ),
            (
                "authority:\n  node-key-file: /nonexistent/node.key\n".into(),
                "authority.node-key-file",
            ),
            ("node:\n  name: \"two words\"\n".into(), "node.name"),
            (format!("node:\n  name: {}\n", "n".repeat(65)), "node.name"),
            (
                "node:\n  report-interval: 0s\n".into(),
                "node.report-interval",
            ),
        ] {
            let err = settings(&yaml).unwrap_err();
            assert!(err.contains(key), "{yaml}: {err}");
            assert!(!err.contains("the-node-key"), "{err}");
        }
    }

    #[test]
    fn oidc_needs_an_https_or_loopback_issuer_a_client_and_names_the_bad_key() {
        let base = "auth:\n  oidc:\n    enabled: true\n    client-id: pyrogate\n    client-secret: s3cret-value\n    redirect-url: https://pyro.example/auth/oidc/callback\n";
        let s = settings(&format!(
            "{base}    issuer-url: https://idp.example/realms/x\n    role-mapping:\n      admin: ops, platform\n"
        ))
        .unwrap();
        let oidc = s.authority.oidc.unwrap();
        assert_eq!(oidc.scopes, ["openid", "profile", "email"]);
        assert_eq!(
            oidc.role_mapping[0].1,
            vec!["ops".to_owned(), "platform".to_owned()]
        );
        assert_eq!(oidc.default_role, crate::core::token::Role::ReadOnly);
        for loopback in [
            "http://127.0.0.1:9000",
            "http://localhost:9/x",
            "http://[::1]:1",
        ] {
            settings(&format!("{base}    issuer-url: {loopback}\n")).unwrap();
        }
        for (yaml, key) in [
            (format!("{base}    issuer-url: http://idp.example\n"), "auth.oidc.issuer-url"),
            (format!("{base}    issuer-url: http://127.0.0.1.evil.example\n"), "auth.oidc.issuer-url"),
            (base.to_owned(), "auth.oidc.issuer-url"),
            (
                "auth:\n  oidc:\n    enabled: true\n    issuer-url: https://i.example\n    client-id: c\n    redirect-url: https://p.example/cb\n".into(),
                "auth.oidc.client-secret",
            ),
        ] {
            let err = settings(&yaml).unwrap_err();
            assert!(err.contains(key), "{yaml}: {err}");
            assert!(!err.contains("s3cret-value"), "{err}");
        }
        assert!(settings("").unwrap().authority.oidc.is_none());
    }

    #[test]
    fn allowed_host_entries_parse_and_match_host_and_port() {
        let split = |t: &str| HostPattern::split(t);
        assert_eq!(
            split("Pyro.Example.COM."),
            Some(("pyro.example.com".into(), None))
        );
        assert_eq!(split("h:8080"), Some(("h".into(), Some(8080))));
        assert_eq!(split("[::1]:4040"), Some(("::1".into(), Some(4040))));
        assert_eq!(split("[::1]"), Some(("::1".into(), None)));
        for bad in [
            "", ":80", "h:", "h:x", "h:99999", "u@h", "h/p", "::1", "[::1", "[x]", "h:80:1", "h h",
        ] {
            assert!(HostPattern::parse(bad).is_none(), "{bad:?}");
        }
        let any_port = HostPattern::parse("pyro.example.com").unwrap();
        assert!(any_port.allows("pyro.example.com", None));
        assert!(any_port.allows("pyro.example.com", Some(4040)));
        assert!(!any_port.allows("evil.example.com", None));
        assert!(!any_port.allows("pyro.example.com.evil", None));
        let one_port = HostPattern::parse("pyro.example.com:4040").unwrap();
        assert!(one_port.allows("pyro.example.com", Some(4040)));
        assert!(!one_port.allows("pyro.example.com", Some(4041)));
        assert!(!one_port.allows("pyro.example.com", None));
        let https = HostPattern::parse("pyro.example.com:443").unwrap();
        assert!(https.allows("pyro.example.com", None));
    }
}
