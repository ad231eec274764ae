//! The one integration-test binary (see STYLE.md): every suite is a module here.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod architecture;
mod auth_layer;
mod authority;
mod hostile_tokens;
mod ingest;
mod keyring_cli;
mod mutation;
mod query_proxy;
mod support;
