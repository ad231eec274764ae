//! A bounded, crash-safe FIFO of HTTP requests on disk: pushes the upstream could not take wait
//! here until it is back.
//!
//! ```text
//! spool/                              mode 0700
//!   00000000000000000042.req          one entry per file, mode 0600, named by sequence number
//!   00000000000000000043.req.tmp      an entry being written (removed on open after a crash)
//!   corrupt/00000000000000000017.req  entries that failed their checksum, kept for a human
//!   dead/00000000000000000023.req     entries the upstream refused for good (a 4xx other than
//!   dead/00000000000000000023.reason  408/429/401/403), with why — never deleted by the node
//!   retry/00000000000000000023.req    dead letters handed back by `pyrogate spool dead retry`,
//!                                     waiting for the node to take them into the queue
//! ```
//!
//! **Dead letters** are looked after by a human through [`dead::DeadLetters`] (`pyrogate spool
//! dead list|retry|drop`), which works on the files only and is safe while a node runs. A retry
//! renames the entry from `dead/` to `retry/` (atomic); the node never sees a half-moved file.
//! The node's replay loop calls [`Spool::adopt_retried`] before each delivery and at least once
//! a second while idle: every entry in `retry/` is checked and renamed into the queue under a
//! fresh sequence number, so it is replayed after what is already waiting. A node that is not
//! running adopts them on its first replay after start. Adopted entries count towards
//! `max_bytes` but are taken even past it: they are on the disk already.
//!
//! **Rename + fsync.** An entry is written to a `.tmp` file, synced, renamed to its final name
//! and the directory synced. Rename is atomic, so after a crash an entry is either complete
//! under its final name or not there at all; a leftover `.tmp` is a push that was never
//! acknowledged and is deleted on open. Only after the directory sync does [`Spool::push`]
//! return, so an acknowledged push survives power loss.
//!
//! **Checksums.** Rename protects against our own crashes, not against a disk or filesystem
//! that loses or flips bytes. Every file ends with the SHA-256 of everything before it; a file
//! that fails the check (on open, or later when read) is moved to `corrupt/` with a warning —
//! never replayed half-broken, never deleted silently, and never allowed to block the queue.
//!
//! **Order.** Sequence numbers come from one counter that continues after the highest number
//! found on open (in the spool, `corrupt/` and `dead/`), so they increase across restarts; the
//! zero-padded names sort in the same order. [`Spool::peek`] returns the lowest committed
//! number; [`Spool::claim`] hands out the lowest ones no consumer holds yet, so a consumer may
//! deliver many entries at once (the node's replay does) and an entry given back with
//! [`Spool::release`] is claimed again before newer ones. Pushes write their files in parallel, so of two pushes racing each other the one
//! with the higher number may become visible first — their order was arbitrary anyway. Once the
//! spool has drained empty, a restart may number from 1 again; numbers identify entries, they
//! are not a log offset.
//!
//! **At-least-once.** The consumer peeks (or claims and reads), delivers, then calls
//! [`Spool::remove`]. A crash
//! between delivery and removal (or before the unlink reached the disk — removal does not sync
//! the directory, since the worst outcome is a duplicate) delivers that entry again after the
//! restart. [`Spool::remove`] is idempotent, so two consumers racing to remove the same entry
//! are harmless.
//!
//! **No secrets.** The caller strips `Authorization`, `Cookie` and any other credential before
//! enqueueing; a spooled request holds only what is forwarded upstream. The files are private
//! to the service user all the same.
//!
//! **Bound.** `max_bytes` caps the sum of entry file sizes (including entries still being
//! written); a push that would pass it fails with [`SpoolError::Full`] and writes nothing.
//! `corrupt/` is outside the bound: it only grows when the disk misbehaves.
//!
//! The API is synchronous and does blocking I/O: async callers use `spawn_blocking`. The
//! internal mutex is never held across a file write or sync. One process per directory.
//!
//! # File format
//!
//! ```text
//! pyrogate-spool v1\n
//! {"pathAndQuery":"/ingest?name=app.cpu","headers":[["content-type","text/plain"]],"bodyLen":5}\n
//! <bodyLen raw body bytes>
//! <32 bytes: SHA-256 of everything above>
//! ```

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write as _};
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::core::clock::{Clock, SystemClock};

pub mod dead;

