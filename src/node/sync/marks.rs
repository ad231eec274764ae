//! High-water marks: the highest key-set and revocation-list versions this node has ever
//! accepted, with their signed `iat`, kept in a small file of the node's own beside the cache
//! (`<storage-path>/high-water-marks.json`, 0600, written atomically).
//!
//! The cache is re-verified at start-up, which stops forged documents but not authentic old
//! ones: a restored volume snapshot, a cache copied from another node or a disk error can put
//! back a chain or a list the node has since moved past. A cache below the marks is such a
//! rollback, and the node does not start from it. The marks only ever move up, and only with
//! what the node accepted; a whole snapshot (marks included) is caught by `sync.max-staleness`
//! instead, and whoever can write the node's files can also replace its binary.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The marks file, beside the cache directory rather than in it.
pub(super) const MARKS_FILE: &str = "high-water-marks.json";

/// Where the marks of the node caching in `cache_dir` live.
pub(super) fn marks_path(cache_dir: &Path) -> PathBuf {
    cache_dir.parent().unwrap_or(cache_dir).join(MARKS_FILE)
}

/// A signed document's version and `iat`, ordered by version first.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Mark {
    pub ver: u64,
    pub iat: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(super) struct Marks {
    #[serde(default)]
    pub key_set: Mark,
    #[serde(default)]
    pub revocations: Mark,
}

impl Marks {
    /// The marks on disk: `None` for a node that has none yet (a fresh node, or one upgraded
    /// from a version without them), an error for a file that exists but can't be read.
    pub fn read(path: &Path) -> Result<Option<Marks>, String> {
        match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| format!("{} is damaged: {e}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(format!("can't read {}: {e}", path.display())),
        }
    }

    /// Writes the marks through a synced temporary file, a rename and a synced directory.
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        let text = serde_json::to_vec(self).map_err(std::io::Error::other)?;
        crate::edge::files::write_atomic(path, &text, 0o600)
    }

    /// These marks raised to `other`, field by field.
    pub fn max(self, other: Marks) -> Marks {
        Marks {
            key_set: self.key_set.max(other.key_set),
            revocations: self.revocations.max(other.revocations),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_round_trip_private_and_only_move_up() {
        let dir = tempfile::tempdir().unwrap();
        let path = marks_path(&dir.path().join("cache"));
        assert_eq!(path, dir.path().join(MARKS_FILE));
        assert_eq!(Marks::read(&path), Ok(None));
        let marks = Marks {
            key_set: Mark { ver: 3, iat: 10 },
            revocations: Mark { ver: 7, iat: 20 },
        };
        marks.write(&path).unwrap();
        assert_eq!(Marks::read(&path), Ok(Some(marks)));
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);

        let older = Marks {
            key_set: Mark { ver: 2, iat: 99 },
            revocations: Mark { ver: 7, iat: 30 },
        };
        let raised = marks.max(older);
        assert_eq!(raised.key_set, Mark { ver: 3, iat: 10 });
        assert_eq!(raised.revocations, Mark { ver: 7, iat: 30 });

        std::fs::write(&path, b"{\"keySet\":").unwrap();
        assert!(Marks::read(&path).unwrap_err().contains("damaged"));
    }
}
