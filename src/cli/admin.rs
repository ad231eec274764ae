//! `pyrogate admin user create|reset-password|list|disable|enable`.

use std::io::Read as _;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Subcommand;
use pyrogate::authority::store::{self, AuditEntry, Store};
use pyrogate::config::{ConfigFlags, LocalFlags};
use pyrogate::core::clock::{Clock as _, SystemClock};
use pyrogate::core::token::Role;

use super::api_key::{open_local, whoami};
use super::parse_role;

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Manage users.
    #[command(subcommand)]
    User(UserCommand),
}

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
        config: LocalFlags,
    },
    /// Set a new password (from standard input with --password-stdin, or generated) and end
    /// the user's sessions.
    ResetPassword {
        name: String,
        #[arg(long)]
        password_stdin: bool,
        #[command(flatten)]
        config: LocalFlags,
    },
    /// List users.
    List {
        #[command(flatten)]
        config: LocalFlags,
    },
    /// Disable a user and end their sessions.
    Disable {
        name: String,
        /// Keep the API keys this user created working (by default they are revoked).
        #[arg(long)]
        keep_keys: bool,
        #[command(flatten)]
        config: LocalFlags,
    },
    /// Enable a disabled user.
    Enable {
        name: String,
        #[command(flatten)]
        config: LocalFlags,
    },
}

pub(crate) fn run(cmd: UserCommand) -> anyhow::Result<ExitCode> {
    super::bootstrap::block_on(run_async(cmd))
}

async fn run_async(cmd: UserCommand) -> anyhow::Result<ExitCode> {
    let now = SystemClock.now();
    let actor = format!("cli:{}", whoami());
    match cmd {
        UserCommand::Create {
            name,
            role,
            email,
            password_stdin,
            config,
        } => {
            let (_, store) = open_local(&config).await?;
            let name = pyrogate::core::names::normalize(&name);
            pyrogate::authority::routes::users::validate_user_name(&name)
                .map_err(|e| anyhow::anyhow!(e))?;
            let (password, generated) = read_or_generate_password(password_stdin)?;
            let hash = pyrogate::authority::passwords::hash(&password)?;
            let new = store::NewUser {
                name: name.clone(),
                email,
                full_name: None,
                password_hash: hash,
                role,
                sso: None,
            };
            let user = store.create_user(new, now).await?;
            store
                .audit(AuditEntry::new(now, &actor, "user.create", Some(&name)))
                .await?;
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
            let (_, store) = open_local(&config).await?;
            let (password, generated) = read_or_generate_password(password_stdin)?;
            let hash = pyrogate::authority::passwords::hash(&password)?;
            let user = find_user(&store, &name).await?;
            store.set_password(user.id, &hash, now, None).await?;
            let entry = AuditEntry::new(now, &actor, "user.password.reset", Some(&user.name));
            store.audit(entry).await?;
            eprintln!("password of {name:?} reset; their sessions have ended");
            if generated {
                outln!("{password}");
            }
        }
        UserCommand::List { config } => {
            let (_, store) = open_local(&config).await?;
            outln!(
                "{:<6} {:<24} {:<9} {:<9} EMAIL",
                "ID",
                "NAME",
                "ROLE",
                "STATUS"
            );
            for u in store.list_users().await? {
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
        UserCommand::Disable {
            name,
            keep_keys,
            config,
        } => set_user_disabled(&config, &name, true, keep_keys, now, &actor).await?,
        UserCommand::Enable { name, config } => {
            set_user_disabled(&config, &name, false, true, now, &actor).await?
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn read_or_generate_password(from_stdin: bool) -> anyhow::Result<(String, bool)> {
    if from_stdin {
        let mut buf = String::new();
        std::io::stdin()
            .take(4096)
            .read_to_string(&mut buf)
            .context("reading the password from standard input")?;
        let password = buf.trim_end_matches(['\n', '\r']).to_owned();
        pyrogate::authority::passwords::validate(&password).map_err(|e| anyhow::anyhow!(e))?;
        Ok((password, false))
    } else {
        Ok((pyrogate::authority::passwords::generate(), true))
    }
}

async fn find_user(store: &Store, name: &str) -> anyhow::Result<store::User> {
    let (user, _) = store
        .find_user_for_login(name)
        .await?
        .ok_or(store::StoreError::NotFound("user not found"))?;
    Ok(user)
}

async fn set_user_disabled(
    config: &ConfigFlags,
    name: &str,
    disabled: bool,
    keep_keys: bool,
    now: u64,
    actor: &str,
) -> anyhow::Result<()> {
    let (_, store) = open_local(config).await?;
    let user = find_user(&store, name).await?;
    let (_, revoked) = store
        .set_disabled(user.id, disabled, !keep_keys, now)
        .await?;
    let action = if disabled {
        "user.disable"
    } else {
        "user.enable"
    };
    store
        .audit(AuditEntry::new(now, actor, action, Some(&user.name)))
        .await?;
    if disabled {
        eprintln!("user {name:?} disabled; their sessions have ended");
        if !revoked.is_empty() {
            let names: Vec<&str> = revoked.iter().map(|k| k.name.as_str()).collect();
            eprintln!(
                "revoked the {} api key(s) they created: {} (--keep-keys keeps them)",
                names.len(),
                names.join(", ")
            );
        }
    } else {
        eprintln!("user {name:?} enabled");
    }
    Ok(())
}
