//! The ingest plane end to end: real agents, a recording upstream, in-process authorities and
//! nodes on 127.0.0.1:0 — and a fleet of real `pyrogate` processes for revocation propagation.
//! Every wait is a polling loop with a deadline ([`crate::harness::Deadline`]); every test has
//! its own temp dirs and ports. The helpers (authority, node, upstream, server processes) are
//! the shared [`crate::harness`]; these modules hold only tests.
//!
//! | module | what it proves |
//! |---|---|
//! | [`agents`] | the Python and Node Pyroscope agents push through a node; refused keys get nowhere |
//! | [`fleet`] | an authority and three node processes: revocation reaches every node (p50/p99/max printed), nodes outlive the authority and restart from their cache |
//! | [`spool`] | pushes made while the upstream is down arrive once, in order, across restarts; full spool 503; oversized body 413 |
//! | [`dead_letters`] | `pyrogate spool dead list\|retry\|drop` beside a running node: refused pushes listed with their reason, retried into delivery, dropped |
//! | [`forwarding`] | path, query, protocol headers and bytes pass through; credentials never do; tenants |
//! | [`mirror`] | `pyrogate signing-key export` + a static file server: a pinned node syncs from the mirror, an air-gapped node reads the same files |
//! | [`trust`] | a fake authority, a replayed key set, a node that slept through a rotation, a tampered cache, a lost list, a 304-answering man in the middle: none gets anything trusted |
//! | [`limits`] | a key's limit: 429 with `Retry-After` past its burst and before the body, 200s at its rate, a raise through the API in force on a running node within a second, two nodes sharing one limit, the limits of a node's cache with the authority down, a tampered or unsigned list refused |
//! | [`reports`] | nodes with Node keys report to the authority: keys' last use and apps, spool backlog, a stopped node not reporting; only a live Node key may report, and it may do nothing else |
//! | [`restore`] | a node restarted from a damaged, mixed or rolled-back cache (or a whole old snapshot past `sync.max-staleness`) with the authority down accepts no key retired or revoked by then, says why in `/ready`, and recovers by itself when the authority is back |
//! | [`staleness`] | `sync.max-staleness` is measured on the node's injected clock |

mod agents;
mod dead_letters;
mod fleet;
mod forwarding;
mod limits;
mod mirror;
mod reports;
mod restore;
mod spool;
mod staleness;
mod trust;
