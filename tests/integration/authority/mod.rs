//! The authority end to end: a real `pyrogate::authority::Application` on 127.0.0.1:0 per test
//! ([`crate::harness::Authority`]: a fresh temp dir, a manual clock for expiry), and the real
//! `pyrogate` binary for the CLI ([`crate::harness::cli`]). The helpers are the shared
//! [`crate::harness`]; these modules hold only tests.

mod api_keys;
mod cli;
mod config_layers;
mod copy;
mod crash;
mod distribution;
mod held_polls;
mod hosts;
mod login;
mod postgres;
mod replicas;
mod replicas_keyring;
mod restart;
mod secrets;
mod signing_keys;
mod sso;
mod users;