/// First line of every entry: format name and version.
const MAGIC: &[u8] = b"pyrogate-spool v1\n";
const CHECKSUM_LEN: usize = 32;
const ENTRY_EXT: &str = ".req";
const TEMP_EXT: &str = ".tmp";
const CORRUPT_DIR: &str = "corrupt";
const DEAD_DIR: &str = "dead";
const RETRY_DIR: &str = "retry";
/// Digits in an entry name: enough for every `u64`, so names sort like numbers.
const SEQ_DIGITS: usize = 20;

/// One request waiting for the upstream. Must not carry credentials (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpooledRequest {
    pub path_and_query: String,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SpoolError {
    #[error("the spool is full: this request would take it past {max_bytes} bytes")]
    Full { max_bytes: u64 },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{dir}: no sequence numbers left; move the entries elsewhere and restart")]
    SequenceExhausted { dir: PathBuf },
    #[error("can't encode a spool entry header: {0}")]
    Encode(#[source] serde_json::Error),
    #[error("no dead letter {id:?} in {dir} (`pyrogate spool dead list` shows them)")]
    NoSuchDeadLetter { id: String, dir: PathBuf },
    #[error("dead letter {id} is damaged ({reason}); it can only be dropped")]
    DamagedDeadLetter { id: String, reason: String },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> SpoolError + '_ {
    move |source| SpoolError::Io {
        path: path.to_owned(),
        source,
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct HeaderOut<'a> {
    path_and_query: &'a str,
    headers: &'a [(String, String)],
    body_len: u64,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct HeaderIn {
    path_and_query: String,
    headers: Vec<(String, String)>,
    body_len: u64,
}

/// The on-disk FIFO. See the module docs.
pub struct Spool {
    dir: PathBuf,
    max_bytes: u64,
    clock: Arc<dyn Clock>,
    state: Mutex<State>,
    /// Group commit of the directory sync that makes a push's rename durable.
    dir_sync: GroupSync,
}

impl std::fmt::Debug for Spool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spool")
            .field("dir", &self.dir)
            .field("max_bytes", &self.max_bytes)
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

/// A committed entry as the index knows it.
#[derive(Debug, Clone, Copy)]
struct Entry {
    /// File size.
    size: u64,
    /// Unix time it was spooled (for entries found on open, the file's modification time).
    at: u64,
    /// Handed to a consumer by [`Spool::claim`] and not yet removed or released.
    claimed: bool,
}

#[derive(Debug)]
struct State {
    /// Committed entries by sequence number.
    entries: BTreeMap<u64, Entry>,
    /// Sum of `entries`' sizes.
    bytes: u64,
    /// Bytes claimed by pushes still writing their file.
    reserved: u64,
    /// `None` once `u64::MAX` has been handed out.
    next_seq: Option<u64>,
}

impl Spool {
    /// Opens (creating it if needed) the spool in `dir`: removes temporary files left by a
    /// crash, verifies every entry and moves broken ones to `corrupt/`.
    ///
    /// Opening reads every entry once, so it costs about one SHA-256 pass over the spool.
    pub fn open(dir: &Path, max_bytes: u64) -> Result<Spool, SpoolError> {
        Spool::open_with_clock(dir, max_bytes, Arc::new(SystemClock))
    }

    /// [`Spool::open`] with the clock that stamps new entries (their age is
    /// [`Spool::oldest_at`]'s business).
    pub fn open_with_clock(
        dir: &Path,
        max_bytes: u64,
        clock: Arc<dyn Clock>,
    ) -> Result<Spool, SpoolError> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io_err(dir))?;

        let mut candidates = BTreeMap::new();
        let mut highest: Option<u64> = None;
        let mut changed = false;
        for item in fs::read_dir(dir).map_err(io_err(dir))? {
            let item = item.map_err(io_err(dir))?;
            let path = item.path();
            let name = item.file_name();
            let Some(name) = name.to_str() else {
                tracing::warn!(path = %path.display(), "ignoring a file that is not a spool entry");
                continue;
            };
            if [CORRUPT_DIR, DEAD_DIR, RETRY_DIR].contains(&name) {
                continue;
            }
            if name.ends_with(TEMP_EXT) {
                tracing::info!(path = %path.display(), "removing a spool entry whose write was interrupted");
                fs::remove_file(&path).map_err(io_err(&path))?;
                changed = true;
                continue;
            }
            match parse_entry_name(name) {
                Some(seq) => {
                    highest = highest.max(Some(seq));
                    candidates.insert(seq, path);
                }
                None => {
                    tracing::warn!(path = %path.display(), "ignoring a file that is not a spool entry");
                }
            }
        }
        highest = highest
            .max(highest_aside(dir, CORRUPT_DIR)?)
            .max(highest_aside(dir, DEAD_DIR)?);

        let mut entries = BTreeMap::new();
        let mut bytes = 0u64;
        for (seq, path) in candidates {
            let data = fs::read(&path).map_err(io_err(&path))?;
            let size = data.len() as u64;
            match decode(data) {
                Ok(_) => {
                    let at = modified_at(&path).unwrap_or_else(|| clock.now());
                    entries.insert(seq, Entry::new(size, at));
                    bytes = bytes.saturating_add(size);
                }
                Err(reason) => {
                    quarantine(dir, &path, &reason)?;
                    changed = true;
                }
            }
        }
        if changed {
            sync_dir(dir)?;
        }
        if !entries.is_empty() {
            tracing::info!(dir = %dir.display(), entries = entries.len(), bytes, "spooled requests waiting for the upstream");
        }

        Ok(Spool {
            dir: dir.to_owned(),
            max_bytes,
            clock,
            dir_sync: GroupSync::default(),
            state: Mutex::new(State {
                entries,
                bytes,
                reserved: 0,
                next_seq: match highest {
                    None => Some(1),
                    Some(h) => h.checked_add(1),
                },
            }),
        })
    }

    /// Appends a request durably and returns its sequence number. Fails with
    /// [`SpoolError::Full`], writing nothing, if it would take the spool past `max_bytes`.
    pub fn push(&self, req: &SpooledRequest) -> Result<u64, SpoolError> {
        let mut header = serde_json::to_vec(&HeaderOut {
            path_and_query: &req.path_and_query,
            headers: &req.headers,
            body_len: req.body.len() as u64,
        })
        .map_err(SpoolError::Encode)?;
        header.push(b'\n');
        let size = (MAGIC.len() + header.len() + req.body.len() + CHECKSUM_LEN) as u64;

        let seq = {
            let mut st = self.state();
            let used = st.bytes.saturating_add(st.reserved);
            if size > self.max_bytes.saturating_sub(used) {
                return Err(SpoolError::Full {
                    max_bytes: self.max_bytes,
                });
            }
            let seq = st.next_seq.ok_or_else(|| SpoolError::SequenceExhausted {
                dir: self.dir.clone(),
            })?;
            st.next_seq = seq.checked_add(1);
            st.reserved += size;
            seq
        };

        let written = self.write_entry(seq, &[MAGIC, &header, &req.body]);

        let entry = Entry::new(size, self.clock.now());
        let mut st = self.state();
        st.reserved -= size;
        match written {
            Ok(()) => {
                st.entries.insert(seq, entry);
                st.bytes += size;
                Ok(seq)
            }
            Err(Failure {
                error,
                left_in_place: true,
            }) => {
                // The entry is on disk and will be replayed; count it so the bound holds.
                st.entries.insert(seq, entry);
                st.bytes += size;
                Err(error)
            }
            Err(Failure { error, .. }) => Err(error),
        }
    }

    /// The oldest entry, or `None` if the spool is empty. Entries that fail their checksum
    /// are moved to `corrupt/` and skipped.
    pub fn peek(&self) -> Result<Option<(u64, SpooledRequest)>, SpoolError> {
        loop {
            let Some(seq) = self.state().entries.keys().next().copied() else {
                return Ok(None);
            };
            if let Some(req) = self.read(seq)? {
                return Ok(Some((seq, req)));
            }
        }
    }

    /// Hands out up to `max` of the oldest entries no consumer holds yet, and marks them
    /// held: a consumer delivering several entries at once claims them, then
    /// [`Spool::read`]s each and ends every claim with [`Spool::remove`],
    /// [`Spool::dead_letter`] or [`Spool::release`] (to be claimed again, before newer
    /// entries). Claims live in memory only: after a restart every entry is free.
    pub fn claim(&self, max: usize) -> Vec<u64> {
        let mut st = self.state();
        st.entries
            .iter_mut()
            .filter(|(_, e)| !e.claimed)
            .take(max)
            .map(|(&seq, e)| {
                e.claimed = true;
                seq
            })
            .collect()
    }

    /// Gives a claimed entry back, for a later [`Spool::claim`].
    pub fn release(&self, seq: u64) {
        if let Some(e) = self.state().entries.get_mut(&seq) {
            e.claimed = false;
        }
    }

    /// Reads entry `seq`: `None` if it is no longer there, or failed its checksum (then it
    /// is moved to `corrupt/`).
    pub fn read(&self, seq: u64) -> Result<Option<SpooledRequest>, SpoolError> {
        let path = self.entry_path(seq);
        match fs::read(&path) {
            Ok(data) => match decode(data) {
                Ok(req) => Ok(Some(req)),
                Err(reason) => {
                    if self.forget(seq)
                        && let Err(err) = quarantine(&self.dir, &path, &reason)
                    {
                        // It stays under its name and is looked at again on open.
                        tracing::warn!(error = %err, "can't move a corrupt spool entry aside; skipping it");
                    }
                    Ok(None)
                }
            },
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                // Removed by another consumer just now, or deleted behind our back.
                if self.forget(seq) {
                    tracing::warn!(path = %path.display(), "a spool entry disappeared from disk; skipping it");
                }
                Ok(None)
            }
            Err(e) => Err(io_err(&path)(e)),
        }
    }

    /// Unix time the oldest waiting entry was spooled (delivered or not), if any.
    pub fn oldest_at(&self) -> Option<u64> {
        self.state().entries.values().map(|e| e.at).min()
    }

    /// Deletes an entry once it has been delivered. Removing an entry that is already gone
    /// is not an error.
    pub fn remove(&self, seq: u64) -> Result<(), SpoolError> {
        let mut st = self.state();
        let Some(size) = st.entries.get(&seq).map(|e| e.size) else {
            return Ok(());
        };
        let path = self.entry_path(seq);
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(&path)(e)),
        }
        st.entries.remove(&seq);
        st.bytes -= size;
        Ok(())
    }

    /// Moves a delivered-but-refused entry to `dead/`, with `reason` beside it: an
    /// acknowledged push is never deleted because the upstream refused it. Returns the path.
    pub fn dead_letter(&self, seq: u64, reason: &str) -> Result<PathBuf, SpoolError> {
        let mut st = self.state();
        let Some(size) = st.entries.get(&seq).map(|e| e.size) else {
            return Err(SpoolError::Io {
                path: self.entry_path(seq),
                source: io::Error::new(io::ErrorKind::NotFound, "no such spool entry"),
            });
        };
        let path = self.entry_path(seq);
        let target = move_aside(&self.dir, DEAD_DIR, &path)?;
        let note = target.with_extension("reason");
        let written = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&note)
            .and_then(|mut f| f.write_all(format!("{reason}\n").as_bytes()));
        if let Err(e) = written {
            tracing::warn!(path = %note.display(), error = %e, "could not write why a spool entry was dead-lettered");
        }
        sync_dir(&self.dir.join(DEAD_DIR))?;
        st.entries.remove(&seq);
        st.bytes -= size;
        Ok(target)
    }

    /// Entries in `dead/`.
    pub fn dead_letters(&self) -> usize {
        fs::read_dir(self.dir.join(DEAD_DIR))
            .map(|entries| {
                entries
                    .filter_map(Result::ok)
                    .filter(|e| e.path().extension().is_some_and(|x| x == "req"))
                    .count()
            })
            .unwrap_or(0)
    }

    /// Takes the entries `pyrogate spool dead retry` put in `retry/` into the queue, each under
    /// a fresh sequence number (so after everything already waiting), and returns how many.
    /// A damaged one goes to `corrupt/`. Cheap when `retry/` is empty or absent (one
    /// directory read), so the replay loop calls it before every delivery.
    pub fn adopt_retried(&self) -> Result<usize, SpoolError> {
        let retry = self.dir.join(RETRY_DIR);
        let items = match fs::read_dir(&retry) {
            Ok(items) => items,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(io_err(&retry)(e)),
        };
        let mut waiting: Vec<PathBuf> = items
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "req"))
            .collect();
        if waiting.is_empty() {
            return Ok(0);
        }
        // In the order they were first spooled.
        waiting.sort();
        let mut adopted = 0;
        for path in waiting {
            let data = match fs::read(&path) {
                Ok(data) => data,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io_err(&path)(e)),
            };
            let size = data.len() as u64;
            if let Err(reason) = decode(data) {
                quarantine(&self.dir, &path, &reason)?;
                continue;
            }
            let seq = {
                let mut st = self.state();
                let seq = st.next_seq.ok_or_else(|| SpoolError::SequenceExhausted {
                    dir: self.dir.clone(),
                })?;
                st.next_seq = seq.checked_add(1);
                seq
            };
            let target = self.entry_path(seq);
            fs::rename(&path, &target).map_err(io_err(&path))?;
            let at = modified_at(&target).unwrap_or_else(|| self.clock.now());
            let mut st = self.state();
            st.entries.insert(seq, Entry::new(size, at));
            st.bytes = st.bytes.saturating_add(size);
            adopted += 1;
        }
        if adopted > 0 {
            sync_dir(&self.dir)?;
            sync_dir(&retry)?;
            tracing::info!(
                entries = adopted,
                "took retried dead letters back into the spool"
            );
        }
        Ok(adopted)
    }

    /// Entries waiting.
    pub fn len(&self) -> usize {
        self.state().entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Disk space the waiting entries take.
    pub fn bytes(&self) -> u64 {
        self.state().bytes
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // Every update leaves the state consistent, so a panic elsewhere can't poison it.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn entry_path(&self, seq: u64) -> PathBuf {
        self.dir.join(entry_name(seq))
    }

    /// Drops a committed entry from the index; false if it was no longer there.
    fn forget(&self, seq: u64) -> bool {
        let mut st = self.state();
        match st.entries.remove(&seq) {
            Some(e) => {
                st.bytes -= e.size;
                true
            }
            None => false,
        }
    }

    /// Temp file, sync, rename, sync the directory. On failure the entry is absent unless
    /// `left_in_place` says it could not be taken back after the rename.
    fn write_entry(&self, seq: u64, parts: &[&[u8]]) -> Result<(), Failure> {
        let path = self.entry_path(seq);
        let tmp = self.dir.join(format!("{}{TEMP_EXT}", entry_name(seq)));
        let written = (|| {
            let mut file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)?;
            let mut hasher = ring::digest::Context::new(&ring::digest::SHA256);
            for part in parts {
                hasher.update(part);
                file.write_all(part)?;
            }
            file.write_all(hasher.finish().as_ref())?;
            file.sync_all()
        })();
        if let Err(e) = written {
            let _ = fs::remove_file(&tmp);
            return Err(Failure::absent(io_err(&tmp)(e)));
        }
        if let Err(e) = fs::rename(&tmp, &path) {
            let _ = fs::remove_file(&tmp);
            return Err(Failure::absent(io_err(&path)(e)));
        }
        if let Err(error) = self.dir_sync.sync(&self.dir) {
            // Not durable, so not acknowledged: take it back if we can.
            return Err(match fs::remove_file(&path) {
                Ok(()) => Failure::absent(error),
                Err(_) => Failure {
                    error,
                    left_in_place: true,
                },
            });
        }
        Ok(())
    }
}

