//! `pyrogate token issue|verify|inspect`: API keys offline.

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context as _, bail};
use clap::{Args, Subcommand};
#[cfg(feature = "authority")]
use pyrogate::authority::keyring::Keyring;
use pyrogate::core::clock::{Clock, SystemClock};
use pyrogate::core::jwk::{JwkSet, KeySet};
use pyrogate::core::jws;
use pyrogate::core::revocation::RevocationList;
use pyrogate::core::token::Role;
#[cfg(feature = "authority")]
use pyrogate::core::token::{self, KeyRequest};
use pyrogate::core::verifier::{MAX_TOKEN_BYTES, Verifier, VerifierConfig};
use pyrogate::edge::auth::Access;

use super::parse_role;
#[cfg(feature = "authority")]
use super::signing_key::KeysDir;

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
    #[cfg(feature = "authority")]
    Issue {
        /// The key's unique, descriptive name (`sub`).
        #[arg(long)]
        name: String,
        /// Admin, ReadOnly, Agent or Node.
        #[arg(long, value_parser = parse_role)]
        role: Role,
        /// Seconds of validity; 0 means never expires.
        #[arg(long)]
        ttl: u64,
        /// Tenant for X-Scope-OrgID.
        #[arg(long)]
        tenant: Option<String>,
        /// Limit the key to this application (a name, or a prefix ending in `*`); repeat for
        /// more. Not for Admin keys.
        #[arg(long = "app", value_name = "APP")]
        app: Vec<String>,
        /// Limit the key to requests from this network (`10.0.0.0/8`, `2001:db8::/32`);
        /// repeat for more.
        #[arg(long = "cidr", value_name = "CIDR")]
        cidr: Vec<String>,
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
        #[cfg(feature = "authority")]
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

pub(crate) fn run(cmd: TokenCommand) -> anyhow::Result<ExitCode> {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    match cmd {
        #[cfg(feature = "authority")]
        TokenCommand::Issue {
            name,
            role,
            ttl,
            tenant,
            app,
            cidr,
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
                    apps: (!app.is_empty()).then_some(app.as_slice()),
                    cidrs: (!cidr.is_empty()).then_some(cidr.as_slice()),
                },
            )?;
            outln!("{}", issued.token.expose());
            eprintln!(
                "issued unregistered key {:?} (jti {}); it is in no store: revoke it with `pyrogate api-key revoke --jti {}` (or by retiring signing key {})",
                issued.claims.sub, issued.claims.jti, issued.claims.jti, issued.kid
            );
            Ok(ExitCode::SUCCESS)
        }
        TokenCommand::Verify {
            token,
            #[cfg(feature = "authority")]
            keys_dir,
            jwks,
            revocations,
            role,
            clock_skew,
            issuer,
        } => {
            let keys = match jwks {
                Some(path) => load_jwks(&path)?,
                #[cfg(feature = "authority")]
                None => Keyring::open(keys_dir.as_deref().unwrap_or(Path::new("keys")))?.key_set(),
                #[cfg(not(feature = "authority"))]
                None => bail!("give the JWK Set to trust with --jwks FILE"),
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
                    Role::Node => Access::Report,
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
