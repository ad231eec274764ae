//! Dead letters: spooled pushes the upstream refused for good, kept in `<spool>/dead/` with a
//! `.reason` file beside each, for a human to look at, hand back or delete (`pyrogate spool dead
//! list|retry|drop`).
//!
//! [`DeadLetters`] works on the files alone, so it is safe beside a node running on the same
//! storage path:
//!
//! - **list** reads each entry (checksum included) for its size, route, tenant and app, and the
//!   `.reason` the node wrote. It never shows the stored headers or the body: a spooled request
//!   holds no credentials (the node strips them before spooling), and the listing does not rely
//!   on that alone.
//! - **retry** checks the entry and renames it into `<spool>/retry/` (one atomic rename on the
//!   same filesystem); the node takes it into its queue on its next replay step, at most about a
//!   second later, or on its next start (see [`super::Spool::adopt_retried`]). A damaged entry
//!   is refused: it can only be dropped.
//! - **drop** deletes the entry and its reason.
//!
//! An id is the entry's file name without `.req` (`00000000000000000023`, or `…23-1` when a
//! name was taken); the number alone (`23`) is accepted too.

use std::fs;
use std::io;
use std::os::unix::fs::DirBuilderExt as _;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

use super::{DEAD_DIR, ENTRY_EXT, RETRY_DIR, SEQ_DIGITS, SpoolError, decode, io_err, sync_dir};

/// Longest reason shown, in characters.
const MAX_REASON_CHARS: usize = 2000;

/// The dead letters of the spool in one directory.
#[derive(Debug, Clone)]
pub struct DeadLetters {
    spool: PathBuf,
}

/// One dead letter, as listed: no headers, no body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeadLetter {
    pub id: String,
    /// Size of the entry file.
    pub bytes: u64,
    /// When the push was spooled (the entry file's modification time), Unix seconds.
    pub spooled_at: Option<u64>,
    /// When it was dead-lettered (the reason file's modification time), Unix seconds.
    pub dead_at: Option<u64>,
    /// The push route, without the query string.
    pub path: Option<String>,
    pub tenant: Option<String>,
    /// The app the push is for, when it can be told cheaply (the legacy `name` parameter, or the
    /// `service_name` label of a push.v1 request).
    pub app: Option<String>,
    /// What the node wrote when it gave up on the entry.
    pub reason: Option<String>,
    /// Why the entry can't be read, if it can't; such an entry can only be dropped.
    pub damaged: Option<String>,
}

impl DeadLetters {
    /// The dead letters of the spool in `spool_dir` (`<storage-path>/spool`).
    pub fn new(spool_dir: &Path) -> Self {
        DeadLetters {
            spool: spool_dir.to_owned(),
        }
    }

    fn dead_dir(&self) -> PathBuf {
        self.spool.join(DEAD_DIR)
    }

    /// Every dead letter, oldest id first. A spool without a `dead/` directory has none.
    pub fn list(&self) -> Result<Vec<DeadLetter>, SpoolError> {
        let mut out = Vec::new();
        for id in self.ids()? {
            if let Some(letter) = self.read(&id)? {
                out.push(letter);
            }
        }
        Ok(out)
    }

