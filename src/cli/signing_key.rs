//! `pyrogate signing-key generate|rotate|retire|list|jwks|export`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use pyrogate::authority::keyring::Keyring;
use pyrogate::authority::routes::distribution;
use pyrogate::config::{ConfigFlags, LocalFlags};
use pyrogate::core::clock::{Clock as _, SystemClock, rfc3339};

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

pub(crate) fn run(cmd: SigningKeyCommand) -> anyhow::Result<ExitCode> {
    let now = SystemClock.now();
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
        SigningKeyCommand::Export { out, config } => export(&out, &config, now)?,
    }
    Ok(ExitCode::SUCCESS)
}

fn export(out: &Path, config: &ConfigFlags, now: u64) -> anyhow::Result<()> {
    let (settings, store) = super::bootstrap::block_on(super::api_key::open_local(config))?;
    let ring = Keyring::open(&settings.authority.keys_dir)?;
    let signers = ring.published_signers();
    let kids = distribution::kid_list(&signers);
    let snapshot = super::bootstrap::block_on(async { Ok(store.snapshot(&kids).await?) })?;
    let (_, published) = distribution::sign_documents(
        snapshot,
        &signers,
        ring.active(),
        &settings.auth.issuer,
        now,
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
