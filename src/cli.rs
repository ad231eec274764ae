//! The `pyrogate` command line (DESIGN.md §7). Each subcommand is a thin shell over the library;
//! exit codes: 0 success, 1 failure (e.g. a token that does not verify), 2 usage error.

/// `println!`/`print!` for command output: a closed stdout (`pyrogate api-key list | head`)
/// ends the program quietly, like ripgrep, instead of panicking.
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if let Err(e) = writeln!(std::io::stdout(), $($arg)*) {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                std::process::exit(0);
            }
        }
    }};
}

macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if let Err(e) = write!(std::io::stdout(), $($arg)*) {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                std::process::exit(0);
            }
        }
    }};
}

use std::io::{IsTerminal as _, Read as _};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context as _, bail};
use clap::{Args, Parser, Subcommand};

use crate::auth::Access;
use crate::clock::{Clock, SystemClock};
use crate::config::{ConfigFlags, Settings};
use crate::jwk::{JwkSet, KeySet};
use crate::jws;
use crate::keyring::Keyring;
use crate::revocation::RevocationList;
use crate::token::{self, KeyRequest, Role};
use crate::verifier::{MAX_TOKEN_BYTES, Verifier, VerifierConfig};

#[derive(Debug, Parser)]
#[command(
    name = "pyrogate",
    version,
    about = "API keys for continuous profiling"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the authority: admin users, web UI, API-key REST API, key distribution.
    #[cfg(feature = "authority")]
    Server {
        #[command(flatten)]
        config: ConfigFlags,
    },
    /// Run a stateless ingest node: verify keys locally, forward pushes upstream.
    Ingest {
        #[command(flatten)]
        config: ConfigFlags,
    },
    /// Validate configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Create, list and delete API keys in the local store (same rules as the UI).
    #[cfg(feature = "authority")]
    #[command(subcommand)]
    ApiKey(ApiKeyCommand),
    /// Manage users in the local store.
    #[cfg(feature = "authority")]
    #[command(subcommand)]
    Admin(AdminCommand),
    /// Manage the Ed25519 keys that sign API keys.
    #[command(subcommand)]
    SigningKey(SigningKeyCommand),
    /// Issue, verify and inspect API keys offline.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Measure performance on this machine.
    #[command(subcommand)]
    Bench(BenchCommand),
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Load every layer (file, environment, flags) and report the first problem, naming the
    /// key and where its value came from.
    Check {
        #[command(flatten)]
        config: ConfigFlags,
    },
    /// Print a commented YAML file with every key at its default.
    Example,
    /// Print the Markdown table of every key (for docs/configuration.md).
    Docs,
}

#[cfg(feature = "authority")]
#[derive(Debug, Subcommand)]
pub enum ApiKeyCommand {
    /// Sign a new key, record it, and print it (shown once).
    Create {
        /// Unique, descriptive name.
        #[arg(long)]
        name: String,
        /// Admin, ReadOnly or Agent.
        #[arg(long, value_parser = parse_role)]
        role: Role,
        /// Seconds of validity; 0 means never expires.
        #[arg(long, default_value_t = 0)]
        ttl: u64,
        /// Tenant for X-Scope-OrgID.
        #[arg(long)]
        tenant: Option<String>,
        #[command(flatten)]
        config: ConfigFlags,
    },
    /// List keys (never the keys themselves).
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        config: ConfigFlags,
    },
    /// Delete a key by id or name; it is revoked everywhere within seconds.
    Delete {
        /// The key's id or name.
        #[arg(allow_hyphen_values = true)]
        key: String,
        #[command(flatten)]
        config: ConfigFlags,
    },
}

#[cfg(feature = "authority")]
#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Manage users.
    #[command(subcommand)]
    User(UserCommand),
}

#[cfg(feature = "authority")]
#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Create a user. The password is read from standard input with --password-stdin, or
    /// generated and printed once.
    Create {
        name: String,
        #[arg(long, value_parser = parse_role, default_value = "Admin")]
        role: Role,
        #[arg(long)]
        email: Option<String>,
        #[arg(long)]
        password_stdin: bool,
        #[command(flatten)]
        config: ConfigFlags,
    },
    /// Set a new password (from standard input with --password-stdin, or generated) and end
    /// the user's sessions.
    ResetPassword {
        name: String,
        #[arg(long)]
        password_stdin: bool,
        #[command(flatten)]
        config: ConfigFlags,
    },
    /// List users.
    List {
        #[command(flatten)]
        config: ConfigFlags,
    },
    /// Disable a user and end their sessions.
    Disable {
        name: String,
        #[command(flatten)]
        config: ConfigFlags,
    },
    /// Enable a disabled user.
    Enable {
        name: String,
        #[command(flatten)]
        config: ConfigFlags,
    },
}

