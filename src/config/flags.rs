//! The command-line layer: `--config FILE` plus one `--<key>` flag per configuration key, only
//! the keys the command reads (`pyrogate ingest --help` shows no authority settings).

use std::path::PathBuf;

use clap::{Arg, ArgAction, ArgMatches, Args, FromArgMatches};

use super::keys::{KEYS, Key, Kind, Scope};
use super::layers::ConfigFlags;

/// The flags of the keys in scope `FOR` (a [`Scope`]'s bits); flatten into a subcommand.
#[derive(Debug, Clone, Default)]
pub struct FlagsFor<const FOR: u8>(pub ConfigFlags);

/// `pyrogate server`.
pub type ServerFlags = FlagsFor<{ Scope::SERVER.bits() }>;
/// `pyrogate ingest`.
pub type IngestFlags = FlagsFor<{ Scope::INGEST.bits() }>;
/// `pyrogate api-key …`, `pyrogate admin …`.
pub type LocalFlags = FlagsFor<{ Scope::LOCAL.bits() }>;
/// `pyrogate spool …`: `storage-path` (and `--config`, so the node's file works as it is).
pub type SpoolFlags = FlagsFor<{ Scope::SPOOL.bits() }>;
/// `pyrogate config check`: every key.
pub type AnyFlags = FlagsFor<{ Scope::ALL.bits() }>;

impl<const FOR: u8> FlagsFor<FOR> {
    fn keys() -> impl Iterator<Item = &'static Key> {
        KEYS.iter()
            .filter(|k| k.scope.overlaps(Scope::from_bits(FOR)))
    }
}

impl<const FOR: u8> std::ops::Deref for FlagsFor<FOR> {
    type Target = ConfigFlags;
    fn deref(&self) -> &ConfigFlags {
        &self.0
    }
}

impl<const FOR: u8> FromArgMatches for FlagsFor<FOR> {
    fn from_arg_matches(m: &ArgMatches) -> Result<Self, clap::Error> {
        let mut flags = ConfigFlags {
            config: m.get_one::<PathBuf>("config").cloned(),
            values: Vec::new(),
        };
        for key in Self::keys() {
            if m.value_source(key.name) == Some(clap::parser::ValueSource::CommandLine)
                && let Some(v) = m.get_one::<String>(key.name)
            {
                flags.values.push((key.name.to_owned(), v.clone()));
            }
        }
        Ok(FlagsFor(flags))
    }

    fn update_from_arg_matches(&mut self, m: &ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(m)?;
        Ok(())
    }
}

impl<const FOR: u8> Args for FlagsFor<FOR> {
    fn augment_args(mut cmd: clap::Command) -> clap::Command {
        cmd = cmd.arg(
            Arg::new("config")
                .long("config")
                .value_name("FILE")
                .value_parser(clap::value_parser!(PathBuf))
                .help("YAML configuration file")
                .help_heading("Configuration"),
        );
        for key in Self::keys() {
            let mut arg = Arg::new(key.name)
                .long(key.name)
                .help(key.help)
                .help_heading("Configuration")
                .action(ArgAction::Set);
            if let Some(alias) = key.alias {
                arg = arg.alias(alias);
            }
            arg = match key.kind {
                Kind::Bool => arg
                    .value_name("BOOL")
                    .num_args(0..=1)
                    .default_missing_value("true"),
                Kind::Secret => arg.value_name("SECRET"),
                // A signing key's kid is base64url and may begin with `-`
                // (`--authority.trusted-keys -9Kx…`): free-text values may look like a flag.
                Kind::String => arg.value_name("VALUE").allow_hyphen_values(true),
                _ => arg.value_name("VALUE"),
            };
            cmd = cmd.arg(arg);
        }
        cmd
    }

    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        Self::augment_args(cmd)
    }
}