impl Entry {
    fn new(size: u64, at: u64) -> Self {
        Entry {
            size,
            at,
            claimed: false,
        }
    }
}

/// A file's modification time in Unix seconds (when its entry was first written: renames
/// keep it).
fn modified_at(path: &Path) -> Option<u64> {
    let modified = fs::metadata(path).ok()?.modified().ok()?;
    Some(
        modified
            .duration_since(std::time::UNIX_EPOCH)
            .ok()?
            .as_secs(),
    )
}

struct Failure {
    error: SpoolError,
    left_in_place: bool,
}

impl Failure {
    fn absent(error: SpoolError) -> Self {
        Failure {
            error,
            left_in_place: false,
        }
    }
}

fn entry_name(seq: u64) -> String {
    format!("{seq:0width$}{ENTRY_EXT}", width = SEQ_DIGITS)
}

/// `00000000000000000042.req` → 42. Anything else (other widths, signs, suffixes) → `None`.
fn parse_entry_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(ENTRY_EXT)?;
    parse_seq(digits)
}

fn parse_seq(digits: &str) -> Option<u64> {
    if digits.len() != SEQ_DIGITS || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The highest sequence number in `corrupt/` or `dead/`, so a number set aside is never reused
/// (and a dead letter's id stays unique).
fn highest_aside(dir: &Path, sub: &str) -> Result<Option<u64>, SpoolError> {
    let corrupt = dir.join(sub);
    let items = match fs::read_dir(&corrupt) {
        Ok(items) => items,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err(&corrupt)(e)),
    };
    let mut highest = None;
    for item in items {
        let name = item.map_err(io_err(&corrupt))?.file_name();
        let seq = name
            .to_str()
            .and_then(|n| n.get(..SEQ_DIGITS))
            .and_then(parse_seq);
        highest = highest.max(seq);
    }
    Ok(highest)
}

