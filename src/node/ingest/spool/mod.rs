//! A bounded, crash-safe FIFO of HTTP requests on disk: pushes the upstream could not take wait
//! here until it is back.
//!
//! ```text
//! spool/                              mode 0700
//!   00000000000000000042.req          a batch: entries 42, 43, … written together, mode 0600,
//!                                     named by its first entry's sequence number
//!   00000000000000000042.done         numbers of the batch's entries already delivered or
//!                                     set aside, while others of it still wait
//!   00000000000000000050.req.tmp      a batch being written (removed on open after a crash)
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
//! **Group commit: rename + fsync, once per batch.** Pushes arriving together are written as
//! one batch: the first of them to find no batch being written becomes the writer, takes every
//! push waiting (up to [`MAX_BATCH_ENTRIES`] / [`MAX_BATCH_BYTES`]), writes them to one `.tmp`
//! file, syncs it, renames it to its final name and syncs the directory, and hands each push
//! its sequence number; pushes arriving meanwhile wait for the next batch, written by one of
//! them. Two fsyncs per batch instead of two per push: on a shared virtual disk an fsync takes
//! milliseconds, and one per push capped a node at a few hundred spooled pushes a second.
//! Only the small queue mutex is locked around the write, never the index the replay reads.
//! Rename is atomic, so after a crash a batch is either complete under its final name or not
//! there at all; a leftover `.tmp` holds pushes that were never acknowledged and is deleted on
//! open. Only after the directory sync does [`Spool::push`] return, so an acknowledged push
//! survives power loss. A batch file is deleted once every entry in it is removed or set
//! aside; a crash before that sends its delivered entries again (at-least-once, below).
//!
//! **Checksums.** Rename protects against our own crashes, not against a disk or filesystem
//! that loses or flips bytes. Every entry ends with the SHA-256 of everything before it in
//! the entry; one that fails the check (on open, or later when read) is set aside in
//! `corrupt/` with a warning — never replayed half-broken, never deleted silently, and never
//! allowed to block the queue. Damage that makes the rest of a batch unreadable (a broken
//! length) sets that rest aside as one file.
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
//! **Bound.** `max_bytes` caps the sum of entry sizes (including entries still waiting for
//! their batch); a push that would pass it fails with [`SpoolError::Full`] and writes nothing.
//! `corrupt/` is outside the bound: it only grows when the disk misbehaves.
//!
//! The API is synchronous and does blocking I/O: async callers use `spawn_blocking`. The
//! internal mutex is never held across a file write or sync. One process per directory.
//!
//! # File format
//!
//! A batch file is its entries one after the other; a file of one entry — what a push alone
//! writes, and what `dead/`, `corrupt/` and `retry/` hold — is exactly one entry:
//!
//! ```text
//! pyrogate-spool v1\n
//! {"pathAndQuery":"/ingest?name=app.cpu","headers":[["content-type","text/plain"]],"bodyLen":5}\n
//! <bodyLen raw body bytes>
//! <32 bytes: SHA-256 of everything above, from this entry's first line>
//! ```

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write as _};
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::core::clock::{Clock, SystemClock};

pub mod dead;

/// First line of every entry: format name and version.
const MAGIC: &[u8] = b"pyrogate-spool v1\n";
const CHECKSUM_LEN: usize = 32;
const ENTRY_EXT: &str = ".req";
const TEMP_EXT: &str = ".tmp";
/// Beside a batch file: the numbers of its entries already removed or set aside.
const DONE_EXT: &str = ".done";
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

/// Most entries written as one batch.
const MAX_BATCH_ENTRIES: usize = 512;
/// Most bytes written as one batch (one entry alone may be larger).
const MAX_BATCH_BYTES: usize = 16 << 20;
/// Longest header line read when looking for an entry's length.
const MAX_HEADER: usize = 1 << 20;

/// The on-disk FIFO. See the module docs.
pub struct Spool {
    dir: PathBuf,
    max_bytes: u64,
    clock: Arc<dyn Clock>,
    state: Mutex<State>,
    /// Pushes waiting for the next batch, and the batch being written.
    queue: Mutex<Queue>,
    /// Told when a batch is written: its pushes have their answers, and another may start.
    written: Condvar,
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
    /// The entry's size in its file.
    size: u64,
    /// Unix time it was spooled (for entries found on open, the file's modification time).
    at: u64,
    /// Handed to a consumer by [`Spool::claim`] and not yet removed or released.
    claimed: bool,
    /// The file holding it (by the file's number) and where in it.
    file: u64,
    offset: u64,
}

