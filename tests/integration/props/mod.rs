//! Property tests (proptest): generated input against the three parsers that take bytes from
//! outside — the token pre-screen and verifier, the configuration layers, and the spool's
//! on-disk records. Case counts keep the whole set to a few seconds in a debug build. A failure
//! prints the shrunk input; proptest also records its seed under `tests/proptest-regressions/`
//! and replays it first next time — commit that file with the fix.
//!
//! | module | what it generates |
//! |---|---|
//! | [`token`] | arbitrary strings and bytes for `jws::split` and the verifier; issued tokens; edited tokens |
//! | [`apps`] | arbitrary bytes and generated Push requests for the push decoders of scoped keys; gzip bodies against the inflate cap |
//! | [`config`] | a valid value for every key in YAML, env and flag form; arbitrary strings for typed keys; unknown names |
//! | [`oidc`] | arbitrary bytes and generated JSON for the single sign-on parsers (discovery, JWKS, token response, UserInfo, ID-token header and claims); arbitrary strings for the `next=` check |
//! | [`limits`] | arbitrary bytes, wrongly shaped JSON and generated limits sections (alone and signed into a revocation list): never a panic, accepted exactly within the rules, valid ones round-trip and install |
//! | [`report`] | arbitrary bytes, wrongly shaped JSON and generated node reports for the authority's report parser: never a panic, accepted only within its bounds |
//! | [`scope`] | arbitrary strings for the `apps` and `cidrs` parsers; random networks and addresses against a bitwise oracle |
//! | [`selector`] | generated label selectors against random series: a selector called confined never matches another application |
//! | [`spool`] | arbitrary requests through push/open/peek; damaged records; arbitrary and checksummed files |

mod apps;
mod config;
mod limits;
mod oidc;
mod report;
mod scope;
mod selector;
mod spool;
mod token;