/// Checks and parses one entry file; the error is a reason for the log.
fn decode(data: Vec<u8>) -> Result<SpooledRequest, String> {
    let Some(content_len) = data.len().checked_sub(CHECKSUM_LEN) else {
        return Err(format!("truncated: only {} bytes", data.len()));
    };
    let (content, checksum) = data.split_at(content_len);
    if crate::core::crypto::sha256(content)[..] != *checksum {
        return Err("checksum mismatch (truncated or damaged)".to_owned());
    }
    let Some(rest) = content.strip_prefix(MAGIC) else {
        return Err("not a pyrogate-spool v1 entry".to_owned());
    };
    let Some(header_len) = rest.iter().position(|&b| b == b'\n') else {
        return Err("no header line".to_owned());
    };
    let header: HeaderIn = serde_json::from_slice(&rest[..header_len])
        .map_err(|e| format!("unreadable header: {e}"))?;
    let body_start = MAGIC.len() + header_len + 1;
    let body_len = content_len - body_start;
    if header.body_len != body_len as u64 {
        return Err(format!(
            "body is {body_len} bytes, header says {}",
            header.body_len
        ));
    }
    Ok(SpooledRequest {
        path_and_query: header.path_and_query,
        headers: header.headers,
        body: Bytes::from(data).slice(body_start..content_len),
    })
}

