//! Single sign-on on PostgreSQL: sign-ins waiting for the provider's answer, and users keyed
//! by (issuer, subject).

use super::ops::{get_user, insert_user, lock};
use super::*;

impl PgStore {
    pub async fn begin_sso(&self, p: PendingSso) -> Result<()> {
        let client = self.client().await?;
        let waiting: i64 = client
            .query_one("SELECT COUNT(*) FROM sso_logins", &[])
            .await?
            .try_get(0)?;
        if waiting >= MAX_PENDING_SSO {
            return Err(StoreError::Invalid(TOO_MANY_PENDING_SSO));
        }
        client
            .execute(
                "INSERT INTO sso_logins (state, browser, nonce, verifier, next, expires_at)
                 VALUES ($1, $2, $3, $4, $5, $6)",
                &[
                    &p.state,
                    &p.browser,
                    &p.nonce,
                    &p.verifier,
                    &p.next,
                    &(p.expires_at as i64),
                ],
            )
            .await?;
        Ok(())
    }

    pub async fn take_sso(&self, state: &str, now: u64) -> Result<Option<PendingSso>> {
        let row = self
            .client()
            .await?
            .query_opt(
                "DELETE FROM sso_logins WHERE state = $1
                 RETURNING state, browser, nonce, verifier, next, expires_at",
                &[&state],
            )
            .await?;
        let Some(r) = row else { return Ok(None) };
        let pending = PendingSso {
            state: r.try_get(0)?,
            browser: r.try_get(1)?,
            nonce: r.try_get(2)?,
            verifier: r.try_get(3)?,
            next: r.try_get(4)?,
            expires_at: r.try_get::<_, i64>(5)?.max(0) as u64,
        };
        Ok(Some(pending).filter(|p| p.expires_at > now))
    }

    pub async fn sso_sign_in(
        &self,
        identity: SsoIdentity,
        allow_sign_up: bool,
        now: u64,
    ) -> Result<SsoOutcome> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        lock(&tx, LOCK_USERS).await?;
        let found = tx
            .query_opt(
                "SELECT id FROM users WHERE sso_issuer = $1 AND sso_subject = $2",
                &[&identity.link.issuer, &identity.link.subject],
            )
            .await?;
        let id: i64 = match found {
            Some(row) => row.try_get(0)?,
            None if !allow_sign_up => return Ok(SsoOutcome::Unknown),
            None => {
                let mut created = None;
                for name in super::super::sso_names(&identity) {
                    let taken = tx
                        .query_opt(
                            "SELECT 1 FROM users WHERE lower(name) = lower($1)",
                            &[&name],
                        )
                        .await?;
                    if taken.is_some() {
                        continue;
                    }
                    let new = NewUser {
                        name,
                        email: identity.email.clone(),
                        full_name: identity.full_name.clone(),
                        password_hash: NO_PASSWORD.into(),
                        role: identity.role,
                        sso: Some(identity.link.clone()),
                    };
                    // Taken and look-alike names are found before the insert, so they fail
                    // without aborting the transaction.
                    match insert_user(&tx, &new, now).await {
                        Ok(user) => {
                            created = Some(user.id);
                            break;
                        }
                        Err(StoreError::Conflict(_)) => continue,
                        Err(other) => return Err(other),
                    }
                }
                created.ok_or(StoreError::Conflict(
                    "the user name the provider gives is taken by another user",
                ))?
            }
        };
        let user = get_user(&tx, id).await?;
        if user.is_disabled {
            tx.commit().await?;
            return Ok(SsoOutcome::Disabled(user));
        }
        let groups = json_list(&identity.groups);
        tx.execute(
            "UPDATE users SET role = $2, email = COALESCE($3, email), full_name = COALESCE($4, full_name),
                sso_groups = $5, updated_at = $6 WHERE id = $1",
            &[
                &id,
                &identity.role.as_str(),
                &identity.email,
                &identity.full_name,
                &groups,
                &(now as i64),
            ],
        )
        .await?;
        let user = get_user(&tx, id).await?;
        tx.commit().await?;
        Ok(SsoOutcome::SignedIn(user))
    }
}
