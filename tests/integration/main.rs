//! The one integration-test binary (see STYLE.md): every suite is a module here.
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
