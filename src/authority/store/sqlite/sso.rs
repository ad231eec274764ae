//! Single sign-on: sign-ins waiting for the provider's answer, and users keyed by (issuer,
//! subject).

use super::*;

pub fn begin_sso(conn: &Connection, p: &PendingSso) -> Result<()> {
    let waiting: i64 = conn.query_row("SELECT COUNT(*) FROM sso_logins", [], |r| r.get(0))?;
    if waiting >= MAX_PENDING_SSO {
        return Err(StoreError::Invalid(TOO_MANY_PENDING_SSO));
    }
    conn.execute(
        "INSERT INTO sso_logins (state, browser, nonce, verifier, next, expires_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![
            p.state,
            p.browser,
            p.nonce,
            p.verifier,
            p.next,
            p.expires_at as i64
        ],
    )?;
    Ok(())
}

pub fn take_sso(conn: &Connection, state: &str, now: u64) -> Result<Option<PendingSso>> {
    let found = conn
        .query_row(
            "DELETE FROM sso_logins WHERE state = ?1
             RETURNING state, browser, nonce, verifier, next, expires_at",
            [state],
            |r| {
                Ok(PendingSso {
                    state: r.get(0)?,
                    browser: r.get(1)?,
                    nonce: r.get(2)?,
                    verifier: r.get(3)?,
                    next: r.get(4)?,
                    expires_at: r.get::<_, i64>(5)?.max(0) as u64,
                })
            },
        )
        .optional()?;
    Ok(found.filter(|p| p.expires_at > now))
}

pub fn prune_sso(conn: &Connection, now: u64) -> Result<()> {
    conn.execute(
        "DELETE FROM sso_logins WHERE expires_at <= ?1",
        [now as i64],
    )?;
    Ok(())
}

fn find_sso_user(conn: &Connection, link: &SsoLink) -> Result<Option<i64>> {
    Ok(conn
        .query_row(
            "SELECT id FROM users WHERE sso_issuer = ?1 AND sso_subject = ?2",
            params![link.issuer, link.subject],
            |r| r.get(0),
        )
        .optional()?)
}

pub fn sso_sign_in(
    conn: &Connection,
    identity: &SsoIdentity,
    allow_sign_up: bool,
    now: u64,
) -> Result<SsoOutcome> {
    let groups = serde_json::to_string(&identity.groups).unwrap_or_else(|_| "[]".into());
    let id = match find_sso_user(conn, &identity.link)? {
        Some(id) => id,
        None if !allow_sign_up => return Ok(SsoOutcome::Unknown),
        None => {
            let mut created = None;
            for name in super::super::sso_names(identity) {
                let new = NewUser {
                    name,
                    email: identity.email.clone(),
                    full_name: identity.full_name.clone(),
                    password_hash: NO_PASSWORD.into(),
                    role: identity.role,
                    sso: Some(identity.link.clone()),
                };
                match create_user(conn, &new, now) {
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
    let user = get_user(conn, id)?;
    if user.is_disabled {
        return Ok(SsoOutcome::Disabled(user));
    }
    conn.execute(
        "UPDATE users SET role = ?2, email = COALESCE(?3, email), full_name = COALESCE(?4, full_name),
            sso_groups = ?5, updated_at = ?6 WHERE id = ?1",
        params![
            id,
            identity.role.as_str(),
            identity.email,
            identity.full_name,
            groups,
            now as i64
        ],
    )?;
    Ok(SsoOutcome::SignedIn(get_user(conn, id)?))
}