/// Moves an entry into `dir/sub/`, keeping its name (plus a counter before `.req` if that is
/// taken: `…23-1.req`).
fn move_aside(dir: &Path, sub: &str, path: &Path) -> Result<PathBuf, SpoolError> {
    let aside = dir.join(sub);
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&aside)
        .map_err(io_err(&aside))?;
    let name = path.file_name().unwrap_or(OsStr::new("entry"));
    let mut target = aside.join(name);
    let mut n = 0u32;
    while target.exists() {
        n += 1;
        let alt = match name.to_str().and_then(|n| n.strip_suffix(ENTRY_EXT)) {
            Some(stem) => format!("{stem}-{n}{ENTRY_EXT}").into(),
            None => {
                let mut alt = name.to_owned();
                alt.push(format!(".{n}"));
                alt
            }
        };
        target = aside.join(alt);
    }
    fs::rename(path, &target).map_err(io_err(path))?;
    Ok(target)
}

/// Moves a broken entry to `corrupt/`.
fn quarantine(dir: &Path, path: &Path, reason: &str) -> Result<(), SpoolError> {
    let target = move_aside(dir, CORRUPT_DIR, path)?;
    tracing::warn!(
        path = %path.display(),
        moved_to = %target.display(),
        reason,
        "a spool entry is corrupt; moved it aside and skipped it"
    );
    Ok(())
}

