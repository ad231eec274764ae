//! `pyrogate api-key create|list|delete|limit|revoke`: the same rules as the UI, against the
//! local store. A running authority publishes what they change within a second.

use std::process::ExitCode;

use clap::Subcommand;
use pyrogate::authority::keyring::KeyringHome;
use pyrogate::authority::routes::keys::{self, CreateKeyRequest, KeyView};
use pyrogate::authority::store::Store;
use pyrogate::config::{ConfigFlags, LocalFlags, Settings};
use pyrogate::core::clock::{Clock as _, SystemClock, rfc3339};
use pyrogate::core::limits::KeyLimits;
use pyrogate::core::token::Role;

use super::{bootstrap, parse_role};

#[derive(Debug, Subcommand)]
pub enum ApiKeyCommand {
    /// Sign a new key, record it, and print it (shown once).
    Create {
        /// Unique, descriptive name.
        #[arg(long)]
        name: String,
        /// Admin, ReadOnly, Agent or Node (an ingest node's own key, for its reports).
        #[arg(long, value_parser = parse_role)]
        role: Role,
        /// Seconds of validity; 0 means never expires.
        #[arg(long, default_value_t = 0)]
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
        limits: LimitFlags,
        #[command(flatten)]
        config: LocalFlags,
    },
    /// Set or remove a key's fleet-wide limits, without reissuing it: `pyrogate api-key limit
    /// NAME --pushes-per-second 10 --burst-pushes 20`, or `--none` for no limit.
    Limit {
        /// The key's id or name.
        #[arg(allow_hyphen_values = true)]
        key: String,
        #[command(flatten)]
        limits: LimitFlags,
        #[command(flatten)]
        config: LocalFlags,
    },
    /// List keys (never the keys themselves).
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        config: LocalFlags,
    },
    /// Delete a key by id or name; it is revoked everywhere within seconds.
    Delete {
        /// The key's id or name.
        #[arg(allow_hyphen_values = true)]
        key: String,
        #[command(flatten)]
        config: LocalFlags,
    },
    /// Revoke a key by its jti — for keys issued offline (`pyrogate token issue`), which no
    /// store knows; a registered key's jti deletes that key.
    Revoke {
        /// The key's `jti` claim (`pyrogate token inspect` shows it).
        #[arg(long, allow_hyphen_values = true)]
        jti: String,
        /// The key's `exp` (Unix seconds), so the entry is pruned once the key would have
        /// expired anyway; without it the entry stays until its signing key is retired.
        #[arg(long)]
        exp: Option<u64>,
        #[command(flatten)]
        config: LocalFlags,
    },
}

/// A key's limits on the command line (`"limits"` in the API).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct LimitFlags {
    /// Pushes per second for the whole fleet (a decimal such as 0.5).
    #[arg(long, value_name = "N")]
    pushes_per_second: Option<f64>,
    /// Pushes allowed at once above the rate (default: one second's worth).
    #[arg(long, value_name = "N")]
    burst_pushes: Option<u64>,
    /// Request-body bytes per second for the whole fleet.
    #[arg(long, value_name = "N")]
    bytes_per_second: Option<u64>,
    /// Bytes allowed at once above the rate (default: one second's worth).
    #[arg(long, value_name = "N")]
    burst_bytes: Option<u64>,
    /// No limit (with `create`: not even the role's default).
    #[arg(long, conflicts_with_all = ["pushes_per_second", "burst_pushes", "bytes_per_second", "burst_bytes"])]
    none: bool,
}

impl LimitFlags {
    /// `None`: nothing said (a new key gets its role's default); `Some(None)`: no limit.
    fn requested(&self) -> Option<Option<KeyLimits>> {
        if self.none {
            return Some(None);
        }
        let limits = KeyLimits {
            pushes_per_second: self.pushes_per_second,
            burst_pushes: self.burst_pushes,
            bytes_per_second: self.bytes_per_second,
            burst_bytes: self.burst_bytes,
        };
        (limits != KeyLimits::default()).then_some(Some(limits))
    }
}

pub(crate) fn run(cmd: ApiKeyCommand) -> anyhow::Result<ExitCode> {
    bootstrap::block_on(run_async(cmd))
}

