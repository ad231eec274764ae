//! The HTTP edge shared by both roles: the auth layer, the one error → status map, metrics.

pub mod auth;
pub mod error;
pub mod files;
pub mod json;
pub mod metrics;
