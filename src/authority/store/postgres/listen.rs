//! Change notifications between replicas. Every counter move ([`super::ops`]'s `bump`: a
//! deleted key, a new key set, a pruned list) sends `pg_notify('pyrogate', counter)` in its
//! transaction, which PostgreSQL delivers at commit and never for a rollback. Each replica
//! keeps one connection of its own, outside the pool, in `LISTEN pyrogate`, and wakes its
//! ticker for every notification, so a held long-poll on replica B answers a delete made on
//! replica A as soon as it commits.
//!
//! Notifications sent while the connection is down are lost: after every (re)connect the
//! ticker is woken once to catch up, and it re-reads the store every second anyway — the
//! notification makes a change fast, the re-read makes it certain.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::Notify;
use tokio_postgres::{AsyncMessage, Client, Connection};

use super::*;

/// The channel changes are announced on.
pub(super) const CHANNEL: &str = "pyrogate";

/// The first wait before connecting again; it doubles up to [`MAX_RETRY`].
const FIRST_RETRY: Duration = Duration::from_millis(250);
const MAX_RETRY: Duration = Duration::from_secs(10);

impl PgStore {
    /// Wakes `changed` for every change committed through any replica (and once after each
    /// (re)connect), until `stop` completes. Reconnects by itself with backoff; a lost
    /// connection is logged once, its return once.
    pub async fn listen(&self, changed: Arc<Notify>, stop: impl Future<Output = ()>) {
        tokio::pin!(stop);
        let mut retry = FIRST_RETRY;
        let mut failing = false;
        loop {
            let mut connected = false;
            let session = self.listen_once(&changed, &mut connected, &mut failing);
            let ended = tokio::select! {
                () = &mut stop => return,
                ended = session => ended,
            };
            if connected {
                retry = FIRST_RETRY;
            }
            if !failing {
                failing = true;
                tracing::warn!(
                    database = %self.described,
                    error = %ended.err().map_or_else(|| "closed".to_owned(), |e| e.to_string()),
                    "lost the connection that hears other replicas' changes; re-reading the database every second until it is back"
                );
            }
            tokio::select! {
                () = &mut stop => return,
                () = tokio::time::sleep(retry) => {}
            }
            retry = (retry * 2).min(MAX_RETRY);
        }
    }

    /// One connection's life: connect, `LISTEN`, relay notifications until it fails.
    async fn listen_once(
        &self,
        changed: &Notify,
        connected: &mut bool,
        failing: &mut bool,
    ) -> Result<()> {
        let c = &self.connector;
        match &c.tls {
            None => {
                let (client, connection) = c.config.connect(tokio_postgres::NoTls).await?;
                relay(
                    client,
                    connection,
                    changed,
                    connected,
                    failing,
                    &self.described,
                )
                .await
            }
            Some(tls) => {
                let (client, connection) = c.config.connect(tls.clone()).await?;
                relay(
                    client,
                    connection,
                    changed,
                    connected,
                    failing,
                    &self.described,
                )
                .await
            }
        }
    }
}

/// Sends `LISTEN` on `client` while driving `connection`, then wakes `changed` for each
/// notification. Returns when the connection ends.
async fn relay<S, T>(
    client: Client,
    mut connection: Connection<S, T>,
    changed: &Notify,
    connected: &mut bool,
    failing: &mut bool,
    described: &str,
) -> Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
    T: AsyncRead + AsyncWrite + Unpin,
{
    let sql = format!("LISTEN {CHANNEL}");
    let listen = client.batch_execute(&sql);
    tokio::pin!(listen);
    let mut listening = false;
    loop {
        tokio::select! {
            done = &mut listen, if !listening => {
                done?;
                listening = true;
                *connected = true;
                if std::mem::take(failing) {
                    tracing::info!(database = %described, "hearing other replicas' changes again");
                }
                // Whatever was announced while this connection was not listening is lost.
                changed.notify_one();
            }
            message = std::future::poll_fn(|cx| connection.poll_message(cx)) => match message {
                Some(Ok(AsyncMessage::Notification(_))) => changed.notify_one(),
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e.into()),
                None => return Ok(()),
            },
        }
    }
}
