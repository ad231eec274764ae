//! The one integration-test binary: every suite is a module here, so the crate is linked once
//! (each file directly under tests/ would be a binary of its own).
//!
//! | module | what it is |
//! |---|---|
//! | [`harness`] | the one harness every end-to-end suite stands on: HTTP client, test settings, the authority and the ingest node in-process, a recording upstream, the real binary, deadlines |
//! | [`authority`] | the authority end to end: REST API, sessions, keys, users, signing keys, distribution, restarts, the CLI |
//! | [`ingest`] | the ingest plane end to end: agents, forwarding, the spool, staleness, a fleet of processes |
//! | [`query_proxy`] | the node's read proxy |
//! | [`auth_layer`] | the auth layer in an axum router, driven with `oneshot` (no sockets, its own `Harness`) |
//! | [`hostile_tokens`], [`mutation`] | the verifier against bad and mutated tokens |
//! | [`props`] | property tests (proptest): the token pre-screen, the config parser, the spool's records |
//! | [`keyring_cli`] | the signing-key and token commands of the binary (its own `Cli` runner) |
//! | [`soak`] | 500 agents through two node processes for a minute while keys churn and the signing key rotates: nothing accepted is lost, revocation within 1 s, flat RSS (`PYROGATE_SOAK_SECS`) |
//! | [`support`] | keys, verifiers and crafted tokens for the crypto suites |
//! | [`architecture`] | the module-graph check |
#![allow(clippy::unwrap_used, clippy::expect_used)]
// Tests bound real processes and sockets with real deadlines; the code under test reads time
// only through its injected clock.
#![allow(clippy::disallowed_methods)]

mod architecture;
mod auth_layer;
mod authority;
mod harness;
mod hostile_tokens;
mod ingest;
mod keyring_cli;
mod listeners;
mod mutation;
mod props;
mod query_proxy;
mod scopes;
mod soak;
mod support;
mod tls;