#[derive(Debug)]
struct State {
    /// Committed entries by sequence number.
    entries: BTreeMap<u64, Entry>,
    /// Entries still in each file, by the file's number: a file goes when its last one does.
    files: BTreeMap<u64, FileEntries>,
    /// Sum of `entries`' sizes.
    bytes: u64,
    /// Bytes claimed by pushes still waiting for their batch.
    reserved: u64,
    /// `None` once `u64::MAX` has been handed out.
    next_seq: Option<u64>,
}

#[derive(Debug, Clone, Copy)]
struct FileEntries {
    /// Entries of the file still in the index.
    live: u32,
    /// Entries the file was written with.
    written: u32,
}

/// Pushes waiting for a batch (group commit).
#[derive(Default)]
struct Queue {
    /// Encoded entries waiting, with their pushes' tickets.
    waiting: Vec<(u64, Vec<u8>)>,
    /// A batch is being written right now.
    writing: bool,
    next_ticket: u64,
    /// Answers of written batches, by ticket, until their pushes take them.
    answers: std::collections::HashMap<u64, Result<u64, SpoolError>>,
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
        let mut notes = Vec::new();
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
            if name.ends_with(DONE_EXT) {
                notes.push(path); // read with its batch
                continue;
            }
            if name.ends_with(TEMP_EXT) {
                tracing::info!(path = %path.display(), "removing a spool batch whose write was interrupted");
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
        // Notes whose batch is gone would hide the entries of a later batch of that number.
        for note in notes {
            if !note.with_extension(&ENTRY_EXT[1..]).exists() {
                fs::remove_file(&note).map_err(io_err(&note))?;
                changed = true;
            }
        }

        let mut state = State {
            entries: BTreeMap::new(),
            files: BTreeMap::new(),
            bytes: 0,
            reserved: 0,
            next_seq: None,
        };
        for (first, path) in candidates {
            let data = Bytes::from(fs::read(&path).map_err(io_err(&path))?);
            let at = modified_at(&path).unwrap_or_else(|| clock.now());
            let (mut found, last) = open_batch(dir, first, &path, &data, at)?;
            let done = read_done(&done_path(&path));
            found.retain(|(seq, _)| !done.contains(seq));
            if found.is_empty() && !done.is_empty() {
                // Every entry was done before the file could go.
                for target in [done_path(&path), path.clone()] {
                    let _ = fs::remove_file(target);
                }
                changed = true;
            }
            changed |= found.len() as u64 != last.map_or(0, |l| l - first + 1);
            highest = highest.max(last);
            let written = u32::try_from(last.map_or(0, |l| l - first + 1)).unwrap_or(u32::MAX);
            if !found.is_empty() {
                state.files.insert(
                    first,
                    FileEntries {
                        live: found.len() as u32,
                        written,
                    },
                );
            }
            for (seq, entry) in found {
                state.bytes = state.bytes.saturating_add(entry.size);
                state.entries.insert(seq, entry);
            }
        }
        if changed {
            sync_dir(dir)?;
        }
        if !state.entries.is_empty() {
            tracing::info!(dir = %dir.display(), entries = state.entries.len(), bytes = state.bytes, "spooled requests waiting for the upstream");
        }
        state.next_seq = match highest {
            None => Some(1),
            Some(h) => h.checked_add(1),
        };

        Ok(Spool {
            dir: dir.to_owned(),
            max_bytes,
            clock,
            state: Mutex::new(state),
            queue: Mutex::default(),
            written: Condvar::new(),
        })
    }

