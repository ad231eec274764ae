//! `pyrogate database copy`: move an embedded SQLite install (its database and its keys dir)
//! into PostgreSQL, where replicas share it. See `authority::store::postgres::copy`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use pyrogate::authority::kek::Kek;
use pyrogate::authority::keyring::{KEK_SETTING, Keyring, seal_all};
use pyrogate::authority::store::{PgStore, SqliteStore};
use pyrogate::config::{ClientTls, PostgresSettings};
use pyrogate::core::token::Secret;

#[derive(Debug, Subcommand)]
pub enum DatabaseCommand {
    /// Copy an SQLite install — users, API keys, revocations with their versions, audit log,
    /// settings and the signing keys of its keys dir — into an empty PostgreSQL database, in
    /// one transaction. Nodes keep accepting every existing key: same kids, same key-set chain,
    /// same list version. Sessions are not copied (users log in again).
    Copy(CopyArgs),
}

#[derive(Debug, Args)]
pub struct CopyArgs {
    /// The SQLite install: `sqlite://DIR` or DIR, its storage path (holding pyrogate.db).
    #[arg(long)]
    from: String,
    /// The PostgreSQL database: `postgres://USER@HOST:PORT/DB` (TLS by `sslmode` as for
    /// database.url). From the environment, the password stays off the command line.
    #[arg(long, env = "PYROSCOPE_DATABASE_URL", hide_env_values = true)]
    to: String,
    /// The install's keys dir, whose signing keys move into the database.
    #[arg(long, default_value = "keys", env = "PYROSCOPE_KEYS_DIR")]
    keys_dir: PathBuf,
    /// The key-encryption key the replicas will be given (32 random bytes in base64,
    /// `openssl rand -base64 32`): the signing keys are sealed with it.
    #[arg(long, env = "PYROSCOPE_AUTHORITY_KEY_ENCRYPTION_KEY_FILE")]
    key_encryption_key_file: PathBuf,
    /// A file holding the database password, instead of one in the URL.
    #[arg(
        long = "database.password-file",
        env = "PYROSCOPE_DATABASE_PASSWORD_FILE"
    )]
    password_file: Option<PathBuf>,
    /// CA certificate(s) (PEM) the database's certificate must chain to.
    #[arg(long = "database.tls-ca-path", env = "PYROSCOPE_DATABASE_TLS_CA_PATH")]
    tls_ca_path: Option<PathBuf>,
    /// Empty the target database first (everything in it is lost) instead of refusing one
    /// that holds data.
    #[arg(long)]
    replace: bool,
}

pub(crate) fn run(cmd: DatabaseCommand) -> anyhow::Result<ExitCode> {
    let DatabaseCommand::Copy(args) = cmd;
    super::bootstrap::block_on(copy(args))?;
    Ok(ExitCode::SUCCESS)
}

async fn copy(args: CopyArgs) -> anyhow::Result<()> {
    let from = args.from.strip_prefix("sqlite://").unwrap_or(&args.from);
    let from = PathBuf::from(if from.is_empty() { "." } else { from });
    let db = from.join("pyrogate.db");
    if !db.is_file() {
        anyhow::bail!(
            "--from: {} is not an SQLite install (no pyrogate.db in it)",
            from.display()
        );
    }
    let to = args.to.trim();
    if !(to.starts_with("postgres://") || to.starts_with("postgresql://")) {
        // Never quoted: it may hold a password.
        anyhow::bail!("--to: expected a postgres:// or postgresql:// URL");
    }
    let kek = Kek::from_file(&args.key_encryption_key_file, KEK_SETTING)?;
    let ring = Keyring::open(&args.keys_dir)
        .with_context(|| format!("--keys-dir {}", args.keys_dir.display()))?;
    let sealed = seal_all(&ring, &kek)?;
    let source = SqliteStore::open(&from)?;
    let dump = source.dump().await?;
    let target = PgStore::connect(&PostgresSettings {
        url: Secret::new(to.to_owned()),
        password_file: args.password_file,
        tls: ClientTls {
            peer: "database",
            ca_path: args.tls_ca_path,
            client_cert: None,
            insecure_skip_verify: false,
        },
    })
    .await?;
    let counts = target
        .copy_in(&dump, &sealed, args.replace)
        .await
        .with_context(|| format!("copying into {}", target.describe()))?;
    outln!("users: {}", counts.users);
    outln!("api keys: {}", counts.api_keys);
    outln!("revocations: {}", counts.revocations);
    outln!("audit entries: {}", counts.audit);
    outln!("settings: {}", counts.meta);
    outln!("signing keys: {}", counts.signing_keys);
    outln!("revocation list version: {}", counts.revocations_version);
    outln!("key set version: {}", counts.keyset_version);
    eprintln!(
        "copied {} into {}; start the servers with database.url set to it and {KEK_SETTING} {}",
        from.display(),
        target.describe(),
        args.key_encryption_key_file.display()
    );
    Ok(())
}