async fn run_async(cmd: ApiKeyCommand) -> anyhow::Result<ExitCode> {
    let now = SystemClock.now();
    match cmd {
        ApiKeyCommand::Create {
            name,
            role,
            ttl,
            tenant,
            app,
            cidr,
            limits,
            config,
        } => {
            let (settings, store) = open_local(&config).await?;
            let ring = KeyringHome::for_store(
                &store,
                &settings.authority.keys_dir,
                settings.authority.key_encryption_key_file.as_deref(),
            )?
            .open()
            .await?;
            let req = CreateKeyRequest {
                name: Some(name),
                role: Some(role.to_string()),
                ttl_seconds: Some(i64::try_from(ttl).unwrap_or(i64::MAX)),
                tenant,
                apps: (!app.is_empty()).then_some(app),
                cidrs: (!cidr.is_empty()).then_some(cidr),
                limits: limits.requested(),
            }
            .validate(&settings.authority.default_key_limits)
            .map_err(|errors| anyhow::anyhow!(errors.join("; ")))?;
            let actor = format!("cli:{}", whoami());
            let (record, key) = keys::create_key(
                &store,
                ring.active(),
                &settings.auth.issuer,
                now,
                &req,
                &actor,
            )
            .await?;
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
            if let Some(limits) = &record.limits {
                eprintln!("limits: {}", limits.describe());
            }
        }
        ApiKeyCommand::Limit {
            key,
            limits,
            config,
        } => {
            let (_, store) = open_local(&config).await?;
            let Some(requested) = limits.requested() else {
                anyhow::bail!(
                    "say what limit to set (--pushes-per-second, --bytes-per-second, …) or --none"
                );
            };
            let limits = keys::validate_limits(requested)
                .map_err(|errors| anyhow::anyhow!(errors.join("; ")))?;
            let actor = format!("cli:{}", whoami());
            let id = match key.parse::<i64>() {
                Ok(id) => id,
                Err(_) => store.find_key_by_name(&key).await?.id,
            };
            let (record, version) = store.set_key_limits(id, limits, now, &actor).await?;
            eprintln!(
                "api key {:?} (id {}): {}; revocation list version {version} (a running authority publishes it within a second)",
                record.name,
                record.id,
                limits
                    .as_ref()
                    .map_or("no limit".into(), KeyLimits::describe)
            );
        }
        ApiKeyCommand::List { json, config } => {
            let (_, store) = open_local(&config).await?;
            let keys: Vec<KeyView> = store
                .list_keys()
                .await?
                .into_iter()
                .map(KeyView::from)
                .collect();
            if json {
                outln!("{}", serde_json::to_string_pretty(&keys)?);
            } else {
                outln!(
                    "{:<6} {:<32} {:<9} {:<21} {:<21} LIMITS",
                    "ID",
                    "NAME",
                    "ROLE",
                    "CREATED",
                    "EXPIRES"
                );
                for k in keys {
                    outln!(
                        "{:<6} {:<32} {:<9} {:<21} {:<21} {}",
                        k.id,
                        k.name,
                        k.role,
                        k.created_at,
                        k.expires_at.as_deref().unwrap_or("never"),
                        k.limits.as_ref().map_or("-".into(), KeyLimits::describe)
                    );
                }
            }
        }
        ApiKeyCommand::Delete { key, config } => {
            let (_, store) = open_local(&config).await?;
            let actor = format!("cli:{}", whoami());
            let id = match key.parse::<i64>() {
                Ok(id) => id,
                Err(_) => store.find_key_by_name(&key).await?.id,
            };
            let (record, version) = store.delete_key(id, now, &actor).await?;
            eprintln!(
                "deleted api key {:?} (id {}); revocation list version {version}",
                record.name, record.id
            );
        }
        ApiKeyCommand::Revoke { jti, exp, config } => {
            let (_, store) = open_local(&config).await?;
            let actor = format!("cli:{}", whoami());
            let req = keys::RevokeJti { jti, exp };
            let (name, version) = keys::revoke_jti(&store, &req, now, &actor).await?;
            match name {
                Some(name) => eprintln!(
                    "jti {} belonged to api key {name:?}: deleted it; revocation list version {version}",
                    req.jti
                ),
                None => eprintln!(
                    "revoked jti {}; revocation list version {version} (a running authority publishes it within a second)",
                    req.jti
                ),
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) async fn open_local(flags: &ConfigFlags) -> anyhow::Result<(Settings, Store)> {
    let settings = bootstrap::load_settings(flags, false)?;
    let store = Store::connect(&settings.authority.database).await?;
    Ok((settings, store))
}

pub(crate) fn whoami() -> String {
    std::env::var("USER").unwrap_or_else(|_| "unknown".into())
}
