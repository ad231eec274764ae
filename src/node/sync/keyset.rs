//! The key-set half of the sync loop: accepting a signed key set only when it chains to what
//! the node trusts ([`crate::core::keyset`]), keeping and replaying the chain in the cache, and
//! re-checking the revocation list when the keys change.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Context as _;
use axum::http::StatusCode;

use super::{CHAIN_FILE, KEYSET_PATH, LIST_FILE, MAX_CHAIN, Syncer};
use crate::core::keyset::{self, KeySetError, Trust};
use crate::core::revocation::RevocationList;

impl Syncer {
    /// Replays the cached chain from the trust anchor, then the cached list against it.
    pub(super) fn load_cache(&self, cache_dir: &Path) {
        if self.config.pins.is_empty() {
            // Without a pin there is nothing to replay the chain from: whoever can write the
            // cache could plant a key set. Such a node waits for the (TLS-verified) authority.
            tracing::warn!(
                "no authority.trusted-keys pinned: not starting from the cached key set; pin the authority's key to start from the cache while it is down"
            );
            return;
        }
        let chain: Vec<String> = match std::fs::read_to_string(cache_dir.join(CHAIN_FILE)) {
            Ok(text) => serde_json::from_str(&text).unwrap_or_else(|e| {
                tracing::warn!(error = %e, "ignoring an unreadable cached key-set chain");
                Vec::new()
            }),
            Err(_) => Vec::new(),
        };
        for (i, doc) in chain.iter().enumerate() {
            if let Err(err) = self.accept_keyset(doc) {
                tracing::warn!(
                    entry = i,
                    error = %err,
                    "the cached key-set chain does not follow from the trust anchor; discarding it from here"
                );
                break;
            }
        }
        if !self.status.keys_loaded.load(Ordering::Relaxed) {
            return;
        }
        let path = cache_dir.join(LIST_FILE);
        if let Ok(text) = std::fs::read_to_string(&path) {
            match RevocationList::verify(&text, &self.verifier.keys(), &self.config.issuer) {
                Ok(list) => {
                    self.install_list(&list, &text);
                    tracing::info!(dir = %cache_dir.display(), version = list.ver, "loaded the cached key set and revocation list");
                }
                Err(e) => {
                    tracing::warn!(error = %e, "ignoring a cached revocation list that does not verify")
                }
            }
        }
    }

    /// Verifies `doc` against the key set in force (or the trust anchor) and installs it.
    /// Returns whether the keys changed.
    fn accept_keyset(&self, doc: &str) -> Result<bool, KeySetError> {
        let mut chain = self.trusted.lock().unwrap_or_else(|e| e.into_inner());
        let accepted = {
            let trust = match &chain.in_force {
                Some((claims, keys)) => Trust::InForce {
                    ver: claims.ver,
                    keys,
                    claims,
                },
                None if !self.config.pins.is_empty() => Trust::Pinned(&self.config.pins),
                None if self.config.first_use => Trust::FirstUse,
                None => Trust::Pinned(&self.config.pins),
            };
            keyset::verify(doc, &trust, &self.config.issuer)?
        };
        if !accepted.changed {
            return Ok(false);
        }
        self.status
            .keyset_version
            .store(accepted.claims.ver, Ordering::Relaxed);
        self.metrics.keyset_version.set(accepted.claims.ver);
        self.install_keys(accepted.keys.clone());
        chain.in_force = Some((accepted.claims, accepted.keys));
        chain.documents.push(doc.to_owned());
        if chain.documents.len() > MAX_CHAIN {
            let drop = chain.documents.len() - MAX_CHAIN;
            chain.documents.drain(..drop);
        }
        drop(chain);
        self.recheck_list();
        Ok(true)
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

    fn persist_chain(&self, cache_dir: &Path) -> anyhow::Result<()> {
        let text = {
            let chain = self.trusted.lock().unwrap_or_else(|e| e.into_inner());
            serde_json::to_string(&chain.documents)?
        };
        let path = cache_dir.join(CHAIN_FILE);
        crate::edge::files::write_atomic(&path, text.as_bytes(), 0o644)
            .with_context(|| format!("writing {}", path.display()))
    }
}
