//! pyrogate: API keys for continuous profiling.
//!
//! An *authority* signs API keys as self-contained EdDSA JWTs; any number of stateless *ingest
//! nodes* verify them locally against a published key set and a small signed revocation list.
//! Nothing on the request path touches a database or the network.
//!
//! # Layout
//!
//! | module | job | on the request path? |
//! |---|---|---|
//! | [`clock`] | the injected wall clock (tests use a manual one) | yes |
//! | [`b64`] | strict base64url without padding | yes |
//! | [`jws`] | JWS compact parsing and EdDSA signing shared by every token kind | yes |
//! | [`token`] | API-key claims, roles, issuing rules | yes |
//! | [`jwk`] | RFC 8037 JWKs, RFC 7638 thumbprints, the verifier's [`jwk::KeySet`] | load time |
//! | [`keyring`] | Ed25519 signing keys in the keys dir: generate, rotate, retire, JWKS | no |
//! | [`revocation`] | the signed revocation list and the verifier's revocation snapshot | no |
//! | [`verifier`] | token → [`verifier::Principal`] or a typed [`verifier::VerifyError`]; cache | yes |
//! | [`config`] | the key table; defaults < YAML < `PYROSCOPE_*` env < flags | start-up |
//! | [`ingest`] | Pyroscope push routes, forwarding, spool, local store | yes |
//! | [`sync`] | ingest node: pull the key set and revocation list, cache them | no |
//! | [`node`] | `pyrogate ingest`: the stateless ingest node's server | — |
//! | [`metrics`] | Prometheus registry | — |
//! | `store`, `passwords`, `authority` | the authority (feature `authority`): SQLite, argon2id, admin API | no |
//! | [`auth`] | axum middleware + extractor: credentials → verifier → role check → 401/403 | yes |
//! | [`api_error`] | the one place that maps every service error to an HTTP status | yes |
//! | [`cli`] | clap subcommands behind the `pyrogate` binary | — |
//! | [`bench`] | `pyrogate bench verify`: verification cost on this machine | — |
//!
//! Where is a token verified? [`verifier::Verifier::verify`]. Where does a 401 come from?
//! [`api_error::ApiError`], raised by [`auth::require`].

pub mod api_error;
pub mod auth;
#[cfg(feature = "authority")]
pub mod authority;
pub mod b64;
pub mod bench;
pub mod cli;
pub mod clock;
pub mod config;
pub mod ingest;
pub mod jwk;
pub mod jws;
pub mod keyring;
pub mod metrics;
pub mod node;
#[cfg(feature = "authority")]
pub mod passwords;
pub mod revocation;
#[cfg(feature = "authority")]
pub mod store;
pub mod sync;
pub mod token;
pub mod verifier;
