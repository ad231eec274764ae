//! `pyrogate admin user create|reset-password|list|disable|enable`.

use std::io::Read as _;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Subcommand;
use pyrogate::authority::store;
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
            let (_, store) = open_local(&config)?;
            let name = pyrogate::core::names::normalize(&name);
            pyrogate::authority::routes::users::validate_user_name(&name)
                .map_err(|e| anyhow::anyhow!(e))?;
            let (password, generated) = read_or_generate_password(password_stdin)?;
            let hash = pyrogate::authority::passwords::hash(&password)?;
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
            let hash = pyrogate::authority::passwords::hash(&password)?;
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
        UserCommand::Disable {
            name,
            keep_keys,
            config,
        } => set_user_disabled(&config, &name, true, keep_keys, now, &actor)?,
        UserCommand::Enable { name, config } => {
            set_user_disabled(&config, &name, false, true, now, &actor)?
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

fn set_user_disabled(
    config: &ConfigFlags,
    name: &str,
    disabled: bool,
    keep_keys: bool,
    now: u64,
    actor: &str,
) -> anyhow::Result<()> {
    let (_, store) = open_local(config)?;
    let revoked = store.with(|c| {
        let (user, _) = store::find_user_for_login(c, name)?
            .ok_or(store::StoreError::NotFound("user not found"))?;
        let revoked = store::keeping_an_admin(c, user.id, disabled, |tx| {
            store::set_disabled_in(tx, user.id, disabled, now)?;
            if disabled && !keep_keys {
                store::delete_keys_created_by(tx, &format!("user:{}", user.name), now)
            } else {
                Ok(Vec::new())
            }
        })?;
        let action = if disabled {
            "user.disable"
        } else {
            "user.enable"
        };
        store::audit(c, now, actor, action, Some(&user.name), None)?;
        Ok(revoked)
    })?;
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
