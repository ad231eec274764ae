//! The one integration-test binary: every suite is a module here, so the crate is linked once
//! (each file directly under tests/ would be a binary of its own).
#![allow(clippy::unwrap_used, clippy::expect_used)]
// Tests bound real processes and sockets with real deadlines; the code under test reads time
// only through its injected clock.
#![allow(clippy::disallowed_methods)]

mod architecture;
mod auth_layer;
mod authority;
mod hostile_tokens;
mod ingest;
mod keyring_cli;
mod mutation;
mod query_proxy;
mod support;
