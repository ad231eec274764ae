//! The key-set half of the sync loop: accepting a signed key set only when it chains to what
//! the node trusts ([`crate::core::keyset`]), keeping and replaying the chain in the cache, and
//! re-checking the revocation list when the keys change.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Context as _;
use axum::http::StatusCode;

use super::marks::{self, Mark, Marks};
use super::{CHAIN_FILE, Chain, KEYSET_PATH, LIST_FILE, MAX_CHAIN, Syncer};
use crate::core::error::VerifyError;
use crate::core::jwk::KeySet;
use crate::core::keyset::{self, KeySetError, Trust};
use crate::core::revocation::RevocationList;

impl Syncer {
    /// Replays the cached chain from the trust anchor, then the cached list against it, and
    /// puts both in force only if the cache is whole, consistent and not below the marks.
    pub(super) fn load_cache(&self, cache_dir: &Path) {
        let marks_path = marks::marks_path(cache_dir);
        let marks = Marks::read(&marks_path).map(Option::unwrap_or_default);
        match &marks {
            Ok(marks) => *self.marks.lock().unwrap_or_else(|e| e.into_inner()) = *marks,
            Err(why) => tracing::error!(
                reason = %why,
                "the high-water marks can't be read; they are rewritten from the authority's next documents"
            ),
        }
        if self.config.pins.is_empty() {
            // Without a pin there is nothing to replay the chain from: whoever can write the
            // cache could plant a key set. Such a node waits for the (TLS-verified) authority.
            tracing::warn!(
                "no authority.trusted-keys pinned: not starting from the cached key set; pin the authority's key to start from the cache while it is down"
            );
            return;
        }
        let chain_path = cache_dir.join(CHAIN_FILE);
        let documents: Vec<String> = match std::fs::read_to_string(&chain_path) {
            Ok(text) => match serde_json::from_str(&text) {
                Ok(documents) => documents,
                Err(e) => {
                    return self.withhold(
                        Chain::default(),
                        format!("{} is damaged ({e})", chain_path.display()),
                    );
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => {
                let why = format!("can't read {} ({e})", chain_path.display());
                return self.withhold(Chain::default(), why);
            }
        };
        let (chain, broken) = self.replay(&documents);
        if let Some((i, err)) = broken {
            return self.withhold(
                chain,
                format!(
                    "document {} of {} in {} does not verify from the trust anchor ({err}); not falling back to an older key set",
                    i + 1,
                    documents.len(),
                    chain_path.display()
                ),
            );
        }
        let Some((claims, keys)) = &chain.in_force else {
            // No cache yet: wait for the authority, as a fresh node does.
            if let Ok(marks) = &marks
                && marks.key_set.ver > 0
            {
                let why = format!(
                    "{} is missing, but this node has accepted key set version {} before",
                    chain_path.display(),
                    marks.key_set.ver
                );
                self.withhold(chain, why);
            }
            return;
        };
        let chain_mark = Mark {
            ver: claims.ver,
            iat: claims.iat,
        };
        let marks = match marks {
            Ok(marks) => marks,
            Err(why) => return self.withhold(chain, why),
        };
        let list_path = cache_dir.join(LIST_FILE);
        let list = match std::fs::read_to_string(&list_path) {
            Ok(text) => match self.check_cached_list(&text, claims.ver, keys, &list_path) {
                Ok(list) => Some((list, text)),
                Err(why) => return self.withhold(chain, why),
            },
            // Lost: the keys go in force, and the node waits for a verified list.
            Err(_) => None,
        };
        if chain_mark < marks.key_set {
            let why = rolled_back(
                &chain_path,
                "key set",
                chain_mark,
                marks.key_set,
                &marks_path,
            );
            return self.withhold(chain, why);
        }
        if let Some((list, _)) = &list {
            let list_mark = Mark {
                ver: list.ver,
                iat: list.iat,
            };
            if list_mark < marks.revocations {
                let why = rolled_back(
                    &list_path,
                    "revocation list",
                    list_mark,
                    marks.revocations,
                    &marks_path,
                );
                return self.withhold(chain, why);
            }
        }
        self.put_in_force(chain);
        // Only what is in force raises the marks.
        let list_mark = match &list {
            Some((list, text)) if self.install_list(list, text) => Some(Mark {
                ver: list.ver,
                iat: list.iat,
            }),
            Some(_) => {
                tracing::error!(file = %list_path.display(), "the cached revocation list was not put in force; not ready until the authority answers");
                None
            }
            None => None,
        };
        self.raise_marks(Marks {
            key_set: chain_mark,
            revocations: list_mark.unwrap_or_default(),
        });
        tracing::info!(
            dir = %cache_dir.display(),
            key_set = chain_mark.ver,
            revocations = list_mark.map(|m| m.ver),
            "loaded the cached key set and revocation list"
        );
    }

    /// Verifies `documents` one after the other from the trust anchor. Returns the chain up to
    /// the first that does not verify, and that one's index and error.
    fn replay(&self, documents: &[String]) -> (Chain, Option<(usize, KeySetError)>) {
        let mut chain = Chain::default();
        for (i, doc) in documents.iter().enumerate() {
            match keyset::verify(doc, &self.trust(&chain), &self.config.issuer) {
                Ok(accepted) if accepted.changed => {
                    chain.in_force = Some((accepted.claims, accepted.keys));
                    chain.documents.push(doc.clone());
                }
                Ok(_) => {}
                Err(err) => return (chain, Some((i, err))),
            }
        }
        (chain, None)
    }

    /// The cached list must verify with the cached chain's keys and belong to no newer key set.
    fn check_cached_list(
        &self,
        text: &str,
        chain_version: u64,
        keys: &KeySet,
        path: &Path,
    ) -> Result<RevocationList, String> {
        let list = RevocationList::verify(text, keys, &self.config.issuer).map_err(|e| match e {
            VerifyError::UnknownKey => format!(
                "{} is signed by a key the cached key set (version {chain_version}) does not hold: the list and the chain don't belong together",
                path.display()
            ),
            other => format!("{} does not verify ({other})", path.display()),
        })?;
        match list.ksv {
            Some(ksv) if ksv > chain_version => Err(format!(
                "{} (version {}) was signed for key set version {ksv}, but the cached chain holds only version {chain_version}: the list and the chain don't belong together",
                path.display(),
                list.ver
            )),
            _ => Ok(list),
        }
    }

    /// Keeps `chain` only as what the authority's next key set must chain to: no keys in the
    /// verifier, no list, not ready until the authority answers.
    fn withhold(&self, mut chain: Chain, why: String) {
        chain.withheld = true;
        *self.trusted.lock().unwrap_or_else(|e| e.into_inner()) = chain;
        tracing::error!(
            reason = %why,
            "not starting from the cache: this node holds no keys and is not ready until the authority answers"
        );
        *self
            .status
            .cache_refusal
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(why);
    }

    /// A verified list from the authority is in force again after a withheld cache.
    pub(super) fn cache_recovered(&self) {
        let mut refusal = self
            .status
            .cache_refusal
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if refusal.take().is_some() {
            tracing::info!(
                "the authority's key set and revocation list are in force; the cache is current again"
            );
        }
    }

    /// What a document must be signed by, given `chain`.
    fn trust<'a>(&'a self, chain: &'a Chain) -> Trust<'a> {
        match &chain.in_force {
            Some((claims, keys)) => Trust::InForce {
                ver: claims.ver,
                keys,
                claims,
            },
            None if self.config.first_use && self.config.pins.is_empty() => Trust::FirstUse,
            None => Trust::Pinned(&self.config.pins),
        }
    }

    /// Installs the key set of `chain` in the verifier.
    fn put_in_force(&self, mut chain: Chain) {
        chain.withheld = false;
        if let Some((claims, keys)) = &chain.in_force {
            self.status
                .keyset_version
                .store(claims.ver, Ordering::Relaxed);
            self.metrics.keyset_version.set(claims.ver);
            self.install_keys(keys.clone());
        }
        *self.trusted.lock().unwrap_or_else(|e| e.into_inner()) = chain;
    }

    /// Verifies `doc` against the key set in force (or the trust anchor), refuses it below the
    /// high-water mark, and installs it. Returns whether the chain grew (to be persisted).
    /// A document that confirms a withheld chain puts it in force.
    fn accept_keyset(&self, doc: &str) -> Result<bool, KeySetError> {
        let mut chain = self.trusted.lock().unwrap_or_else(|e| e.into_inner());
        let accepted = keyset::verify(doc, &self.trust(&chain), &self.config.issuer)?;
        let floor = self.marks().key_set.ver;
        if accepted.claims.ver < floor {
            return Err(KeySetError::Rollback {
                offered: accepted.claims.ver,
                current: floor,
            });
        }
        if !accepted.changed && !chain.withheld {
            return Ok(false);
        }
        if accepted.changed {
            chain.in_force = Some((accepted.claims, accepted.keys));
            chain.documents.push(doc.to_owned());
            if chain.documents.len() > MAX_CHAIN {
                let drop = chain.documents.len() - MAX_CHAIN;
                chain.documents.drain(..drop);
            }
        } else {
            tracing::info!(
                version = accepted.claims.ver,
                "the authority confirmed the key set of the cache"
            );
        }
        let confirmed = std::mem::take(&mut *chain);
        drop(chain);
        self.put_in_force(confirmed);
        self.recheck_list();
        Ok(accepted.changed)
    }

    /// After a key-set change: the list in force must still verify, or it is dropped from the
    /// status (so the next genuine list is taken whatever its version) and the node waits for
    /// a new one.
    fn recheck_list(&self) {
        let text = self
            .list_text
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let Some(text) = text else { return };
        if RevocationList::verify(&text, &self.verifier.keys(), &self.config.issuer).is_err() {
            tracing::info!(
                "the revocation list in force is not signed by the new key set; waiting for a new one"
            );
            // `list_version` stays: it is the floor a new list must reach.
            *self.list_text.lock().unwrap_or_else(|e| e.into_inner()) = None;
            self.status.list_issued_at.store(0, Ordering::Relaxed);
            self.status.unverified.store(true, Ordering::Relaxed);
        }
    }

    fn refused(&self, err: &KeySetError) {
        self.metrics.keyset_refused.inc();
        let text = err.to_string();
        // `/ready` shows the last refusal; logging only when it changes logs each reason once.
        let mut last = self
            .status
            .keyset_refusal
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if last.as_deref() != Some(text.as_str()) {
            tracing::error!(error = %text, "refused the key set offered by the authority; keeping the one in force");
            *last = Some(text);
        }
    }

    pub(super) async fn fetch_keyset(&self, base: &str, cache_dir: &Path) -> anyhow::Result<()> {
        let url = format!("{base}{KEYSET_PATH}");
        let (status, _, body) = self.get(&url, None, Duration::from_secs(10)).await?;
        if status != StatusCode::OK {
            anyhow::bail!("GET {url}: {status}");
        }
        let text = std::str::from_utf8(&body).context("the key-set document is not UTF-8")?;
        match self.accept_keyset(text) {
            Ok(changed) => {
                if changed {
                    self.persist_chain(cache_dir)?;
                    tracing::info!(
                        version = self.status.keyset_version.load(Ordering::Relaxed),
                        keys = self.verifier.keys().len(),
                        "key set updated"
                    );
                }
                *self
                    .status
                    .keyset_refusal
                    .lock()
                    .unwrap_or_else(|e| e.into_inner()) = None;
                self.contacted();
                Ok(())
            }
            Err(err) => {
                self.refused(&err);
                Err(anyhow::anyhow!("GET {url}: {err}"))
            }
        }
    }

    /// Writes the chain to the cache, then raises the key-set mark to its newest document.
    fn persist_chain(&self, cache_dir: &Path) -> anyhow::Result<()> {
        let (text, newest) = {
            let chain = self.trusted.lock().unwrap_or_else(|e| e.into_inner());
            let newest = chain.in_force.as_ref().map(|(claims, _)| Mark {
                ver: claims.ver,
                iat: claims.iat,
            });
            (serde_json::to_string(&chain.documents)?, newest)
        };
        let path = cache_dir.join(CHAIN_FILE);
        crate::edge::files::write_atomic(&path, text.as_bytes(), 0o644)
            .with_context(|| format!("writing {}", path.display()))?;
        if let Some(key_set) = newest {
            self.raise_marks(Marks {
                key_set,
                ..Marks::default()
            });
        }
        Ok(())
    }
}

/// Why a cached document below the marks is not put in force.
fn rolled_back(file: &Path, what: &str, cached: Mark, mark: Mark, marks: &Path) -> String {
    format!(
        "{} holds {what} version {} (signed at {}), but this node has accepted version {} (signed at {}) before ({}): the cache was rolled back (a restored snapshot, a copied cache, a disk error?)",
        file.display(),
        cached.ver,
        cached.iat,
        mark.ver,
        mark.iat,
        marks.display()
    )
}
