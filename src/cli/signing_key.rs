//! `pyrogate signing-key generate|rotate|retire|list|jwks|export`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use pyrogate::authority::keyring::KeyringHome;
use pyrogate::authority::routes::distribution;
use pyrogate::authority::store::Store;
use pyrogate::config::{ConfigFlags, Database, LocalFlags, Settings};
use pyrogate::core::clock::{Clock as _, SystemClock, rfc3339};

#[derive(Debug, Args)]
pub struct KeysDir {
    /// Directory holding the signing keys.
    #[arg(long, default_value = "keys", env = "PYROSCOPE_KEYS_DIR")]
    pub keys_dir: PathBuf,
}

/// Where the keyring is: `keys-dir`, or with a `postgres://` `database.url` the database
/// (sealed with `authority.key-encryption-key-file`). `--config` works as for the server.
#[derive(Debug, Args)]
pub struct KeyringFlags {
    #[command(flatten)]
    pub config: LocalFlags,
}

#[derive(Debug, Subcommand)]
pub enum SigningKeyCommand {
    /// Create the first signing key in an empty keyring.
    Generate(KeyringFlags),
    /// Make a new active key; the old one stays published until retired.
    Rotate(KeyringFlags),
    /// Unpublish a non-active key and delete it: every token it signed stops verifying.
    Retire {
        /// A kid may begin with `-` (it is base64url), so it is never taken for a flag.
        #[arg(allow_hyphen_values = true)]
        kid: String,
        #[command(flatten)]
        keys: KeyringFlags,
    },
    /// List every key with its status.
    List {
        #[command(flatten)]
        keys: KeyringFlags,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Print the published keys as an RFC 8037 JWK Set.
    Jwks(KeyringFlags),
    /// Write the signed distribution documents — key set, JWK Set, revocation list — under
    /// DIR in the authority's URL layout, for a static mirror or CDN (point nodes'
    /// authority.url at it) or an air-gapped node (--jwks-file, --revocations-file). Re-run it
    /// to refresh the signed iat.
    Export {
        /// Where to write `.well-known/pyrogate-keyset`, `.well-known/jwks.json` and
        /// `api/revocations`.
        #[arg(long)]
        out: PathBuf,
        #[command(flatten)]
        config: LocalFlags,
    },
}

/// The keyring the settings name. The SQLite database is not opened: the keys dir is all a
/// keyring command needs there.
async fn home(flags: &ConfigFlags) -> anyhow::Result<(Settings, KeyringHome, Option<Store>)> {
    let settings = super::bootstrap::load_settings(flags, false)?;
    let keys_dir = settings.authority.keys_dir.clone();
    match &settings.authority.database {
        Database::Sqlite(_) => Ok((settings, KeyringHome::Dir(keys_dir), None)),
        Database::Postgres(_) => {
            let store = Store::connect(&settings.authority.database).await?;
            let home = KeyringHome::for_store(
                &store,
                &keys_dir,
                settings.authority.key_encryption_key_file.as_deref(),
            )?;
            Ok((settings, home, Some(store)))
        }
    }
}

/// Where `home` is, for messages.
fn describe(home: &KeyringHome) -> String {
    match home {
        KeyringHome::Dir(dir) => dir.display().to_string(),
        KeyringHome::Database { store, .. } => store.describe(),
    }
}

pub(crate) fn run(cmd: SigningKeyCommand) -> anyhow::Result<ExitCode> {
    let now = SystemClock.now();
    super::bootstrap::block_on(async move {
        match cmd {
            SigningKeyCommand::Generate(k) => {
                let (_, home, _) = home(&k.config).await?;
                let ring = home.generate(now).await?;
                outln!("{}", ring.active().kid());
                eprintln!(
                    "created signing key {} in {}",
                    ring.active().kid(),
                    describe(&home)
                );
            }
            SigningKeyCommand::Rotate(k) => {
                let (_, home, _) = home(&k.config).await?;
                let old = home.open().await?.active().kid().to_owned();
                let (_, new) = home.rotate(now).await?;
                outln!("{new}");
                eprintln!(
                    "{new} now signs new keys; {old} stays published until `pyrogate signing-key retire {old}`"
                );
            }
            SigningKeyCommand::Retire { kid, keys } => {
                let (_, home, _) = home(&keys.config).await?;
                home.retire(&kid, now).await?;
                eprintln!("retired {kid}: every token it signed is now invalid");
            }
            SigningKeyCommand::List { keys, json } => {
                let (_, home, _) = home(&keys.config).await?;
                let ring = home.open().await?;
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
                let (_, home, _) = home(&k.config).await?;
                let ring = home.open().await?;
                outln!("{}", serde_json::to_string_pretty(&ring.jwks())?);
            }
            SigningKeyCommand::Export { out, config } => export(&out, &config, now).await?,
        }
        Ok(ExitCode::SUCCESS)
    })
}

async fn export(out: &Path, config: &ConfigFlags, now: u64) -> anyhow::Result<()> {
    let (settings, store) = super::api_key::open_local(config).await?;
    let home = KeyringHome::for_store(
        &store,
        &settings.authority.keys_dir,
        settings.authority.key_encryption_key_file.as_deref(),
    )?;
    let ring = home.open().await?;
    let signers = ring.published_signers();
    let kids = distribution::kid_list(&signers);
    let snapshot = store.snapshot(&kids, ring.version()).await?;
    let nodes = distribution::live_nodes(&store, now).await?;
    let (_, published) = distribution::sign_documents(
        snapshot,
        &signers,
        ring.active(),
        &settings.auth.issuer,
        now,
        nodes,
    )?;
    let files = [
        (".well-known/pyrogate-keyset", published.keyset.clone()),
        (
            ".well-known/jwks.json",
            serde_json::to_string_pretty(&ring.jwks())?,
        ),
        ("api/revocations", published.jws.clone()),
    ];
    for (name, body) in files {
        let path = out.join(name);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        pyrogate::edge::files::write_atomic(&path, body.as_bytes(), 0o644)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    eprintln!(
        "wrote key set version {} and revocation list version {} under {}",
        published.keyset_version,
        published.version,
        out.display()
    );
    Ok(())
}
