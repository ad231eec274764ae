//! The token core: pure CPU, no I/O, no locks held across awaits. Everything on the request
//! path that decides whether a key is good lives here, and nothing here knows about HTTP.

pub mod b64;
pub mod clock;
pub mod crypto;
pub mod error;
pub mod jwk;
pub mod jws;
pub mod keyset;
pub mod limits;
pub mod names;
pub mod revocation;
pub mod scope;
pub mod token;
pub mod verifier;
