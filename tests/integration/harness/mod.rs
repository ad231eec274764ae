//! The one harness every integration suite stands on. Everything runs on 127.0.0.1:0 in a temp
//! dir of its own, and every wait is a polling loop with a [`Deadline`], never a fixed sleep.
//!
//! | module | what it holds |
//! |---|---|
//! | [`wait`] | [`Deadline`]: the bound on every polling loop |
//! | [`http`] | [`Http`], the one client (bound to one server, cookie jar optional, a local address to connect from), its request builder [`Req`] and the fully read response [`Resp`] |
//! | [`settings`] | test settings: YAML layers over the built-in defaults ([`settings::layered`]; each role adds its base: [`authority_settings`], [`node_settings`]) |
//! | [`authority`] | [`Authority`], the real authority in-process (manual clock or system clock); the admin's REST helpers (login, keys, users); token helpers |
//! | [`node`] | [`Node`], the real ingest node in-process; metrics and decisions |
//! | [`oidc`] | single sign-on: the real OpenID Provider ([`RealProvider`], npm oidc-provider), a crafted one for forged tokens ([`Crafted`]), and a [`Browser`] with a cookie jar per origin |
//! | [`upstream`] | [`Upstream`], a recording stand-in for Grafana Pyroscope |
//! | [`postgres`] | a fresh database per test on the run's PostgreSQL ([`postgres_database`]) and the config layer that uses it |
//! | [`pki`] | [`Pki`]: a throwaway CA per test, server and client certificates as PEM files |
//! | [`cli`] | the real `pyrogate` binary: one-shot runs ([`pyrogate`]) and long-running servers ([`Server`]) |
//!
//! Suites take what they need with `use crate::harness::*;` or by name.

pub mod authority;
pub mod cli;
pub mod http;
pub mod node;
pub mod oidc;
pub mod pki;
pub mod postgres;
pub mod settings;
pub mod upstream;
pub mod wait;

pub use authority::*;
pub use cli::*;
pub use http::*;
pub use node::*;
pub use oidc::*;
pub use pki::*;
pub use postgres::*;
pub use upstream::*;
pub use wait::*;