    /// Appends a request durably and returns its sequence number. Fails with
    /// [`SpoolError::Full`], writing nothing, if it would take the spool past `max_bytes`.
    /// Pushes made at the same time share one batch (see the module docs).
    pub fn push(&self, req: &SpooledRequest) -> Result<u64, SpoolError> {
        let record = encode(req)?;
        let size = record.len() as u64;
        {
            let mut st = self.state();
            let used = st.bytes.saturating_add(st.reserved);
            if size > self.max_bytes.saturating_sub(used) {
                return Err(SpoolError::Full {
                    max_bytes: self.max_bytes,
                });
            }
            st.reserved += size;
        }
        let mut q = self.queue();
        let ticket = q.next_ticket;
        q.next_ticket += 1;
        q.waiting.push((ticket, record));
        loop {
            if let Some(answer) = q.answers.remove(&ticket) {
                return answer;
            }
            if !q.writing {
                q.writing = true;
                let batch = take_batch(&mut q.waiting);
                drop(q);
                let answers = self.write_batch(batch);
                q = self.queue();
                q.answers.extend(answers);
                q.writing = false;
                self.written.notify_all();
                continue;
            }
            q = self.written.wait(q).unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// Writes `batch` as one file and indexes it; the answer for each ticket.
    fn write_batch(&self, batch: Vec<(u64, Vec<u8>)>) -> Vec<(u64, Result<u64, SpoolError>)> {
        let sizes: Vec<u64> = batch.iter().map(|(_, r)| r.len() as u64).collect();
        let total: u64 = sizes.iter().sum();
        let first = {
            let mut st = self.state();
            let n = batch.len() as u64;
            match st.next_seq.filter(|f| f.checked_add(n - 1).is_some()) {
                Some(first) => {
                    st.next_seq = first.checked_add(n);
                    first
                }
                None => {
                    st.reserved -= total;
                    let error = SpoolError::SequenceExhausted {
                        dir: self.dir.clone(),
                    };
                    return batch
                        .into_iter()
                        .map(|(t, _)| (t, Err(error.again())))
                        .collect();
                }
            }
        };
        let parts: Vec<&[u8]> = batch.iter().map(|(_, r)| r.as_slice()).collect();
        let written = self.write_file(first, &parts);
        let at = self.clock.now();
        let mut st = self.state();
        st.reserved -= total;
        let (indexed, error) = match written {
            Ok(()) => (true, None),
            // The batch is on disk and will be replayed; count it so the bound holds.
            Err(Failure {
                error,
                left_in_place: true,
            }) => (true, Some(error)),
            Err(Failure { error, .. }) => (false, Some(error)),
        };
        if indexed {
            let n = batch.len() as u32;
            st.files.insert(
                first,
                FileEntries {
                    live: n,
                    written: n,
                },
            );
            let mut offset = 0;
            for (i, &size) in sizes.iter().enumerate() {
                st.entries.insert(
                    first + i as u64,
                    Entry {
                        size,
                        at,
                        claimed: false,
                        file: first,
                        offset,
                    },
                );
                offset += size;
            }
            st.bytes += total;
        }
        drop(st);
        batch
            .into_iter()
            .enumerate()
            .map(|(i, (ticket, _))| {
                let answer = match &error {
                    None => Ok(first + i as u64),
                    Some(e) => Err(e.again()),
                };
                (ticket, answer)
            })
            .collect()
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
    /// is set aside in `corrupt/`).
    pub fn read(&self, seq: u64) -> Result<Option<SpooledRequest>, SpoolError> {
        let Some(entry) = self.state().entries.get(&seq).copied() else {
            return Ok(None);
        };
        let path = self.entry_path(entry.file);
        match read_at(&path, entry.offset, entry.size) {
            Ok(data) => match decode_bytes(Bytes::from(data)) {
                Ok(req) => Ok(Some(req)),
                Err(reason) => {
                    if let Err(err) = self.set_aside(seq, CORRUPT_DIR, None) {
                        // It stays where it is and is looked at again on open.
                        tracing::warn!(error = %err, "can't move a corrupt spool entry aside; skipping it");
                        self.forget(seq);
                    }
                    tracing::warn!(path = %path.display(), seq, reason, "a spool entry is corrupt; moved it aside and skipped it");
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
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                // The file is shorter than when it was written: set the entry's place aside.
                self.forget(seq);
                tracing::warn!(path = %path.display(), seq, "a spool file was truncated behind our back; skipping its lost entry");
                Ok(None)
            }
            Err(e) => Err(io_err(&path)(e)),
        }
    }

    /// Unix time the oldest waiting entry was spooled (delivered or not), if any.
    pub fn oldest_at(&self) -> Option<u64> {
        self.state().entries.values().map(|e| e.at).min()
    }

    /// Deletes an entry once it has been delivered (its file, once the file's last entry
    /// goes). Removing an entry that is already gone is not an error.
    pub fn remove(&self, seq: u64) -> Result<(), SpoolError> {
        let mut st = self.state();
        let Some((entry, unlink)) = detach(&mut st, seq) else {
            return Ok(());
        };
        drop(st);
        self.finish(seq, entry.file, unlink, false)
    }

    /// An entry of file `file` is gone from the index: delete the file if it was its last
    /// entry (`unlink`), else note the entry as done beside it, so a restart does not bring it
    /// back. The note is synced only when `durable` (an entry set aside: a delivered one
    /// coming back after a crash is a duplicate, which at-least-once allows).
    fn finish(
        &self,
        seq: u64,
        file: u64,
        unlink: Option<u64>,
        durable: bool,
    ) -> Result<(), SpoolError> {
        let path = self.entry_path(file);
        let done = done_path(&path);
        if unlink.is_some() {
            // The notes first: a crash between the two leaves a batch without notes, whose
            // entries come back (duplicates), never notes that hide a newer batch's entries.
            for target in [&done, &path] {
                match fs::remove_file(target) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(io_err(target)(e)),
                }
            }
            return Ok(());
        }
        let noted = OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o600)
            .open(&done)
            .and_then(|mut f| {
                f.write_all(format!("{seq}\n").as_bytes())?;
                if durable { f.sync_all() } else { Ok(()) }
            });
        noted.map_err(io_err(&done))
    }

    /// Moves a delivered-but-refused entry to `dead/`, with `reason` beside it: an
    /// acknowledged push is never deleted because the upstream refused it. Returns the path.
    pub fn dead_letter(&self, seq: u64, reason: &str) -> Result<PathBuf, SpoolError> {
        self.set_aside(seq, DEAD_DIR, Some(reason))
    }

    /// Sets entry `seq` aside in `sub/` as a file of its own (named by its number; a file of
    /// one entry is renamed, an entry of a larger batch copied and synced), with `reason`
    /// beside it if given, then drops it from the index.
    fn set_aside(&self, seq: u64, sub: &str, reason: Option<&str>) -> Result<PathBuf, SpoolError> {
        let mut st = self.state();
        let Some(entry) = st.entries.get(&seq).copied() else {
            return Err(SpoolError::Io {
                path: self.entry_path(seq),
                source: io::Error::new(io::ErrorKind::NotFound, "no such spool entry"),
            });
        };
        let file = self.entry_path(entry.file);
        let alone = st
            .files
            .get(&entry.file)
            .is_some_and(|f| f.written == 1 && f.live == 1);
        let target = if alone {
            move_aside(&self.dir, sub, &file)?
        } else {
            let data = read_at(&file, entry.offset, entry.size).map_err(io_err(&file))?;
            write_aside(&self.dir, sub, &entry_name(seq), &data)?
        };
        if let Some(reason) = reason {
            let note = target.with_extension("reason");
            let written = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&note)
                .and_then(|mut f| f.write_all(format!("{reason}\n").as_bytes()));
            if let Err(e) = written {
                tracing::warn!(path = %note.display(), error = %e, "could not write why a spool entry was set aside");
            }
        }
        sync_dir(&self.dir.join(sub))?;
        let detached = detach(&mut st, seq);
        drop(st);
        if !alone && let Some((entry, unlink)) = detached {
            self.finish(seq, entry.file, unlink, true)?;
        }
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
            st.files.insert(
                seq,
                FileEntries {
                    live: 1,
                    written: 1,
                },
            );
            st.entries.insert(seq, Entry::alone(size, at, seq));
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

    fn queue(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn entry_path(&self, seq: u64) -> PathBuf {
        self.dir.join(entry_name(seq))
    }

    /// Drops a committed entry from the index (its file stays: the entry is gone from it, or
    /// the file is); false if it was no longer there.
    fn forget(&self, seq: u64) -> bool {
        detach(&mut self.state(), seq).is_some()
    }

    /// Temp file, sync, rename, sync the directory. On failure the batch is absent unless
    /// `left_in_place` says it could not be taken back after the rename.
    fn write_file(&self, seq: u64, parts: &[&[u8]]) -> Result<(), Failure> {
        let path = self.entry_path(seq);
        let tmp = self.dir.join(format!("{}{TEMP_EXT}", entry_name(seq)));
        let written = (|| {
            let file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)?;
            let mut out = io::BufWriter::with_capacity(256 << 10, file);
            for part in parts {
                out.write_all(part)?;
            }
            out.into_inner().map_err(|e| e.into_error())?.sync_all()
        })();
        if let Err(e) = written {
            let _ = fs::remove_file(&tmp);
            return Err(Failure::absent(io_err(&tmp)(e)));
        }
        if let Err(e) = fs::rename(&tmp, &path) {
            let _ = fs::remove_file(&tmp);
            return Err(Failure::absent(io_err(&path)(e)));
        }
        if let Err(error) = sync_dir(&self.dir) {
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

impl SpoolError {
    /// The same error for another push of the batch it failed (an I/O error is kept by kind
    /// and message).
    fn again(&self) -> SpoolError {
        match self {
            SpoolError::Full { max_bytes } => SpoolError::Full {
                max_bytes: *max_bytes,
            },
            SpoolError::Io { path, source } => SpoolError::Io {
                path: path.clone(),
                source: io::Error::new(source.kind(), source.to_string()),
            },
            SpoolError::SequenceExhausted { dir } => {
                SpoolError::SequenceExhausted { dir: dir.clone() }
            }
            other => SpoolError::Io {
                path: PathBuf::new(),
                source: io::Error::other(other.to_string()),
            },
        }
    }
}

/// Takes the entries for the next batch from the front of `waiting`: at least one, then as
/// many as fit [`MAX_BATCH_ENTRIES`] and [`MAX_BATCH_BYTES`].
fn take_batch(waiting: &mut Vec<(u64, Vec<u8>)>) -> Vec<(u64, Vec<u8>)> {
    let mut bytes = 0;
    let mut n = 0;
    for (_, record) in waiting.iter() {
        if n > 0 && (n == MAX_BATCH_ENTRIES || bytes + record.len() > MAX_BATCH_BYTES) {
            break;
        }
        bytes += record.len();
        n += 1;
    }
    let rest = waiting.split_off(n);
    std::mem::replace(waiting, rest)
}

/// Drops entry `seq` from the index; returns it, and its file's number if that was the file's
/// last entry (the caller deletes the file).
fn detach(st: &mut State, seq: u64) -> Option<(Entry, Option<u64>)> {
    let entry = st.entries.remove(&seq)?;
    st.bytes -= entry.size;
    let mut unlink = None;
    if let Some(f) = st.files.get_mut(&entry.file) {
        f.live = f.live.saturating_sub(1);
        if f.live == 0 {
            st.files.remove(&entry.file);
            unlink = Some(entry.file);
        }
    }
    Some((entry, unlink))
}

/// The notes of batch file `path`: its entries already done.
fn done_path(path: &Path) -> PathBuf {
    path.with_extension(&DONE_EXT[1..])
}

/// The entry numbers noted in a batch's notes (none if there are none; a damaged line is
/// skipped: its entry comes back, a duplicate at worst).
fn read_done(path: &Path) -> std::collections::BTreeSet<u64> {
    fs::read_to_string(path)
        .map(|text| text.lines().filter_map(|l| l.trim().parse().ok()).collect())
        .unwrap_or_default()
}

/// One entry's bytes, `size` of them at `offset` of the file at `path`.
fn read_at(path: &Path, offset: u64, size: u64) -> io::Result<Vec<u8>> {
    use std::os::unix::fs::FileExt as _;
    let file = File::open(path)?;
    let mut data = vec![0u8; usize::try_from(size).map_err(io::Error::other)?];
    file.read_exact_at(&mut data, offset)?;
    Ok(data)
}

/// Good entries found in a batch file on open, by number.
type Found = Vec<(u64, Entry)>;

/// The entries of batch file `path` (number `first`) found on open, and the highest number
/// it held. A file with no good entry is moved to `corrupt/` as it is, byte for byte. In a
/// file that has good ones, a damaged entry is set aside in `corrupt/` on its own, and damage
/// that hides where the next entry starts sets the rest of the file aside as one piece.
fn open_batch(
    dir: &Path,
    first: u64,
    path: &Path,
    data: &Bytes,
    at: u64,
) -> Result<(Found, Option<u64>), SpoolError> {
    enum Piece {
        Good(usize, usize),
        Bad(usize, usize, String),
    }
    let mut pieces = Vec::new();
    let mut offset = 0usize;
    while offset < data.len() {
        let Some(len) = entry_len(&data[offset..]) else {
            pieces.push(Piece::Bad(
                offset,
                data.len(),
                "unreadable entry length (truncated or damaged)".to_owned(),
            ));
            break;
        };
        match decode_bytes(data.slice(offset..offset + len)) {
            Ok(_) => pieces.push(Piece::Good(offset, offset + len)),
            Err(reason) => pieces.push(Piece::Bad(offset, offset + len, reason)),
        }
        offset += len;
    }
    let last = first.checked_add(pieces.len().saturating_sub(1) as u64);
    if !pieces.iter().any(|p| matches!(p, Piece::Good(..))) {
        let reason = match pieces.first() {
            Some(Piece::Bad(_, _, why)) => why.as_str(),
            _ => "empty",
        };
        quarantine(dir, path, reason)?;
        return Ok((Vec::new(), Some(first)));
    }
    let mut found = Vec::new();
    for (i, piece) in pieces.into_iter().enumerate() {
        let seq = first + i as u64;
        match piece {
            Piece::Good(from, to) => found.push((
                seq,
                Entry {
                    size: (to - from) as u64,
                    at,
                    claimed: false,
                    file: first,
                    offset: from as u64,
                },
            )),
            Piece::Bad(from, to, reason) => {
                let target = write_aside(dir, CORRUPT_DIR, &entry_name(seq), &data[from..to])?;
                tracing::warn!(path = %path.display(), moved_to = %target.display(), reason, "part of a spool batch is corrupt; set it aside and kept the rest");
            }
        }
    }
    Ok((found, last))
}

/// The length of the entry at the start of `data`, from its header, if it is all there.
fn entry_len(data: &[u8]) -> Option<usize> {
    let rest = data.strip_prefix(MAGIC)?;
    let header_len = rest.iter().take(MAX_HEADER).position(|&b| b == b'\n')?;
    let header: HeaderIn = serde_json::from_slice(&rest[..header_len]).ok()?;
    let body = usize::try_from(header.body_len).ok()?;
    let len = (MAGIC.len() + header_len + 1)
        .checked_add(body)?
        .checked_add(CHECKSUM_LEN)?;
    (len <= data.len()).then_some(len)
}

/// One entry as written: magic, header line, body, checksum.
fn encode(req: &SpooledRequest) -> Result<Vec<u8>, SpoolError> {
    let header = serde_json::to_vec(&HeaderOut {
        path_and_query: &req.path_and_query,
        headers: &req.headers,
        body_len: req.body.len() as u64,
    })
    .map_err(SpoolError::Encode)?;
    let mut out =
        Vec::with_capacity(MAGIC.len() + header.len() + 1 + req.body.len() + CHECKSUM_LEN);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&header);
    out.push(b'\n');
    out.extend_from_slice(&req.body);
    let digest = crate::core::crypto::sha256(&out);
    out.extend_from_slice(&digest);
    Ok(out)
}

/// Writes `data` into `dir/sub/` as a file of its own named `name` (plus a counter before
/// `.req` if that is taken), synced; returns its path.
fn write_aside(dir: &Path, sub: &str, name: &str, data: &[u8]) -> Result<PathBuf, SpoolError> {
    let aside = aside_dir(dir, sub)?;
    let target = free_name(&aside, OsStr::new(name));
    let tmp = aside.join(format!("{name}{TEMP_EXT}"));
    let written = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .and_then(|mut f| {
            f.write_all(data)?;
            f.sync_all()
        })
        .and_then(|()| fs::rename(&tmp, &target));
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(io_err(&target)(e));
    }
    Ok(target)
}

impl Entry {
    /// An entry that is a file of its own.
    fn alone(size: u64, at: u64, seq: u64) -> Self {
        Entry {
            size,
            at,
            claimed: false,
            file: seq,
            offset: 0,
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
    decode_bytes(Bytes::from(data))
}

/// Checks and parses one entry; the error is a reason for the log.
fn decode_bytes(data: Bytes) -> Result<SpooledRequest, String> {
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
        body: data.slice(body_start..content_len),
    })
}

/// Moves an entry into `dir/sub/`, keeping its name (plus a counter before `.req` if that is
/// taken: `…23-1.req`).
fn move_aside(dir: &Path, sub: &str, path: &Path) -> Result<PathBuf, SpoolError> {
    let aside = aside_dir(dir, sub)?;
    let target = free_name(&aside, path.file_name().unwrap_or(OsStr::new("entry")));
    fs::rename(path, &target).map_err(io_err(path))?;
    Ok(target)
}

/// `dir/sub/`, created private if it is not there yet.
fn aside_dir(dir: &Path, sub: &str) -> Result<PathBuf, SpoolError> {
    let aside = dir.join(sub);
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&aside)
        .map_err(io_err(&aside))?;
    Ok(aside)
}

/// `aside/name`, or `…-1.req`, `…-2.req` … if that is taken.
fn free_name(aside: &Path, name: &OsStr) -> PathBuf {
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
    target
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

fn sync_dir(dir: &Path) -> Result<(), SpoolError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}

#[cfg(test)]
mod tests;