#[derive(Debug, Args)]
pub struct KeysDir {
    /// Directory holding the signing keys.
    #[arg(long, default_value = "keys", env = "PYROSCOPE_KEYS_DIR")]
    pub keys_dir: PathBuf,
}

#[derive(Debug, Subcommand)]
pub enum SigningKeyCommand {
    /// Create the first signing key in an empty keys dir.
    Generate(KeysDir),
    /// Make a new active key; the old one stays published until retired.
    Rotate(KeysDir),
    /// Unpublish a non-active key and delete it: every token it signed stops verifying.
    Retire {
        /// A kid may begin with `-` (it is base64url), so it is never taken for a flag.
        #[arg(allow_hyphen_values = true)]
        kid: String,
        #[command(flatten)]
        keys: KeysDir,
    },
    /// List every key with its status.
    List {
        #[command(flatten)]
        keys: KeysDir,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Print the published keys as an RFC 8037 JWK Set.
    Jwks(KeysDir),
}

#[derive(Debug, Args)]
pub struct Issuer {
    /// The `iss` claim written and required.
    #[arg(long, default_value = "pyrogate", env = "PYROSCOPE_AUTH_ISSUER")]
    pub issuer: String,
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Sign an API key offline. The key is not registered in any store: it can only be
    /// revoked by retiring the signing key, or by a revocation list naming its jti.
    Issue {
        /// The key's unique, descriptive name (`sub`).
        #[arg(long)]
        name: String,
        /// Admin, ReadOnly or Agent.
        #[arg(long, value_parser = parse_role)]
        role: Role,
        /// Seconds of validity; 0 means never expires.
        #[arg(long)]
        ttl: u64,
        /// Tenant for X-Scope-OrgID.
        #[arg(long)]
        tenant: Option<String>,
        #[command(flatten)]
        keys: KeysDir,
        #[command(flatten)]
        issuer: Issuer,
    },
    /// Verify a key: exit 0 and print its claims, or exit 1 with the reason.
    Verify {
        /// The token, or `-` to read it from standard input.
        token: String,
        /// Trust the keys published by this keys dir.
        #[arg(long, conflicts_with = "jwks")]
        keys_dir: Option<PathBuf>,
        /// Trust the keys in this JWK Set file instead.
        #[arg(long)]
        jwks: Option<PathBuf>,
        /// Refuse keys listed in this signed revocation list.
        #[arg(long)]
        revocations: Option<PathBuf>,
        /// Also require that the key may act with this role's rights.
        #[arg(long, value_parser = parse_role)]
        role: Option<Role>,
        /// Allowed clock difference, in seconds.
        #[arg(long, default_value_t = 60)]
        clock_skew: u64,
        #[command(flatten)]
        issuer: Issuer,
    },
    /// Decode a key WITHOUT verifying it (for debugging; anyone can forge what it shows).
    Inspect {
        /// The token, or `-` to read it from standard input.
        token: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Cost of verifying a key: raw Ed25519, uncached, cached, and rejected garbage.
    Verify {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// Operations per measured batch.
        #[arg(long, default_value_t = 2000)]
        iterations: u32,
    },
    /// Push throughput through an ingest node, auth off vs auth on, in one run.
    Ingest {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// Seconds per round and mode.
        #[arg(long, default_value_t = 1.0)]
        seconds: f64,
        /// Rounds (alternating auth off / on).
        #[arg(long, default_value_t = 10)]
        rounds: usize,
        /// Concurrent clients.
        #[arg(long, default_value_t = 16)]
        concurrency: usize,
        /// Bytes per push.
        #[arg(long, default_value_t = 10_240)]
        body_bytes: usize,
    },
}

fn parse_role(s: &str) -> Result<Role, String> {
    s.parse()
        .map_err(|_| format!("unknown role {s:?}; expected Admin, ReadOnly or Agent"))
}

/// Entry point used by `main`: parses arguments, runs, prints errors with their causes.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// Logs go to stderr; `RUST_LOG` overrides the configured level.
fn init_tracing(level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}

pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let clock = SystemClock;
    #[cfg(feature = "authority")]
    let is_server = matches!(cli.command, Command::Server { .. } | Command::Ingest { .. });
    #[cfg(not(feature = "authority"))]
    let is_server = matches!(cli.command, Command::Ingest { .. });
    if !is_server {
        init_tracing("warn");
    }
    match cli.command {
        #[cfg(feature = "authority")]
        Command::Server { config } => server(&config),
        Command::Ingest { config } => ingest_node(&config),
        Command::Config(ConfigCommand::Check { config }) => {
            let layers = config.load()?;
            Settings::from_layers(&layers)?;
            for var in &layers.ignored_env {
                eprintln!("note: ignoring {var}: not a pyrogate setting");
            }
            outln!("configuration ok");
            Ok(ExitCode::SUCCESS)
        }
        Command::Config(ConfigCommand::Example) => {
            out!("{}", crate::config::example_yaml());
            Ok(ExitCode::SUCCESS)
        }
        Command::Config(ConfigCommand::Docs) => {
            out!("{}", crate::config::markdown_table());
            Ok(ExitCode::SUCCESS)
        }
        #[cfg(feature = "authority")]
        Command::ApiKey(cmd) => api_key(cmd, clock.now()),
        #[cfg(feature = "authority")]
        Command::Admin(AdminCommand::User(cmd)) => user_command(cmd, clock.now()),
        Command::SigningKey(cmd) => signing_key(cmd, clock.now()),
        Command::Token(cmd) => token_command(cmd, Arc::new(clock)),
        Command::Bench(BenchCommand::Verify { json, iterations }) => {
            let report = crate::bench::verify(iterations.max(10));
            if json {
                outln!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                out!("{report}");
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench(BenchCommand::Ingest {
            json,
            seconds,
            rounds,
            concurrency,
            body_bytes,
        }) => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("starting the async runtime")?;
            let report = runtime.block_on(crate::bench::ingest(
                seconds.max(0.1),
                rounds.max(1),
                concurrency.max(1),
                body_bytes.max(1),
            ))?;
            if json {
                outln!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                out!("{report}");
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn signing_key(cmd: SigningKeyCommand, now: u64) -> anyhow::Result<ExitCode> {
    match cmd {
        SigningKeyCommand::Generate(k) => {
            let ring = Keyring::generate(&k.keys_dir, now)?;
            outln!("{}", ring.active().kid());
            eprintln!(
                "created signing key {} in {}",
                ring.active().kid(),
                k.keys_dir.display()
            );
        }
        SigningKeyCommand::Rotate(k) => {
            let mut ring = Keyring::open(&k.keys_dir)?;
            let old = ring.active().kid().to_owned();
            let new = ring.rotate(now)?;
            outln!("{new}");
            eprintln!(
                "{new} now signs new keys; {old} stays published until `pyrogate signing-key retire {old}`"
            );
        }
        SigningKeyCommand::Retire { kid, keys } => {
            let mut ring = Keyring::open(&keys.keys_dir)?;
            ring.retire(&kid, now)?;
            eprintln!("retired {kid}: every token it signed is now invalid");
        }
        SigningKeyCommand::List { keys, json } => {
            let ring = Keyring::open(&keys.keys_dir)?;
            if json {
                outln!("{}", serde_json::to_string_pretty(ring.keys())?);
            } else {
                outln!("{:<44}  {:<9}  CREATED", "KID", "STATUS");
                for k in ring.keys() {
                    outln!("{:<44}  {:<9}  {}", k.kid, k.status, rfc3339(k.created_at));
                }
            }
        }
        SigningKeyCommand::Jwks(k) => {
            let ring = Keyring::open(&k.keys_dir)?;
            outln!("{}", serde_json::to_string_pretty(&ring.jwks())?);
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn token_command(cmd: TokenCommand, clock: Arc<dyn Clock>) -> anyhow::Result<ExitCode> {
    match cmd {
        TokenCommand::Issue {
            name,
            role,
            ttl,
            tenant,
            keys,
            issuer,
        } => {
            let ring = Keyring::open(&keys.keys_dir)?;
            let issued = token::issue(
                ring.active(),
                &issuer.issuer,
                clock.now(),
                &KeyRequest {
                    name: &name,
                    role,
                    ttl_seconds: ttl,
                    tenant: tenant.as_deref(),
                },
            )?;
            outln!("{}", issued.token.expose());
            eprintln!(
                "issued unregistered key {:?} (jti {}); it is in no store: revoke it by jti or by retiring signing key {}",
                issued.claims.sub, issued.claims.jti, issued.kid
            );
            Ok(ExitCode::SUCCESS)
        }
        TokenCommand::Verify {
            token,
            keys_dir,
            jwks,
            revocations,
            role,
            clock_skew,
            issuer,
        } => {
            let keys = match jwks {
                Some(path) => load_jwks(&path)?,
                None => Keyring::open(keys_dir.as_deref().unwrap_or(Path::new("keys")))?.key_set(),
            };
            let config = VerifierConfig {
                issuer: issuer.issuer,
                clock_skew_secs: clock_skew,
                cache_capacity: 0,
            };
            let verifier = Verifier::new(config, keys, clock);
            if let Some(path) = revocations {
                let text = std::fs::read_to_string(&path)
                    .with_context(|| format!("reading {}", path.display()))?;
                let list =
                    RevocationList::verify(&text, &verifier.keys(), &verifier.config().issuer)
                        .map_err(|e| {
                            anyhow::anyhow!("revocation list {} is invalid: {e}", path.display())
                        })?;
                verifier.set_revocations(list.to_set());
            }
            let token = read_token(&token)?;
            let principal = match verifier.verify_uncached(&token) {
                Ok(p) => p,
                Err(reason) => {
                    eprintln!("invalid credentials: {reason}");
                    return Ok(ExitCode::FAILURE);
                }
            };
            if let Some(role) = role {
                let access = match role {
                    Role::Admin => Access::Admin,
                    Role::ReadOnly => Access::Query,
                    Role::Agent => Access::Ingest,
                };
                if !access.allows(principal.role) {
                    eprintln!(
                        "permission denied: this requires the {} role; key has role {}",
                        access.roles(),
                        principal.role
                    );
                    return Ok(ExitCode::FAILURE);
                }
            }
            let claims = jws::split(&token, MAX_TOKEN_BYTES)
                .ok()
                .and_then(jws::decode_unverified)
                .map(|(_, claims)| claims)
                .context("verified token could not be decoded")?;
            outln!("{}", serde_json::to_string_pretty(&claims)?);
            Ok(ExitCode::SUCCESS)
        }
        TokenCommand::Inspect { token } => {
            let token = read_token(&token)?;
            eprintln!(
                "WARNING: NOT VERIFIED. Anyone can write these fields; use `pyrogate token verify` to check a key."
            );
            let Some((header, claims)) = jws::split(&token, MAX_TOKEN_BYTES)
                .ok()
                .and_then(jws::decode_unverified)
            else {
                eprintln!("invalid credentials: malformed");
                return Ok(ExitCode::FAILURE);
            };
            let out = serde_json::json!({ "verified": false, "header": header, "claims": claims });
            outln!("{}", serde_json::to_string_pretty(&out)?);
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn load_jwks(path: &Path) -> anyhow::Result<KeySet> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let set: JwkSet = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a JWK Set", path.display()))?;
    KeySet::from_jwks(&set).with_context(|| format!("{} is not usable", path.display()))
}

/// Reads a token argument; `-` means standard input. Surrounding whitespace is dropped.
fn read_token(arg: &str) -> anyhow::Result<String> {
    let raw = if arg == "-" {
        let mut buf = String::new();
        std::io::stdin()
            .take(MAX_TOKEN_BYTES as u64 * 4)
            .read_to_string(&mut buf)
            .context("reading the token from standard input")?;
        buf
    } else {
        arg.to_owned()
    };
    let token = raw.trim();
    if token.is_empty() {
        bail!("no token given");
    }
    Ok(token.to_owned())
}

/// Unix seconds as RFC 3339 UTC, for humans.
pub fn rfc3339(secs: u64) -> String {
    time::OffsetDateTime::from_unix_timestamp(secs as i64)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| secs.to_string())
}

#[cfg(feature = "authority")]
fn load_settings(flags: &ConfigFlags) -> anyhow::Result<Settings> {
    let layers = flags.load()?;
    let settings = Settings::from_layers(&layers)?;
    for var in &layers.ignored_env {
        tracing::warn!("ignoring environment variable {var}: not a pyrogate setting");
    }
    Ok(settings)
}

#[cfg(feature = "authority")]
fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// Resolves when SIGINT or SIGTERM arrives.
pub async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
    tracing::info!("shutting down");
}

#[cfg(feature = "authority")]
fn server(flags: &ConfigFlags) -> anyhow::Result<ExitCode> {
    let layers = flags.load()?;
    let settings = Settings::from_layers(&layers)?;
    init_tracing(settings.log_level);
    for var in &layers.ignored_env {
        tracing::warn!("ignoring environment variable {var}: not a pyrogate setting");
    }
    runtime()?.block_on(async {
        let app =
            crate::authority::Application::build(settings, Arc::new(SystemClock)).await?;
        let first = &app.first_start;
        if let Some(kid) = &first.created_signing_key {
            tracing::info!(kid = %kid, "created the first signing key");
        }
        if let Some((name, generated)) = &first.created_admin {
            match generated {
                Some(password) => {
                    // Printed once, to the console only: never through the log pipeline.
                    outln!();
                    outln!("  Created admin user {name:?} with a generated password (shown only once):");
                    outln!();
                    outln!("      {password}");
                    outln!();
                    outln!(
                        "  Log in at http://localhost:{}/login and change it under Profile.",
                        app.port()
                    );
                    outln!();
                }
                None => tracing::info!(user = %name, "created the admin user with the configured password"),
            }
        }
        tracing::info!(addr = %app.local_addr(), "pyrogate authority listening");
        app.run_until(shutdown_signal()).await?;
        Ok(ExitCode::SUCCESS)
    })
}

#[cfg(feature = "authority")]
fn open_local(flags: &ConfigFlags) -> anyhow::Result<(Settings, crate::store::Store)> {
    let settings = load_settings(flags)?;
    let store = crate::store::Store::open(&settings.storage_path)?;
    Ok((settings, store))
}

#[cfg(feature = "authority")]
fn api_key(cmd: ApiKeyCommand, now: u64) -> anyhow::Result<ExitCode> {
    use crate::authority::keys::{self, CreateKeyRequest, KeyView};
    use crate::store;
    match cmd {
        ApiKeyCommand::Create {
            name,
            role,
            ttl,
            tenant,
            config,
        } => {
            let (settings, store) = open_local(&config)?;
            let ring = Keyring::open(&settings.keys_dir)?;
            let req = CreateKeyRequest {
                name: Some(name),
                role: Some(role.to_string()),
                ttl_seconds: Some(i64::try_from(ttl).unwrap_or(i64::MAX)),
                tenant,
            }
            .validate()
            .map_err(|errors| anyhow::anyhow!(errors.join("; ")))?;
            let actor = format!("cli:{}", whoami());
            let (record, key) = store.with(|c| {
                keys::create_key(c, ring.active(), &settings.issuer, now, &req, &actor)
            })?;
            outln!("{}", key.expose());
            eprintln!(
                "created api key {:?} (id {}, role {}, {}); it is shown only once",
                record.name,
                record.id,
                record.role,
                match record.expires_at {
                    Some(exp) => format!("expires {}", rfc3339(exp)),
                    None => "never expires".into(),
                }
            );
        }
        ApiKeyCommand::List { json, config } => {
            let (_, store) = open_local(&config)?;
            let keys: Vec<KeyView> = store
                .with(|c| store::list_keys(c))?
                .into_iter()
                .map(KeyView::from)
                .collect();
            if json {
                outln!("{}", serde_json::to_string_pretty(&keys)?);
            } else {
                outln!(
                    "{:<6} {:<32} {:<9} {:<21} EXPIRES",
                    "ID",
                    "NAME",
                    "ROLE",
                    "CREATED"
                );
                for k in keys {
                    outln!(
                        "{:<6} {:<32} {:<9} {:<21} {}",
                        k.id,
                        k.name,
                        k.role,
                        k.created_at,
                        k.expires_at.as_deref().unwrap_or("never")
                    );
                }
            }
        }
        ApiKeyCommand::Delete { key, config } => {
            let (_, store) = open_local(&config)?;
            let actor = format!("cli:{}", whoami());
            let (record, version) = store.with(|c| {
                let id = match key.parse::<i64>() {
                    Ok(id) => id,
                    Err(_) => store::find_key_by_name(c, &key)?.id,
                };
                keys::delete_key(c, id, now, &actor)
            })?;
            eprintln!(
                "deleted api key {:?} (id {}); revocation list version {version}",
                record.name, record.id
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(feature = "authority")]
fn whoami() -> String {
    std::env::var("USER").unwrap_or_else(|_| "unknown".into())
}

#[cfg(feature = "authority")]
fn read_or_generate_password(from_stdin: bool) -> anyhow::Result<(String, bool)> {
    if from_stdin {
        let mut buf = String::new();
        std::io::stdin()
            .take(4096)
            .read_to_string(&mut buf)
            .context("reading the password from standard input")?;
        let password = buf.trim_end_matches(['\n', '\r']).to_owned();
        crate::passwords::validate(&password).map_err(|e| anyhow::anyhow!(e))?;
        Ok((password, false))
    } else {
        Ok((crate::passwords::generate(), true))
    }
}

#[cfg(feature = "authority")]
fn user_command(cmd: UserCommand, now: u64) -> anyhow::Result<ExitCode> {
    use crate::store;
    let actor = format!("cli:{}", whoami());
    match cmd {
        UserCommand::Create {
            name,
            role,
            email,
            password_stdin,
            config,
        } => {
            let (_, store) = open_local(&config)?;
            crate::authority::users::validate_user_name(&name).map_err(|e| anyhow::anyhow!(e))?;
            let (password, generated) = read_or_generate_password(password_stdin)?;
            let hash = crate::passwords::hash(&password)?;
            let user = store.with(|c| {
                let user = store::create_user(
                    c,
                    &store::NewUser {
                        name: &name,
                        email: email.as_deref(),
                        full_name: None,
                        password_hash: &hash,
                        role,
                    },
                    now,
                )?;
                store::audit(c, now, &actor, "user.create", Some(&name), None)?;
                Ok(user)
            })?;
            eprintln!(
                "created user {:?} (id {}, role {})",
                user.name, user.id, user.role
            );
            if generated {
                outln!("{password}");
                eprintln!("the password above is shown only once");
            }
        }
        UserCommand::ResetPassword {
            name,
            password_stdin,
            config,
        } => {
            let (_, store) = open_local(&config)?;
            let (password, generated) = read_or_generate_password(password_stdin)?;
            let hash = crate::passwords::hash(&password)?;
            store.with(|c| {
                let (user, _) = store::find_user_for_login(c, &name)?
                    .ok_or(store::StoreError::NotFound("user not found"))?;
                store::set_password(c, user.id, &hash, now, None)?;
                store::audit(
                    c,
                    now,
                    &actor,
                    "user.password.reset",
                    Some(&user.name),
                    None,
                )
            })?;
            eprintln!("password of {name:?} reset; their sessions have ended");
            if generated {
                outln!("{password}");
            }
        }
        UserCommand::List { config } => {
            let (_, store) = open_local(&config)?;
            outln!(
                "{:<6} {:<24} {:<9} {:<9} EMAIL",
                "ID",
                "NAME",
                "ROLE",
                "STATUS"
            );
            for u in store.with(|c| store::list_users(c))? {
                outln!(
                    "{:<6} {:<24} {:<9} {:<9} {}",
                    u.id,
                    u.name,
                    u.role,
                    if u.is_disabled { "disabled" } else { "enabled" },
                    u.email.unwrap_or_default()
                );
            }
        }
        UserCommand::Disable { name, config } => {
            set_user_disabled(&config, &name, true, now, &actor)?
        }
        UserCommand::Enable { name, config } => {
            set_user_disabled(&config, &name, false, now, &actor)?
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(feature = "authority")]
fn set_user_disabled(
    config: &ConfigFlags,
    name: &str,
    disabled: bool,
    now: u64,
    actor: &str,
) -> anyhow::Result<()> {
    use crate::store;
    let (_, store) = open_local(config)?;
    store.with(|c| {
        let (user, _) = store::find_user_for_login(c, name)?
            .ok_or(store::StoreError::NotFound("user not found"))?;
        if disabled && user.role == Role::Admin && store::other_enabled_admins(c, user.id)? == 0 {
            return Err(store::StoreError::Conflict(
                "this is the last enabled admin; make another user an admin first",
            ));
        }
        store::set_disabled(c, user.id, disabled, now)?;
        let action = if disabled {
            "user.disable"
        } else {
            "user.enable"
        };
        store::audit(c, now, actor, action, Some(&user.name), None)
    })?;
    eprintln!(
        "user {name:?} {}",
        if disabled {
            "disabled; their sessions have ended"
        } else {
            "enabled"
        }
    );
    Ok(())
}

fn ingest_node(flags: &ConfigFlags) -> anyhow::Result<ExitCode> {
    let layers = flags.load()?;
    let settings = Settings::from_layers(&layers)?;
    init_tracing(settings.log_level);
    for var in &layers.ignored_env {
        tracing::warn!("ignoring environment variable {var}: not a pyrogate setting");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        let node = crate::node::IngestNode::build(settings, Arc::new(SystemClock)).await?;
        tracing::info!(addr = %node.local_addr(), "pyrogate ingest node listening");
        node.run_until(shutdown_signal()).await?;
        Ok(ExitCode::SUCCESS)
    })
}