/// Group commit of a directory sync. Every push renames its entry into the directory and must
/// not be acknowledged before the directory is synced; pushes arriving together share one
/// sync instead of each paying for one. A caller asks for a sync that starts after its rename:
/// if one is running, it waits for the next; whoever finds none running runs it for everyone
/// waiting at that moment. Only the small bookkeeping mutex is ever locked, never across the
/// sync itself, and nothing but the pushes waiting for that sync wait on it (the replay's
/// removals don't sync the directory).
#[derive(Default)]
struct GroupSync {
    state: Mutex<SyncRounds>,
    done: std::sync::Condvar,
}

#[derive(Default)]
struct SyncRounds {
    /// Rounds finished (and how the last one ended, for the callers waiting on it).
    finished: u64,
    last_error: Option<(io::ErrorKind, String)>,
    running: bool,
}

impl GroupSync {
    fn rounds(&self) -> MutexGuard<'_, SyncRounds> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn sync(&self, dir: &Path) -> Result<(), SpoolError> {
        let mut st = self.rounds();
        // A caller's round is the next one to start after it asked. A round already running may have started before our rename: we need the one after.
        let mine = st.finished + 1 + u64::from(st.running);
        loop {
            if st.finished >= mine {
                return match &st.last_error {
                    None => Ok(()),
                    Some((kind, why)) => Err(io_err(dir)(io::Error::new(*kind, why.clone()))),
                };
            }
            if !st.running {
                st.running = true;
                let round = st.finished + 1;
                drop(st);
                let result = File::open(dir).and_then(|d| d.sync_all());
                st = self.rounds();
                st.running = false;
                st.finished = round;
                st.last_error = result.as_ref().err().map(|e| (e.kind(), e.to_string()));
                self.done.notify_all();
                continue;
            }
            st = self.done.wait(st).unwrap_or_else(PoisonError::into_inner);
        }
    }
}

impl std::fmt::Debug for GroupSync {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupSync").finish_non_exhaustive()
    }
}

fn sync_dir(dir: &Path) -> Result<(), SpoolError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}

#[cfg(test)]
mod tests;