    /// Hands one dead letter back to the spool queue; `id` as [`DeadLetters::list`] shows it.
    pub fn retry(&self, id: &str) -> Result<DeadLetter, SpoolError> {
        let id = self.find(id)?;
        let letter = self.read(&id)?.ok_or_else(|| self.missing(&id))?;
        if let Some(reason) = &letter.damaged {
            return Err(SpoolError::DamagedDeadLetter {
                id,
                reason: reason.clone(),
            });
        }
        let retry = self.spool.join(RETRY_DIR);
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&retry)
            .map_err(io_err(&retry))?;
        give_to_spool_owner(&self.spool, &retry);
        let mut target = retry.join(format!("{id}{ENTRY_EXT}"));
        let mut n = 0u32;
        while target.exists() {
            n += 1;
            target = retry.join(format!("{id}-{n}{ENTRY_EXT}"));
        }
        let from = self.entry_path(&id);
        fs::rename(&from, &target).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => self.missing(&id),
            _ => io_err(&from)(e),
        })?;
        sync_dir(&retry)?;
        remove_if_there(&self.reason_path(&id))?;
        sync_dir(&self.dead_dir())?;
        Ok(letter)
    }

    /// Hands every readable dead letter back; returns those handed back and those skipped
    /// because they are damaged.
    pub fn retry_all(&self) -> Result<(Vec<DeadLetter>, Vec<DeadLetter>), SpoolError> {
        let (mut retried, mut damaged) = (Vec::new(), Vec::new());
        for letter in self.list()? {
            if letter.damaged.is_some() {
                damaged.push(letter);
                continue;
            }
            match self.retry(&letter.id) {
                Ok(letter) => retried.push(letter),
                // Gone meanwhile (another `retry` or `drop`): nothing to hand back.
                Err(SpoolError::NoSuchDeadLetter { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok((retried, damaged))
    }

    /// Deletes one dead letter and its reason; returns its id.
    pub fn drop(&self, id: &str) -> Result<String, SpoolError> {
        let id = self.find(id)?;
        let path = self.entry_path(&id);
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(self.missing(&id)),
            Err(e) => return Err(io_err(&path)(e)),
        }
        remove_if_there(&self.reason_path(&id))?;
        sync_dir(&self.dead_dir())?;
        Ok(id)
    }

    /// Deletes every dead letter, and reasons whose entry is gone; returns the ids deleted.
    pub fn drop_all(&self) -> Result<Vec<String>, SpoolError> {
        let mut dropped = Vec::new();
        for id in self.ids()? {
            match self.drop(&id) {
                Ok(id) => dropped.push(id),
                Err(SpoolError::NoSuchDeadLetter { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        let dead = self.dead_dir();
        if let Ok(items) = fs::read_dir(&dead) {
            for item in items.filter_map(Result::ok) {
                let path = item.path();
                if path.extension().is_some_and(|x| x == "reason")
                    && !path.with_extension("req").exists()
                {
                    remove_if_there(&path)?;
                }
            }
        }
        Ok(dropped)
    }

    /// The ids in `dead/`, sorted.
    fn ids(&self) -> Result<Vec<String>, SpoolError> {
        let dead = self.dead_dir();
        let items = match fs::read_dir(&dead) {
            Ok(items) => items,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_err(&dead)(e)),
        };
        let mut ids = Vec::new();
        for item in items {
            let item = item.map_err(io_err(&dead))?;
            if let Some(id) = item
                .file_name()
                .to_str()
                .and_then(|n| n.strip_suffix(ENTRY_EXT))
                .filter(|id| valid_id(id))
            {
                ids.push(id.to_owned());
            }
        }
        ids.sort();
        Ok(ids)
    }

    /// The id of an existing dead letter: `id` as listed, or its number without the zeros.
    fn find(&self, id: &str) -> Result<String, SpoolError> {
        let given = id.trim();
        let given = given.strip_suffix(ENTRY_EXT).unwrap_or(given);
        let (number, suffix) = match given.split_once('-') {
            Some((number, suffix)) => (number, Some(suffix)),
            None => (given, None),
        };
        let padded = match number.parse::<u64>() {
            Ok(n) if number.bytes().all(|b| b.is_ascii_digit()) => {
                format!("{n:0width$}", width = SEQ_DIGITS)
            }
            _ => return Err(self.missing(id)),
        };
        let id_found = match suffix {
            Some(s) => format!("{padded}-{s}"),
            None => padded,
        };
        if !valid_id(&id_found) || !self.entry_path(&id_found).is_file() {
            return Err(self.missing(id));
        }
        Ok(id_found)
    }

    fn missing(&self, id: &str) -> SpoolError {
        SpoolError::NoSuchDeadLetter {
            id: id.to_owned(),
            dir: self.dead_dir(),
        }
    }

    fn entry_path(&self, id: &str) -> PathBuf {
        self.dead_dir().join(format!("{id}{ENTRY_EXT}"))
    }

    fn reason_path(&self, id: &str) -> PathBuf {
        self.dead_dir().join(format!("{id}.reason"))
    }

    /// One dead letter, or `None` if it is gone.
    fn read(&self, id: &str) -> Result<Option<DeadLetter>, SpoolError> {
        let path = self.entry_path(id);
        let (data, meta) = match fs::read(&path).and_then(|d| Ok((d, fs::metadata(&path)?))) {
            Ok(found) => found,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err(&path)(e)),
        };
        let reason_path = self.reason_path(id);
        let reason = match fs::read(&reason_path) {
            Ok(text) => Some(clean(&String::from_utf8_lossy(&text))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(io_err(&reason_path)(e)),
        };
        let mut letter = DeadLetter {
            id: id.to_owned(),
            bytes: data.len() as u64,
            spooled_at: unix_secs(meta.modified().ok()),
            dead_at: unix_secs(fs::metadata(&reason_path).and_then(|m| m.modified()).ok()),
            path: None,
            tenant: None,
            app: None,
            reason,
            damaged: None,
        };
        match decode(data) {
            Ok(req) => {
                let header = |name: &str| {
                    req.headers
                        .iter()
                        .find(|(k, _)| k.eq_ignore_ascii_case(name))
                        .map(|(_, v)| v.as_str())
                };
                let (route, query) = match req.path_and_query.split_once('?') {
                    Some((route, query)) => (route, Some(query)),
                    None => (req.path_and_query.as_str(), None),
                };
                letter.app = if route == "/push.v1.PusherService/Push" {
                    let gzip = header("content-encoding")
                        .is_some_and(|v| v.trim().eq_ignore_ascii_case("gzip"));
                    crate::node::ingest::labels::push_v1_app(
                        &req.body,
                        header("content-type").unwrap_or(""),
                        gzip,
                    )
                } else {
                    form_urlencoded::parse(query.unwrap_or("").as_bytes())
                        .find(|(k, _)| k == "name")
                        .map(|(_, v)| v.split('{').next().unwrap_or("").to_owned())
                }
                .map(|app| clean(&app))
                .filter(|app| !app.is_empty());
                letter.tenant = header(crate::node::ingest::TENANT_HEADER).map(clean);
                letter.path = Some(clean(route));
            }
            Err(reason) => letter.damaged = Some(reason),
        }
        Ok(Some(letter))
    }
}

/// Ids are the names the spool gives: digits, optionally `-<digits>`. Nothing else reaches a
/// path, so an id can't point outside `dead/`.
fn valid_id(id: &str) -> bool {
    let (number, suffix) = match id.split_once('-') {
        Some((number, suffix)) => (number, Some(suffix)),
        None => (id, None),
    };
    number.len() == SEQ_DIGITS
        && number.bytes().all(|b| b.is_ascii_digit())
        && suffix.is_none_or(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
}

fn unix_secs(t: Option<SystemTime>) -> Option<u64> {
    Some(t?.duration_since(UNIX_EPOCH).ok()?.as_secs())
}

/// One line of printable text: control characters become spaces (a terminal shows no escape
/// sequence from a file), trimmed and bounded.
fn clean(text: &str) -> String {
    let line: String = text
        .trim()
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(MAX_REASON_CHARS)
        .collect();
    line
}

fn remove_if_there(path: &Path) -> Result<(), SpoolError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err(path)(e)),
    }
}

/// Run as root (`sudo pyrogate spool dead retry`), the command would leave `retry/` owned by
/// root, mode 0700, where the node's user can't read it: hand it to the spool's owner.
fn give_to_spool_owner(spool: &Path, dir: &Path) {
    use std::os::unix::fs::MetadataExt as _;
    let (Ok(owner), Ok(now)) = (fs::metadata(spool), fs::metadata(dir)) else {
        return;
    };
    if (owner.uid(), owner.gid()) == (now.uid(), now.gid()) {
        return;
    }
    if let Err(e) = std::os::unix::fs::chown(dir, Some(owner.uid()), Some(owner.gid())) {
        tracing::warn!(
            dir = %dir.display(),
            error = %e,
            "can't give the retry directory to the spool's owner; the node may not be able to read it"
        );
    }
}
