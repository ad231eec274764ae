//! The authority end to end: a real `pyrogate::authority::Application` on 127.0.0.1:0 per test,
//! a fresh temp dir per test, a manual clock for expiry, and the real `pyrogate` binary for the
//! CLI. Helpers live in [`spawn`].

mod api_keys;
mod cli;
mod config_layers;
mod crash;
mod distribution;
mod login;
mod restart;
mod secrets;
mod signing_keys;
mod spawn;
mod users;
