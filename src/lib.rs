//! pyrogate: API keys for continuous profiling.
//!
//! An *authority* signs API keys as self-contained EdDSA JWTs; any number of stateless *ingest
//! nodes* verify them locally against a published key set and a small signed revocation list.
//! Nothing on the request path touches a database or the network.
//!
//! # Layout
//!
//! The folders are the layers; imports point one way:
//! `core` ← `config` ← `edge` ← `node` ← `authority` (← the binary's `cli`). The all-in-one
//! server mounts the node's ingest plane, hence `node` ← `authority`. A test
//! (`tests/integration/architecture.rs`) fails on a cycle or an import that points up.
//!
//! | module | job | on the request path? |
//! |---|---|---|
//! | [`core`] | clock, base64url, JWS, JWKs, API-key claims and scopes, revocation list, [`core::verifier::Verifier`] | yes — pure CPU |
//! | [`edge`] | auth layer, the one error → status map, JSON, health, metrics, the server shell, the HTTP client | yes |
//! | [`config`] | the key table; defaults < YAML < `PYROSCOPE_*` env < flags | start-up |
//! | [`node`] | `pyrogate ingest`: sync, ingest routes, forwarding, spool, read proxy | yes |
//! | `authority` | `pyrogate server` (feature `authority`): store (SQLite or PostgreSQL), keyring, key-encryption key (`kek`), passwords, admin API, single sign-on (`oidc`), UI | no |
//!
//! Where is a token verified? [`core::verifier::Verifier::verify`]. Where does a 401 come from?
//! [`edge::error::ApiError`], raised by [`edge::auth::require`].

#[cfg(feature = "authority")]
pub mod authority;
pub mod config;
pub mod core;
pub mod edge;
pub mod node;
