//! The key table: every configuration key, declared once, with its default, type, help and the
//! commands that read it. Flags, environment names, docs/configuration.md and
//! config/pyrogate.example.yaml all follow from it.

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

/// Which commands read a key: each command's `--help` lists only its own flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scope(u8);

impl Scope {
    /// `pyrogate server`, the authority.
    pub const SERVER: Scope = Scope(1);
    /// `pyrogate ingest`, a node.
    pub const INGEST: Scope = Scope(2);
    /// Commands that work on the authority's local store and keys (`api-key`, `admin`).
    pub const LOCAL: Scope = Scope(4);
    /// `pyrogate spool …`: only where the node keeps its spool.
    pub const SPOOL: Scope = Scope(8);
    /// The server, ingest and local commands (and `config check`, which reads every key).
    pub const ALL: Scope = Scope(7);

    pub const fn bits(self) -> u8 {
        self.0
    }

    pub const fn from_bits(bits: u8) -> Scope {
        Scope(bits)
    }

    pub const fn or(self, other: Scope) -> Scope {
        Scope(self.0 | other.0)
    }

    pub const fn contains(self, other: Scope) -> bool {
        self.0 & other.0 == other.0
    }

    pub const fn overlaps(self, other: Scope) -> bool {
        self.0 & other.0 != 0
    }
}

use Scope as S;
const SERVER: Scope = S::SERVER;
const INGEST: Scope = S::INGEST;
const LOCAL: Scope = S::LOCAL;
const ALL: Scope = S::ALL;
const SPOOL: Scope = S::SPOOL;

/// One configuration key.
#[derive(Debug, Clone, Copy)]
pub struct Key {
    pub name: &'static str,
    /// The commands that read it.
    pub scope: Scope,
    pub default: &'static str,
    pub kind: Kind,
    pub help: &'static str,
    /// An earlier name still accepted everywhere (`--upstream`, `PYROSCOPE_UPSTREAM`, and
    /// `upstream: URL` in YAML for `upstream.url`).
    pub alias: Option<&'static str>,
}

/// `auth.ingestion.enabled` → `PYROSCOPE_AUTH_INGESTION_ENABLED`.
pub fn env_name_of(name: &str) -> String {
    let mut out = String::from("PYROSCOPE_");
    for c in name.chars() {
        out.push(match c {
            '.' | '-' => '_',
            c => c.to_ascii_uppercase(),
        });
    }
    out
}

impl Key {
    const fn alias(mut self, alias: &'static str) -> Key {
        self.alias = Some(alias);
        self
    }

    /// True for the key's name and its alias.
    pub fn answers_to(&self, name: &str) -> bool {
        self.name == name || self.alias == Some(name)
    }

    /// True for the key's environment variable and its alias's.
    pub fn answers_to_env(&self, var: &str) -> bool {
        self.env_name() == var || self.alias.is_some_and(|a| env_name_of(a) == var)
    }

    /// `auth.ingestion.enabled` → `PYROSCOPE_AUTH_INGESTION_ENABLED`.
    pub fn env_name(&self) -> String {
        env_name_of(self.name)
    }

    pub fn flag(&self) -> String {
        format!("--{}", self.name)
    }
}

const fn key(
    name: &'static str,
    scope: Scope,
    default: &'static str,
    kind: Kind,
    help: &'static str,
) -> Key {
    Key {
        name,
        scope,
        default,
        kind,
        help,
        alias: None,
    }
}

