//! The `pyrogate` command line (DESIGN.md §7). Each subcommand is a thin shell over the library;
//! exit codes: 0 success, 1 failure (e.g. a token that does not verify), 2 usage error.

use std::io::{IsTerminal as _, Read as _};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context as _, bail};
use clap::{Args, Parser, Subcommand};

use crate::auth::Access;
use crate::clock::{Clock, SystemClock};
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
}

fn parse_role(s: &str) -> Result<Role, String> {
    s.parse()
        .map_err(|_| format!("unknown role {s:?}; expected Admin, ReadOnly or Agent"))
}

/// Entry point used by `main`: parses arguments, runs, prints errors with their causes.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    match run(cli) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}

pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let clock = SystemClock;
    match cli.command {
        Command::SigningKey(cmd) => signing_key(cmd, clock.now()),
        Command::Token(cmd) => token_command(cmd, Arc::new(clock)),
        Command::Bench(BenchCommand::Verify { json, iterations }) => {
            let report = crate::bench::verify(iterations.max(10));
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{report}");
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn signing_key(cmd: SigningKeyCommand, now: u64) -> anyhow::Result<ExitCode> {
    match cmd {
        SigningKeyCommand::Generate(k) => {
            let ring = Keyring::generate(&k.keys_dir, now)?;
            println!("{}", ring.active().kid());
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
            println!("{new}");
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
                println!("{}", serde_json::to_string_pretty(ring.keys())?);
            } else {
                println!("{:<44}  {:<9}  CREATED", "KID", "STATUS");
                for k in ring.keys() {
                    println!("{:<44}  {:<9}  {}", k.kid, k.status, rfc3339(k.created_at));
                }
            }
        }
        SigningKeyCommand::Jwks(k) => {
            let ring = Keyring::open(&k.keys_dir)?;
            println!("{}", serde_json::to_string_pretty(&ring.jwks())?);
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
            println!("{}", issued.token.expose());
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
            println!("{}", serde_json::to_string_pretty(&claims)?);
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
            println!("{}", serde_json::to_string_pretty(&out)?);
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
