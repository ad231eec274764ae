//! The HTTP edge shared by both roles: the auth layer, the one error → status map, metrics.

pub mod auth;
pub mod client;
pub mod error;
pub mod files;
pub mod health;
pub mod hosts;
pub mod json;
pub mod lifecycle;
pub mod metrics;
pub mod origin;
pub mod server;
pub mod tls;