/// Every configuration key. Keep related keys together; docs are generated in this order.
#[rustfmt::skip]
pub const KEYS: &[Key] = &[
    key("api-bind-addr", SERVER.or(INGEST), ":4040", Kind::Addr,
        "Address the HTTP server listens on."),
    key("storage-path", ALL.or(SPOOL), "data", Kind::String,
        "Directory for the database (authority) or the key-set cache and spool (ingest node)."),
    key("keys-dir", SERVER.or(LOCAL), "keys", Kind::String,
        "Directory holding the Ed25519 signing keys (authority)."),
    key("database.url", SERVER.or(LOCAL), "", Kind::Secret,
        "The authority's database. Empty or sqlite:// is the embedded SQLite file under storage-path (sqlite://DIR: in DIR); postgres://USER@HOST:PORT/DB (or postgresql://) is PostgreSQL, which any number of replicas can share (they also need authority.key-encryption-key-file). TLS by sslmode=disable|prefer|require in the URL; over TLS the server's certificate is always verified. Never printed: it may hold a password."),
    key("database.password-file", SERVER.or(LOCAL), "", Kind::String,
        "PostgreSQL: a file holding the password (one line), instead of one in database.url."),
    key("database.tls-ca-path", SERVER.or(LOCAL), "", Kind::String,
        "PostgreSQL: CA certificate(s) (PEM) the server's certificate must chain to; without it, the system roots."),
    key("log-level", SERVER.or(INGEST), "info", Kind::Choice(&["error", "warn", "info", "debug", "trace"]),
        "Log verbosity."),
    key("server.http-server-read-timeout", SERVER.or(INGEST), "30s", Kind::Duration,
        "Time a client has to send a request's headers; keep-alive connections idle this long are closed too (slowloris)."),
    key("server.http-max-connections", SERVER.or(INGEST), "16384", Kind::Count,
        "Connections open at once (0 = no cap of its own); above revocations.max-long-polls, so a fleet's long-polls leave room. At the cap the oldest idle connection is closed for a new one; with none idle the new one gets an immediate 503. The open-files limit is raised to the hard limit at start; caps above what it leaves for connections are lowered to fit (logged)."),
    key("server.http-max-connections-per-client", SERVER.or(INGEST), "1024", Kind::Count,
        "Connections open at once from one client address (behind a load balancer that is the balancer; 0 = no cap); a client at it that opens another has its own oldest idle one closed. Lowered in proportion when the open-files limit lowers server.http-max-connections."),
    key("server.allowed-hosts", SERVER.or(INGEST), "", Kind::String,
        "Comma-separated host names (name or name:port) requests may be addressed to (DNS rebinding); others get 400. IP-address hosts always pass. Empty allows any."),
    key("server.http-tls-cert-path", SERVER.or(INGEST), "", Kind::String,
        "Serve HTTPS with this certificate chain (PEM); re-read when the file changes."),
    key("server.http-tls-key-path", SERVER.or(INGEST), "", Kind::String,
        "Private key (PEM) of server.http-tls-cert-path."),
    key("server.http-tls-client-auth", SERVER.or(INGEST), "NoClientCert", Kind::Choice(&["NoClientCert", "RequireAndVerifyClientCert"]),
        "Whether clients must present a certificate signed by server.http-tls-ca-path."),
    key("server.http-tls-ca-path", SERVER.or(INGEST), "", Kind::String,
        "CA certificate(s) (PEM) that client certificates must chain to."),
    key("auth.ingestion.enabled", SERVER.or(INGEST), "false", Kind::Bool,
        "Require an Agent or Admin API key on ingest routes."),
    key("auth.ingestion.basic-user-is-tenant", SERVER.or(INGEST), "false", Kind::Bool,
        "Require the HTTP Basic username, when given, to equal the key's tenant (Grafana-Cloud style)."),
    key("auth.internal.enabled", SERVER, "true", Kind::Bool,
        "Enable built-in users and password login (UI and POST /api/login); when off, people sign in through auth.oidc only (without it the admin API takes Admin API keys only). `pyrogate admin user reset-password` still works."),
    key("auth.internal.admin.create", SERVER, "true", Kind::Bool,
        "Create the first admin user on first start."),
    key("auth.internal.admin.name", SERVER, "admin", Kind::String,
        "Name of the first admin user."),
    key("auth.internal.admin.email", SERVER, "admin@localhost", Kind::String,
        "Email of the first admin user."),
    key("auth.internal.admin.password", SERVER, "", Kind::Secret,
        "Password of the first admin user; empty generates a strong one and prints it once."),
    key("auth.jwt-secret", SERVER, "", Kind::Secret,
        "Secret that signs UI session cookies; empty generates one and keeps it in the database."),
    key("auth.login-maximum-lifetime-days", SERVER, "7", Kind::Count,
        "How long a login session lasts, in days (0 = 365)."),
    key("auth.cookie-secure", SERVER, "false", Kind::Bool,
        "Mark the session cookie Secure (set when served over HTTPS)."),
    key("auth.cookie-same-site", SERVER, "Lax", Kind::Choice(&["Strict", "Lax", "None"]),
        "SameSite attribute of the session cookie."),
    key("auth.issuer", ALL, "pyrogate", Kind::String,
        "The iss claim written into and required of every API key."),
    key("auth.clock-skew", SERVER.or(INGEST), "60s", Kind::Duration,
        "Allowed clock difference when checking exp, nbf and iat."),
    key("auth.cache-size", SERVER.or(INGEST), "65536", Kind::Count,
        "Verified tokens remembered per process, and by each push connection the last key it verified (0 disables both)."),
    key("auth.login-max-failures", SERVER, "10", Kind::Count,
        "Failed logins allowed per user and per client address within the lockout window."),
    key("auth.trusted-proxies", SERVER.or(INGEST), "", Kind::String,
        "Comma-separated networks (10.0.0.0/8, 2001:db8::/32, or single addresses) of load balancers and proxies whose X-Forwarded-For names the client: the right-most address in it that is not itself a trusted proxy. Used for login throttling and audit (authority) and for keys limited to networks, cidrs (ingest node). Empty trusts none: the connection's own address, always."),
    key("auth.login-lockout", SERVER, "15m", Kind::Duration,
        "Window over which failed logins are counted."),
    key("auth.login-delay-after", SERVER, "5", Kind::Count,
        "Failed logins for one user name, from any address, after which every further attempt on it waits a progressive delay before the password is checked (0 = no delays). The count ends after a lockout window without failures, or on a successful login."),
    key("auth.login-delay", SERVER, "1s", Kind::Duration,
        "First progressive delay (whole seconds); it doubles with each further failure, up to auth.login-max-delay."),
    key("auth.login-max-delay", SERVER, "30s", Kind::Duration,
        "Longest progressive delay of one attempt."),
    key("auth.login-max-waiting", SERVER, "4", Kind::Count,
        "Attempts on one user name that may wait out their delay at once; more get 429 with Retry-After. Times auth.login-max-delay at most 240s."),
    key("auth.key-expiry-warning", SERVER, "7d", Kind::Duration,
        "API keys expiring within this time are flagged in the UI and counted in pyrogate_api_keys_expiring."),
    key("auth.signup-default-role", SERVER, "ReadOnly", Kind::Choice(&["Admin", "ReadOnly", "Agent"]),
        "Role of a user signing in through auth.oidc whose groups match no auth.oidc.role-mapping entry (unless auth.oidc.role-attribute-strict)."),
    key("auth.oidc.enabled", SERVER, "false", Kind::Bool,
        "Single sign-on with an OpenID Connect provider (authorization code flow with PKCE): a \"Sign in with …\" button on the login page, GET /auth/oidc/login and /auth/oidc/callback."),
    key("auth.oidc.name", SERVER, "SSO", Kind::String,
        "The provider's name on the login button (\"Sign in with Okta\")."),
    key("auth.oidc.issuer-url", SERVER, "", Kind::Url,
        "The provider's issuer (its /.well-known/openid-configuration is read at the first sign-in and hourly after); https, or http on a loopback address only. ID tokens must name exactly this issuer."),
    key("auth.oidc.client-id", SERVER, "", Kind::String,
        "The client id registered at the provider."),
    key("auth.oidc.client-secret", SERVER, "", Kind::Secret,
        "The client secret registered at the provider (sent with HTTP Basic to the token endpoint). Never printed."),
    key("auth.oidc.client-secret-file", SERVER, "", Kind::String,
        "A file holding auth.oidc.client-secret (one line), instead of the secret itself."),
    key("auth.oidc.redirect-url", SERVER, "", Kind::Url,
        "This server's callback as registered at the provider: https://pyrogate.example.com/auth/oidc/callback."),
    key("auth.oidc.scopes", SERVER, "openid profile email", Kind::String,
        "Scopes asked for, space- or comma-separated (openid is always sent); add the one that releases groups where the provider needs it (groups at Okta and Dex)."),
    key("auth.oidc.allowed-domains", SERVER, "", Kind::String,
        "Comma-separated e-mail domains; a user whose e-mail the provider marks verified (email_verified) must have one of them. Empty allows any."),
    key("auth.oidc.groups-claim", SERVER, "groups", Kind::String,
        "The claim (in the ID token or UserInfo) holding the user's groups: a list of strings, or one string."),
    key("auth.oidc.role-mapping.admin", SERVER, "", Kind::String,
        "Comma-separated groups whose members get the Admin role (checked first)."),
    key("auth.oidc.role-mapping.read-only", SERVER, "", Kind::String,
        "Comma-separated groups whose members get the ReadOnly role (checked after Admin)."),
    key("auth.oidc.role-mapping.agent", SERVER, "", Kind::String,
        "Comma-separated groups whose members get the Agent role (checked last)."),
    key("auth.oidc.role-attribute-strict", SERVER, "false", Kind::Bool,
        "Refuse a user whose groups match no auth.oidc.role-mapping entry, instead of giving auth.signup-default-role."),
    key("auth.oidc.allow-sign-up", SERVER, "true", Kind::Bool,
        "Create a user at their first sign-in; false admits only users an admin created for the identity beforehand (POST /api/users with ssoSubject)."),
    key("auth.oidc.tls-ca-path", SERVER, "", Kind::String,
        "CA certificate(s) (PEM) the provider's certificate must chain to; empty uses the system roots."),
    key("auth.default-key-limits.agent.pushes-per-second", SERVER.or(LOCAL), "", Kind::String,
        "Limit given to new Agent keys created without one: pushes per second for the whole fleet (a decimal such as 0.5; empty or 0 = no limit)."),
    key("auth.default-key-limits.agent.burst-pushes", SERVER.or(LOCAL), "0", Kind::Count,
        "Burst of that default limit, in pushes (0 = one second's worth)."),
    key("auth.default-key-limits.agent.bytes-per-second", SERVER.or(LOCAL), "0", Kind::Count,
        "Default limit of new Agent keys in request-body bytes per second for the whole fleet (0 = no limit)."),
    key("auth.default-key-limits.agent.burst-bytes", SERVER.or(LOCAL), "0", Kind::Count,
        "Burst of that default byte limit (0 = one second's worth)."),
    key("auth.default-key-limits.admin.pushes-per-second", SERVER.or(LOCAL), "", Kind::String,
        "As auth.default-key-limits.agent.pushes-per-second, for new Admin keys (ReadOnly and Node keys can't push)."),
    key("auth.default-key-limits.admin.burst-pushes", SERVER.or(LOCAL), "0", Kind::Count,
        "Burst of the Admin default, in pushes (0 = one second's worth)."),
    key("auth.default-key-limits.admin.bytes-per-second", SERVER.or(LOCAL), "0", Kind::Count,
        "Default limit of new Admin keys in bytes per second (0 = no limit)."),
    key("auth.default-key-limits.admin.burst-bytes", SERVER.or(LOCAL), "0", Kind::Count,
        "Burst of the Admin default byte limit (0 = one second's worth)."),
    key("revocations.max-wait", SERVER, "60s", Kind::Duration,
        "Longest long-poll a client may ask for with ?wait= (at most 240s, inside the request timeout)."),
    key("revocations.max-long-polls", SERVER, "10000", Kind::Count,
        "Long-polls (?wait=) held at once; past it a poll gets 503 and the node backs off."),
    key("revocations.resign-interval", SERVER, "30s", Kind::Duration,
        "How often the revocation list and key set are re-signed even when unchanged: their signed iat tells nodes (sync.max-staleness) that they are current."),
    key("revocations.prune-interval", SERVER, "60s", Kind::Duration,
        "How often expired revocation entries are pruned and the signing keys re-read."),
    key("authority.key-encryption-key-file", SERVER.or(LOCAL), "", Kind::String,
        "PostgreSQL (required): a file holding 32 random bytes in base64 (`openssl rand -base64 32`), the same on every replica. The signing keys are kept in the database sealed with it (AES-256-GCM); the database never holds them in plain text. With SQLite the keys stay in keys-dir."),
    key("authority.url", INGEST, "", Kind::Url,
        "Ingest node: base URL of the authority to pull the key set and revocation list from.")
        .alias("authority-url"),
    key("authority.tls-ca-path", INGEST, "", Kind::String,
        "Ingest node: CA certificate(s) (PEM) that the authority's certificate must chain to; empty uses the system roots."),
    key("authority.tls-cert-path", INGEST, "", Kind::String,
        "Ingest node: client certificate (PEM) presented to the authority (mTLS)."),
    key("authority.tls-key-path", INGEST, "", Kind::String,
        "Ingest node: private key (PEM) of authority.tls-cert-path."),
    key("authority.trusted-keys", INGEST, "", Kind::String,
        "Ingest node: comma-separated kids of the signing keys trusted at first contact (`pyrogate signing-key list`); the signed key set must chain to them."),
    key("authority.insecure-trust-first-use", INGEST, "false", Kind::Bool,
        "Ingest node: trust whatever key set the authority serves first, without a trust anchor (labs only)."),
    key("authority.node-key", INGEST, "", Kind::Secret,
        "Ingest node: this node's own API key (role Node). With it the node reports its traffic per key and application and its health to the authority every node.report-interval (POST /api/nodes/report); empty: no reports, the node works as before. Never printed."),
    key("authority.node-key-file", INGEST, "", Kind::String,
        "Ingest node: a file holding authority.node-key (one line), instead of the key itself."),
    key("node.name", INGEST, "", Kind::String,
        "Ingest node: the name it reports under (letters, digits, . _ -; at most 64); empty: the host name."),
    key("node.report-interval", INGEST, "15s", Kind::Duration,
        "Ingest node: how often it reports to the authority (with authority.node-key); the authority calls a node not reporting after three intervals."),
    key("jwks-file", INGEST, "", Kind::String,
        "Ingest node without an authority (air-gapped): JWK Set file to trust; re-read when it changes."),
    key("revocations-file", INGEST, "", Kind::String,
        "Ingest node without an authority (air-gapped): signed revocation list file; re-read when it changes."),
    key("sync.wait", INGEST, "30s", Kind::Duration,
        "Ingest node: how long each long-poll for revocation changes waits."),
    key("sync.jwks-interval", INGEST, "60s", Kind::Duration,
        "Ingest node: how often the key set is re-fetched (also fetched at once on an unknown kid)."),
    key("sync.max-staleness", INGEST, "0s", Kind::Duration,
        "Ingest node: refuse pushes (503) once the revocation list in force was signed longer ago than this (its signed iat, not the last answer); 0 keeps serving with the last good copy."),
    key("upstream.url", SERVER.or(INGEST), "", Kind::Url,
        "URL of the Grafana Pyroscope to forward ingested profiles to; empty keeps them locally.")
        .alias("upstream"),
    key("upstream.timeout", SERVER.or(INGEST), "30s", Kind::Duration,
        "Timeout of one request to the upstream.")
        .alias("upstream-timeout"),
    key("upstream.basic-auth-username", SERVER.or(INGEST), "", Kind::String,
        "HTTP Basic username sent to the upstream instead of the agent's credentials (Grafana Cloud: the stack's user id)."),
    key("upstream.basic-auth-password", SERVER.or(INGEST), "", Kind::Secret,
        "HTTP Basic password sent to the upstream (Grafana Cloud: an access-policy token)."),
    key("upstream.bearer-token", SERVER.or(INGEST), "", Kind::Secret,
        "Bearer token sent to the upstream instead of the agent's credentials (not with basic auth)."),
    key("upstream.tls-ca-path", SERVER.or(INGEST), "", Kind::String,
        "CA certificate(s) (PEM) that the upstream's certificate must chain to; empty uses the system roots."),
    key("upstream.tls-cert-path", SERVER.or(INGEST), "", Kind::String,
        "Client certificate (PEM) presented to the upstream (mTLS)."),
    key("upstream.tls-key-path", SERVER.or(INGEST), "", Kind::String,
        "Private key (PEM) of upstream.tls-cert-path."),
    key("upstream.tls-insecure-skip-verify", SERVER.or(INGEST), "false", Kind::Bool,
        "Do not verify the upstream's certificate (logged as a warning at every start; never for production)."),
    key("tenant.default", SERVER.or(INGEST), "", Kind::String,
        "X-Scope-OrgID for keys without a tenant claim; empty sends none (single-tenant upstream)."),
    key("ingest.max-body-size", SERVER.or(INGEST), "16777216", Kind::Count,
        "Largest accepted push body, in bytes (413 beyond)."),
    key("ingest.spool.max-bytes", SERVER.or(INGEST), "1073741824", Kind::Count,
        "Disk space for pushes queued while the upstream is down; a full spool answers 503."),
    key("ingest.spool.replay-concurrency", SERVER.or(INGEST), "128", Kind::Count,
        "Most spooled pushes replayed at once after an upstream outage (1-4096); the replay starts at one and grows while the upstream takes them."),
    key("ingest.local.max-bytes", SERVER.or(INGEST), "268435456", Kind::Count,
        "Disk space for profiles kept locally when no upstream is set; the oldest are dropped first."),
    key("ingest.worker-threads", INGEST, "0", Kind::Count,
        "Ingest node: threads serving requests, each with its own event loop and its own upstream connections (0 = one per CPU core)."),
    key("ingest.pin-threads", INGEST, "true", Kind::Bool,
        "Ingest node: bind each serving thread to a CPU of its own when there is one per CPU the process may use (the default worker-threads) and no CPU quota below that; false leaves their placement to the kernel."),
];

/// The key called `name`, if there is one.
pub fn lookup(name: &str) -> Option<&'static Key> {
    KEYS.iter().find(|k| k.answers_to(name))
}
