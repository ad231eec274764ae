//! The authority's HTTP routes, one file per resource.

pub mod distribution;
pub mod ingestion;
pub mod keys;
pub mod nodes;
pub mod session;
pub mod signing;
pub mod sso;
pub mod ui;
pub mod users;
