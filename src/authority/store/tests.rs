//! The store's suite. Every test in `suite!` runs against each backend on a fresh, empty
//! store, so both keep the same rules; backend-specific tests follow it.

use super::*;
use crate::core::limits::{KeyLimits, LimitEntry};

/// A fresh, empty store and what keeps it alive (its temp dir).
struct Fresh {
    store: Store,
    _guard: Box<dyn std::any::Any + Send>,
}

async fn sqlite() -> Fresh {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    Fresh {
        store,
        _guard: Box::new(dir),
    }
}

async fn postgres_url() -> String {
    super::postgres::testing::fresh_database().await
}

fn postgres_settings(url: &str) -> crate::config::PostgresSettings {
    crate::config::PostgresSettings {
        url: crate::core::token::Secret::new(url.to_owned()),
        password_file: None,
        tls: crate::config::ClientTls {
            peer: "database",
            ..Default::default()
        },
    }
}

async fn postgres() -> Fresh {
    let url = postgres_url().await;
    let store = Store::connect(&Database::Postgres(postgres_settings(&url)))
        .await
        .unwrap();
    Fresh {
        store,
        _guard: Box::new(()),
    }
}

/// Declares each test once per backend: `mod on_sqlite { #[tokio::test] async fn name() }`.
macro_rules! suite {
    ($($name:ident),* $(,)?) => {
        mod on_sqlite {
            $(
                #[tokio::test]
                async fn $name() {
                    let fresh = super::sqlite().await;
                    super::$name(&fresh.store).await;
                }
            )*
        }
        mod on_postgres {
            $(
                #[tokio::test]
                async fn $name() {
                    let fresh = super::postgres().await;
                    super::$name(&fresh.store).await;
                }
            )*
        }
    };
}

suite!(
    deleting_a_key_revokes_its_jti_and_bumps_the_version,
    live_key_names_are_unique,
    look_alike_key_names_are_refused,
    pruning_drops_expired_and_unpublished_entries,
    revoking_a_jti_deletes_its_key_or_lists_it_as_it_is,
    the_keyset_version_moves_with_the_published_kids_and_moves_the_list,
    users_keep_an_enabled_admin,
    disabling_or_deleting_a_user_revokes_their_keys_on_request,
    sessions_belong_to_one_enabled_user_until_they_expire,
    changing_a_password_ends_the_other_sessions,
    meta_is_set_once_and_audit_is_newest_first,
    a_keys_scopes_come_back_as_they_were_stored,
    node_keys_are_stored_with_their_role,
    a_report_is_applied_once_and_sums_across_reports_and_nodes,
    a_new_node_start_counts_again_from_seq_one,
    a_pending_sign_in_is_taken_once_and_only_before_it_expires,
    sso_users_are_keyed_by_issuer_and_subject_and_remapped_at_every_sign_in,
    sso_sign_up_off_admits_only_pre_created_identities_and_never_disabled_ones,
    limits_are_stored_changed_and_published_with_the_list_version,
    a_key_created_with_limits_moves_the_list_and_deleted_keys_leave_it,
    a_report_of_limited_pushes_marks_the_key_limited,
);

fn pending(state: &str, expires_at: u64) -> PendingSso {
    PendingSso {
        state: state.to_owned(),
        browser: "b".into(),
        nonce: "n".into(),
        verifier: "v".into(),
        next: "/settings".into(),
        expires_at,
    }
}

async fn a_pending_sign_in_is_taken_once_and_only_before_it_expires(s: &Store) {
    s.begin_sso(pending("s1", 1000)).await.unwrap();
    s.begin_sso(pending("s2", 1000)).await.unwrap();
    assert_eq!(
        s.take_sso("s1", 999).await.unwrap(),
        Some(pending("s1", 1000))
    );
    assert_eq!(s.take_sso("s1", 999).await.unwrap(), None, "single use");
    assert_eq!(s.take_sso("nope", 999).await.unwrap(), None);
    assert_eq!(s.take_sso("s2", 1000).await.unwrap(), None, "expired");
    s.begin_sso(pending("s3", 1000)).await.unwrap();
    s.prune_sessions(1000).await.unwrap();
    assert_eq!(s.take_sso("s3", 10).await.unwrap(), None, "pruned");
}

fn identity(sub: &str, name: &str, role: Role, groups: &[&str]) -> SsoIdentity {
    SsoIdentity {
        link: SsoLink {
            issuer: "https://idp.example".into(),
            subject: sub.to_owned(),
        },
        name: name.to_owned(),
        email: Some(format!("{name}@example.com")),
        full_name: None,
        role,
        groups: groups.iter().map(|g| g.to_string()).collect(),
    }
}

async fn sso_users_are_keyed_by_issuer_and_subject_and_remapped_at_every_sign_in(s: &Store) {
    s.create_user(user("alice", Role::Admin), 1).await.unwrap();
    let SsoOutcome::SignedIn(first) = s
        .sso_sign_in(
            identity("sub-1", "alice", Role::Admin, &["admins"]),
            true,
            10,
        )
        .await
        .unwrap()
    else {
        panic!("signed in")
    };
    // The name is taken by a local user: the new user gets a suffix, never the local account.
    assert_ne!(first.name, "alice");
    assert!(first.name.starts_with("alice-"), "{}", first.name);
    assert_eq!(first.sso_issuer.as_deref(), Some("https://idp.example"));
    assert_eq!(first.sso_groups, Some(vec!["admins".to_owned()]));
    assert_eq!(first.role, Role::Admin);
    // Same subject, new e-mail and groups: the same user, re-mapped.
    let mut again = identity("sub-1", "someone-else", Role::ReadOnly, &["devs"]);
    again.email = Some("new@example.com".into());
    let SsoOutcome::SignedIn(second) = s.sso_sign_in(again, true, 20).await.unwrap() else {
        panic!("signed in")
    };
    assert_eq!(second.id, first.id);
    assert_eq!(second.name, first.name);
    assert_eq!(second.role, Role::ReadOnly);
    assert_eq!(second.email.as_deref(), Some("new@example.com"));
    assert_eq!(second.sso_groups, Some(vec!["devs".to_owned()]));
    // Another subject with the same e-mail is another user.
    let SsoOutcome::SignedIn(other) = s
        .sso_sign_in(identity("sub-2", "bob", Role::Agent, &[]), true, 30)
        .await
        .unwrap()
    else {
        panic!("signed in")
    };
    assert_ne!(other.id, first.id);
    assert_eq!(s.list_users().await.unwrap().len(), 3);
    // SSO users have no password that matches anything.
    let (_, hash) = s.find_user_for_login("bob").await.unwrap().unwrap();
    assert_eq!(hash, NO_PASSWORD);
    let local = s.find_user_for_login("alice").await.unwrap().unwrap().0;
    assert_eq!(local.sso_issuer, None);
}

async fn sso_sign_up_off_admits_only_pre_created_identities_and_never_disabled_ones(s: &Store) {
    assert_eq!(
        s.sso_sign_in(identity("sub-1", "carol", Role::Admin, &[]), false, 10)
            .await
            .unwrap(),
        SsoOutcome::Unknown
    );
    let mut new = user("carol", Role::ReadOnly);
    new.password_hash = NO_PASSWORD.into();
    new.sso = Some(SsoLink {
        issuer: "https://idp.example".into(),
        subject: "sub-1".into(),
    });
    let created = s.create_user(new.clone(), 5).await.unwrap();
    new.name = "carol2".into();
    assert!(matches!(
        s.create_user(new, 5).await,
        Err(StoreError::Conflict(_))
    ));
    let SsoOutcome::SignedIn(signed) = s
        .sso_sign_in(
            identity("sub-1", "whatever", Role::Admin, &["a"]),
            false,
            10,
        )
        .await
        .unwrap()
    else {
        panic!("signed in")
    };
    assert_eq!((signed.id, signed.role), (created.id, Role::Admin));
    s.create_user(user("admin", Role::Admin), 1).await.unwrap();
    s.set_disabled(created.id, true, false, 20).await.unwrap();
    assert!(matches!(
        s.sso_sign_in(identity("sub-1", "whatever", Role::Admin, &[]), true, 30)
            .await
            .unwrap(),
        SsoOutcome::Disabled(_)
    ));
    // Nothing changed for the disabled user.
    assert_eq!(s.get_user(created.id).await.unwrap().role, Role::Admin);
}

fn key(name: &str, jti: &str) -> NewKey {
    NewKey {
        name: name.to_owned(),
        role: Role::Agent,
        jti: jti.to_owned(),
        kid: "k1".to_owned(),
        tenant: None,
        created_at: 100,
        expires_at: Some(1000),
        created_by: Some("user:admin".to_owned()),
        apps: None,
        cidrs: None,
        limits: None,
    }
}

fn report(node: &str, started_at: u64, seq: u64) -> crate::node::report::Report {
    crate::node::report::Report {
        node: node.to_owned(),
        version: "0.1.0".into(),
        started_at,
        seq,
        interval_seconds: 15,
        key_set_version: 2,
        revocations_version: 7,
        revocations_age_seconds: Some(3),
        stale: false,
        spool: crate::node::report::SpoolState {
            entries: 4,
            bytes: 400,
            oldest_seconds: 9,
            dead_letters: 1,
        },
        report_failures: 0,
        refusals: [("expired".to_owned(), 2)].into(),
        usage: vec![
            usage("jti-a", "agent-a", "checkout.cpu", 3, 50),
            usage("jti-a", "agent-a", "billing.cpu", 1, 60),
            usage("jti-b", "agent-b", "checkout.cpu", 2, 40),
        ],
    }
}

fn usage(jti: &str, key: &str, app: &str, pushes: u64, at: u64) -> crate::node::report::Usage {
    crate::node::report::Usage {
        jti: jti.into(),
        key: key.into(),
        app: app.into(),
        pushes,
        bytes: pushes * 100,
        refused: 0,
        limited: 0,
        last_push_at: at,
    }
}

fn ten_per_second() -> KeyLimits {
    KeyLimits {
        pushes_per_second: Some(10.0),
        burst_pushes: Some(20),
        bytes_per_second: Some(1_000_000),
        burst_bytes: Some(2_000_000),
    }
}

async fn limits_are_stored_changed_and_published_with_the_list_version(s: &Store) {
    let k = s.create_key(key("ci", "jti-1")).await.unwrap();
    s.create_key(key("other", "jti-2")).await.unwrap();
    assert_eq!(k.limits, None);
    assert!(s.snapshot("k1", None).await.unwrap().limits.is_empty());
    let v0 = s.revocations_version().await.unwrap();
    let (record, v1) = s
        .set_key_limits(k.id, Some(ten_per_second()), 200, "user:admin")
        .await
        .unwrap();
    assert_eq!(record.limits, Some(ten_per_second()));
    assert_eq!(v1, v0 + 1);
    let listed = s.list_keys().await.unwrap();
    assert_eq!(listed[0].limits, Some(ten_per_second()));
    assert_eq!(listed[1].limits, None);
    let snap = s.snapshot("k1", None).await.unwrap();
    assert_eq!(snap.version, v1);
    assert_eq!(
        snap.limits,
        vec![LimitEntry::new("jti-1", "ci", &ten_per_second())]
    );
    // Fractional rates come back as they were.
    let half = KeyLimits {
        pushes_per_second: Some(0.5),
        burst_pushes: Some(1),
        ..KeyLimits::default()
    };
    let (_, v2) = s
        .set_key_limits(k.id, Some(half), 201, "user:admin")
        .await
        .unwrap();
    assert_eq!(v2, v1 + 1);
    assert_eq!(
        s.snapshot("k1", None).await.unwrap().limits[0].limits(),
        half
    );
    // Removing the limit moves the version too, and the key leaves the section.
    let (record, v3) = s
        .set_key_limits(k.id, None, 202, "user:admin")
        .await
        .unwrap();
    assert_eq!((record.limits, v3), (None, v2 + 1));
    assert!(s.snapshot("k1", None).await.unwrap().limits.is_empty());
    assert!(matches!(
        s.set_key_limits(9999, None, 203, "user:admin").await,
        Err(StoreError::NotFound(_))
    ));
    let audit = s.list_audit(10).await.unwrap();
    assert_eq!(audit[0].action, "apikey.limits");
    assert_eq!(audit[0].target.as_deref(), Some("ci: no limit"));
    assert!(
        audit[2]
            .target
            .as_deref()
            .unwrap()
            .contains("10 pushes/s (burst 20)"),
        "{:?}",
        audit[2]
    );
    // A bare bump, for a change in the number of live nodes.
    assert_eq!(s.bump_revocations_version().await.unwrap(), v3 + 1);
}

async fn a_key_created_with_limits_moves_the_list_and_deleted_keys_leave_it(s: &Store) {
    let v0 = s.revocations_version().await.unwrap();
    let mut k = key("limited", "jti-1");
    k.limits = Some(ten_per_second());
    let record = s.create_key(k).await.unwrap();
    assert_eq!(record.limits, Some(ten_per_second()));
    assert_eq!(s.revocations_version().await.unwrap(), v0 + 1);
    assert_eq!(s.snapshot("k1", None).await.unwrap().limits.len(), 1);
    s.delete_key(record.id, 300, "user:admin").await.unwrap();
    assert!(s.snapshot("k1", None).await.unwrap().limits.is_empty());
}

async fn a_report_of_limited_pushes_marks_the_key_limited(s: &Store) {
    let k = s.create_key(key("agent-a", "jti-a")).await.unwrap();
    assert_eq!(k.last_limited_at, None);
    let mut r = report("node-1", 10, 1);
    r.usage[0].limited = 5;
    assert!(s.record_report(&r, 500).await.unwrap());
    let listed = s.list_keys().await.unwrap();
    assert_eq!(listed[0].last_limited_at, Some(500));
}

async fn node_keys_are_stored_with_their_role(s: &Store) {
    let mut k = key("ingest-1", "jti-node");
    k.role = Role::Node;
    s.create_key(k).await.unwrap();
    assert_eq!(s.list_keys().await.unwrap()[0].role, Role::Node);
}

async fn a_report_is_applied_once_and_sums_across_reports_and_nodes(s: &Store) {
    assert!(
        s.record_report(&report("ingest-1", 1000, 1), 2000)
            .await
            .unwrap()
    );
    // The same report again (its answer was lost): ignored.
    assert!(
        !s.record_report(&report("ingest-1", 1000, 1), 2001)
            .await
            .unwrap()
    );
    let mut second = report("ingest-1", 1000, 2);
    second.usage = vec![usage("jti-a", "agent-a", "checkout.cpu", 5, 70)];
    second.spool.entries = 0;
    assert!(s.record_report(&second, 2015).await.unwrap());
    // An older one arriving late: ignored too.
    assert!(
        !s.record_report(&report("ingest-1", 1000, 1), 2016)
            .await
            .unwrap()
    );
    let mut other = report("ingest-2", 1005, 1);
    other.usage = vec![usage("jti-b", "agent-b", "checkout.cpu", 1, 30)];
    assert!(s.record_report(&other, 2020).await.unwrap());

    let nodes = s.list_nodes().await.unwrap();
    assert_eq!(nodes.len(), 2);
    let one = &nodes[0];
    assert_eq!((one.name.as_str(), one.seq), ("ingest-1", 2));
    assert_eq!((one.first_seen_at, one.last_report_at), (2000, 2015));
    assert_eq!((one.spool_entries, one.dead_letters), (0, 1));
    assert_eq!(one.refusals.get("expired"), Some(&4));
    assert_eq!(one.revocations_age_seconds, Some(3));

    let rows = s.list_usage().await.unwrap();
    let find = |app: &str, jti: &str, node: &str| {
        rows.iter()
            .find(|r| r.app == app && r.jti == jti && r.node == node)
            .cloned()
            .unwrap()
    };
    let a = find("checkout.cpu", "jti-a", "ingest-1");
    assert_eq!((a.pushes, a.bytes, a.last_push_at), (8, 800, 70));
    assert_eq!(find("checkout.cpu", "jti-b", "ingest-2").pushes, 1);
    assert_eq!(find("checkout.cpu", "jti-b", "ingest-1").pushes, 2);
    assert_eq!(rows.len(), 4);

    let mut last = s.last_uses().await.unwrap();
    last.sort_by(|x, y| x.jti.cmp(&y.jti));
    assert_eq!(
        (
            last[0].jti.as_str(),
            last[0].at,
            last[0].node.as_str(),
            last[0].app.as_str()
        ),
        ("jti-a", 70, "ingest-1", "checkout.cpu")
    );
    // ingest-2's push of jti-b (at 30) is older than ingest-1's (at 40): the later one stays.
    assert_eq!(
        (last[1].jti.as_str(), last[1].at, last[1].node.as_str()),
        ("jti-b", 40, "ingest-1")
    );
}

async fn a_new_node_start_counts_again_from_seq_one(s: &Store) {
    assert!(
        s.record_report(&report("ingest-1", 1000, 5), 2000)
            .await
            .unwrap()
    );
    // Restarted: a new start time, its sequence begins again.
    assert!(
        s.record_report(&report("ingest-1", 3000, 1), 3010)
            .await
            .unwrap()
    );
    let nodes = s.list_nodes().await.unwrap();
    assert_eq!((nodes[0].started_at, nodes[0].seq), (3000, 1));
    let rows = s.list_usage().await.unwrap();
    let a = rows
        .iter()
        .find(|r| r.app == "checkout.cpu" && r.jti == "jti-a")
        .unwrap();
    assert_eq!(a.pushes, 6);
}

fn user(name: &str, role: Role) -> NewUser {
    NewUser {
        name: name.to_owned(),
        email: None,
        full_name: None,
        password_hash: "h".to_owned(),
        role,
        sso: None,
    }
}

async fn deleting_a_key_revokes_its_jti_and_bumps_the_version(s: &Store) {
    let k = s.create_key(key("ci", "jti-1")).await.unwrap();
    assert_eq!(s.revocations_version().await.unwrap(), 0);
    let (deleted, v) = s.delete_key(k.id, 200, "user:admin").await.unwrap();
    assert_eq!((deleted.id, v), (k.id, 1));
    let snap = s.snapshot("k1", None).await.unwrap();
    assert_eq!(snap.version, 1);
    assert_eq!(snap.entries.len(), 1);
    assert_eq!(snap.entries[0].jti, "jti-1");
    assert_eq!(snap.entries[0].exp, Some(1000));
    assert!(s.list_keys().await.unwrap().is_empty());
    assert!(matches!(
        s.delete_key(k.id, 201, "user:admin").await,
        Err(StoreError::NotFound(_))
    ));
    // The name is free again.
    s.create_key(key("ci", "jti-2")).await.unwrap();
    let actions: Vec<String> = s
        .list_audit(10)
        .await
        .unwrap()
        .into_iter()
        .map(|a| a.action)
        .collect();
    assert_eq!(actions, ["apikey.create", "apikey.delete", "apikey.create"]);
}

async fn live_key_names_are_unique(s: &Store) {
    s.create_key(key("ci", "a")).await.unwrap();
    let err = s.create_key(key("ci", "b")).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err}");
    assert_eq!(s.find_key_by_name("ci").await.unwrap().jti, "a");
    assert!(matches!(
        s.find_key_by_name("nope").await,
        Err(StoreError::NotFound(_))
    ));
}

async fn look_alike_key_names_are_refused(s: &Store) {
    s.create_key(key("admin", "a")).await.unwrap();
    // A Cyrillic `і`.
    let err = s.create_key(key("admіn", "b")).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "an api key with a name that looks the same already exists"
    );
}

async fn a_keys_scopes_come_back_as_they_were_stored(s: &Store) {
    let apps = vec!["checkout".to_owned(), "checkout-*".to_owned()];
    let cidrs = vec!["10.0.0.0/8".to_owned(), "2001:db8::/32".to_owned()];
    let scoped = s
        .create_key(NewKey {
            apps: Some(apps.clone()),
            cidrs: Some(cidrs.clone()),
            ..key("scoped", "s")
        })
        .await
        .unwrap();
    assert_eq!(scoped.apps.as_ref(), Some(&apps));
    assert_eq!(scoped.cidrs.as_ref(), Some(&cidrs));
    s.create_key(key("plain", "p")).await.unwrap();
    let listed = s.list_keys().await.unwrap();
    let by_name = |n: &str| listed.iter().find(|k| k.name == n).unwrap().clone();
    assert_eq!(by_name("scoped").apps, Some(apps));
    assert_eq!(by_name("scoped").cidrs, Some(cidrs));
    assert_eq!(
        by_name("plain").apps,
        None,
        "an unscoped key stays unscoped"
    );
    assert_eq!(by_name("plain").cidrs, None);
}

async fn pruning_drops_expired_and_unpublished_entries(s: &Store) {
    for (name, exp, kid) in [
        ("old", Some(100), "k1"),
        ("forever", None, "k1"),
        ("retired", None, "k0"),
    ] {
        let k = s
            .create_key(NewKey {
                expires_at: exp,
                kid: kid.to_owned(),
                ..key(name, name)
            })
            .await
            .unwrap();
        s.delete_key(k.id, 50, "user:admin").await.unwrap();
    }
    let v = s.revocations_version().await.unwrap();
    let published = ["k1".to_owned()];
    let v2 = s.prune_revocations(1000, 60, &published).await.unwrap();
    assert_eq!(v2, v + 1);
    let left: Vec<String> = s
        .snapshot("k1", None)
        .await
        .unwrap()
        .entries
        .into_iter()
        .map(|e| e.jti)
        .collect();
    assert_eq!(left, ["forever"]);
    assert_eq!(s.prune_revocations(1000, 60, &published).await.unwrap(), v2);
}

async fn revoking_a_jti_deletes_its_key_or_lists_it_as_it_is(s: &Store) {
    s.create_key(key("ci", "registered-jti")).await.unwrap();
    let (name, v1) = s
        .revoke_jti("registered-jti", None, 10, "cli:root")
        .await
        .unwrap();
    assert_eq!((name.as_deref(), v1), (Some("ci"), 1));
    assert!(s.list_keys().await.unwrap().is_empty());
    let (name, v2) = s
        .revoke_jti("offline-jti", Some(500), 11, "cli:root")
        .await
        .unwrap();
    assert_eq!((name, v2), (None, 2));
    let entries = s.snapshot("k1", None).await.unwrap().entries;
    let jtis: Vec<(&str, Option<u64>)> = entries.iter().map(|e| (e.jti.as_str(), e.exp)).collect();
    assert_eq!(
        jtis,
        [("registered-jti", Some(1000)), ("offline-jti", Some(500))]
    );
}

async fn the_keyset_version_moves_with_the_published_kids_and_moves_the_list(s: &Store) {
    let first = s.snapshot("k1", None).await.unwrap();
    assert_eq!((first.keyset_version, first.version), (1, 0));
    let again = s.snapshot("k1", None).await.unwrap();
    assert_eq!((again.keyset_version, again.version), (1, 0));
    let rotated = s.snapshot("k1,k2", None).await.unwrap();
    assert_eq!((rotated.keyset_version, rotated.version), (2, 1));
    // Keys signed by a kid no longer published are listed as deleted.
    s.create_key(NewKey {
        kid: "k1".to_owned(),
        ..key("old", "a")
    })
    .await
    .unwrap();
    s.create_key(NewKey {
        kid: "k2".to_owned(),
        ..key("new", "b")
    })
    .await
    .unwrap();
    let gone = s
        .delete_keys_of_unpublished(&["k2".to_owned()], 5)
        .await
        .unwrap();
    assert_eq!(gone, ["old"]);
    let live: Vec<String> = s
        .list_keys()
        .await
        .unwrap()
        .into_iter()
        .map(|k| k.name)
        .collect();
    assert_eq!(live, ["new"]);
}

async fn users_keep_an_enabled_admin(s: &Store) {
    let a = s.create_user(user("alice", Role::Admin), 1).await.unwrap();
    let err = s
        .create_user(user("ALICE", Role::Agent), 1)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err}");
    assert_eq!(s.count_users().await.unwrap(), 1);
    assert!(matches!(
        s.set_role(a.id, Role::ReadOnly, 2).await,
        Err(StoreError::Conflict(_))
    ));
    assert!(matches!(
        s.set_disabled(a.id, true, true, 2).await,
        Err(StoreError::Conflict(_))
    ));
    assert!(matches!(
        s.delete_user(a.id, true, 2).await,
        Err(StoreError::Conflict(_))
    ));
    let b = s.create_user(user("bob", Role::Admin), 3).await.unwrap();
    let demoted = s.set_role(a.id, Role::ReadOnly, 4).await.unwrap();
    assert_eq!((demoted.role, demoted.updated_at), (Role::ReadOnly, 4));
    assert!(matches!(
        s.set_role(b.id, Role::Agent, 5).await,
        Err(StoreError::Conflict(_))
    ));
    let (found, hash) = s.find_user_for_login("BOB").await.unwrap().unwrap();
    assert_eq!((found.id, hash.as_str()), (b.id, "h"));
    assert!(s.find_user_for_login("carol").await.unwrap().is_none());
    let updated = s
        .update_user(
            a.id,
            UserUpdate {
                email: Some("a@example.com".into()),
                ..UserUpdate::default()
            },
            6,
        )
        .await
        .unwrap();
    assert_eq!(
        (updated.name.as_str(), updated.email.as_deref()),
        ("alice", Some("a@example.com"))
    );
    let err = s
        .update_user(
            a.id,
            UserUpdate {
                name: Some("bob".into()),
                ..UserUpdate::default()
            },
            7,
        )
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err}");
    let names: Vec<String> = s
        .list_users()
        .await
        .unwrap()
        .into_iter()
        .map(|u| u.name)
        .collect();
    assert_eq!(names, ["alice", "bob"]);
    assert!(matches!(
        s.get_user(999).await,
        Err(StoreError::NotFound(_))
    ));
}

async fn disabling_or_deleting_a_user_revokes_their_keys_on_request(s: &Store) {
    s.create_user(user("root", Role::Admin), 1).await.unwrap();
    let bob = s.create_user(user("bob", Role::Admin), 1).await.unwrap();
    let carol = s.create_user(user("carol", Role::Admin), 1).await.unwrap();
    for (name, by) in [("b1", "user:bob"), ("b2", "user:bob"), ("c1", "user:carol")] {
        s.create_key(NewKey {
            created_by: Some(by.to_owned()),
            ..key(name, name)
        })
        .await
        .unwrap();
    }
    let (_, kept) = s.set_disabled(bob.id, true, false, 2).await.unwrap();
    assert!(kept.is_empty());
    s.set_disabled(bob.id, false, true, 3).await.unwrap();
    let (user, revoked) = s.set_disabled(bob.id, true, true, 4).await.unwrap();
    assert!(user.is_disabled);
    let names: Vec<&str> = revoked.iter().map(|k| k.name.as_str()).collect();
    assert_eq!(names, ["b1", "b2"]);
    assert_eq!(
        s.revocations_version().await.unwrap(),
        1,
        "one move for both"
    );
    let (gone, revoked) = s.delete_user(carol.id, true, 5).await.unwrap();
    assert_eq!(gone.name, "carol");
    assert_eq!(revoked.len(), 1);
    assert_eq!(s.snapshot("k1", None).await.unwrap().entries.len(), 3);
    assert!(s.list_keys().await.unwrap().is_empty());
    assert!(matches!(
        s.get_user(carol.id).await,
        Err(StoreError::NotFound(_))
    ));
}

async fn sessions_belong_to_one_enabled_user_until_they_expire(s: &Store) {
    let root = s.create_user(user("root", Role::Admin), 1).await.unwrap();
    let bob = s.create_user(user("bob", Role::Agent), 1).await.unwrap();
    s.create_session("sid-1", bob.id, 10, 100).await.unwrap();
    assert_eq!(s.get_user(bob.id).await.unwrap().last_seen_at, Some(10));
    let seen = s.session_user("sid-1", bob.id, 20).await.unwrap().unwrap();
    assert_eq!(seen.id, bob.id);
    assert_eq!(s.get_user(bob.id).await.unwrap().last_seen_at, Some(20));
    assert!(
        s.session_user("sid-1", root.id, 20)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        s.session_user("sid-1", bob.id, 100)
            .await
            .unwrap()
            .is_none()
    );
    assert!(s.session_user("nope", bob.id, 20).await.unwrap().is_none());
    s.set_disabled(bob.id, true, false, 30).await.unwrap();
    assert!(s.session_user("sid-1", bob.id, 31).await.unwrap().is_none());
    s.set_disabled(bob.id, false, false, 32).await.unwrap();
    s.create_session("sid-2", bob.id, 40, 50).await.unwrap();
    s.create_session("sid-3", bob.id, 40, 500).await.unwrap();
    assert_eq!(s.prune_sessions(60).await.unwrap(), 1);
    s.delete_session("sid-3").await.unwrap();
    assert!(s.session_user("sid-3", bob.id, 61).await.unwrap().is_none());
}

async fn changing_a_password_ends_the_other_sessions(s: &Store) {
    let bob = s.create_user(user("bob", Role::Agent), 1).await.unwrap();
    for sid in ["a", "b", "c"] {
        s.create_session(sid, bob.id, 1, 100).await.unwrap();
    }
    s.set_password(bob.id, "h2", 5, Some("b")).await.unwrap();
    assert_eq!(s.password_hash(bob.id).await.unwrap(), "h2");
    let live: Vec<bool> = futures_all(s, ["a", "b", "c"], bob.id).await;
    assert_eq!(live, [false, true, false]);
    s.set_password(bob.id, "h3", 6, None).await.unwrap();
    assert_eq!(futures_all(s, ["b"], bob.id).await, [false]);
    assert!(matches!(
        s.set_password(999, "h", 7, None).await,
        Err(StoreError::NotFound(_))
    ));
}

async fn futures_all<const N: usize>(s: &Store, sids: [&str; N], uid: i64) -> Vec<bool> {
    let mut out = Vec::new();
    for sid in sids {
        out.push(s.session_user(sid, uid, 10).await.unwrap().is_some());
    }
    out
}

async fn meta_is_set_once_and_audit_is_newest_first(s: &Store) {
    assert_eq!(s.get_meta("session_secret").await.unwrap(), None);
    assert_eq!(s.init_meta("session_secret", "one").await.unwrap(), "one");
    assert_eq!(s.init_meta("session_secret", "two").await.unwrap(), "one");
    assert_eq!(
        s.get_meta("session_secret").await.unwrap().as_deref(),
        Some("one")
    );
    s.audit(AuditEntry::new(1, "user:a", "login", None).client("10.0.0.1"))
        .await
        .unwrap();
    s.audit(AuditEntry::new(2, "user:a", "user.update", Some("a")))
        .await
        .unwrap();
    let log = s.list_audit(1).await.unwrap();
    assert_eq!(log.len(), 1);
    assert_eq!(
        (log[0].at, log[0].action.as_str(), log[0].target.as_deref()),
        (2, "user.update", Some("a"))
    );
    let log = s.list_audit(10).await.unwrap();
    assert_eq!(log[1].client.as_deref(), Some("10.0.0.1"));
    s.ping().await.unwrap();
}

#[tokio::test]
async fn a_flood_of_unfinished_sign_ins_is_capped() {
    let fresh = sqlite().await;
    let s = &fresh.store;
    s.sqlite()
        .unwrap()
        .with(|c| {
            let tx = c.transaction()?;
            for i in 0..MAX_PENDING_SSO - 1 {
                tx.execute(
                    "INSERT INTO sso_logins (state, browser, nonce, verifier, next, expires_at)
                     VALUES (?1, 'b', 'n', 'v', '/', 1000)",
                    [format!("s{i}")],
                )?;
            }
            tx.commit()?;
            Ok(())
        })
        .unwrap();
    s.begin_sso(pending("last", 1000)).await.unwrap();
    assert!(matches!(
        s.begin_sso(pending("one-more", 1000)).await,
        Err(StoreError::Invalid(_))
    ));
    // Once they expire and are pruned, sign-ins start again.
    s.prune_sessions(1000).await.unwrap();
    s.begin_sso(pending("again", 2000)).await.unwrap();
}

#[tokio::test]
async fn sqlite_data_survives_reopening() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = Store::open(dir.path()).unwrap();
        s.create_user(user("alice", Role::Admin), 1).await.unwrap();
    }
    let s = Store::open(dir.path()).unwrap();
    let users = s.list_users().await.unwrap();
    assert_eq!(users.len(), 1);
    assert_eq!(users[0].name, "alice");
}

#[tokio::test]
async fn sqlite_database_files_are_private_even_in_an_open_directory_and_old_ones_are_tightened() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    {
        let s = Store::open(dir.path()).unwrap();
        s.create_key(key("ci", "jti-1")).await.unwrap();
        for f in ["pyrogate.db", "pyrogate.db-wal", "pyrogate.db-shm"] {
            assert_eq!(mode(&dir.path().join(f)), 0o600, "{f}");
        }
    }
    // A database written by an older version with a looser mode.
    std::fs::set_permissions(
        dir.path().join("pyrogate.db"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let _s = Store::open(dir.path()).unwrap();
    assert_eq!(mode(&dir.path().join("pyrogate.db")), 0o600);
}

#[tokio::test]
async fn postgres_replicas_starting_together_migrate_once() {
    let url = postgres_url().await;
    let settings = postgres_settings(&url);
    let (a, b) = tokio::join!(PgStore::connect(&settings), PgStore::connect(&settings));
    let (a, b) = (a.unwrap(), b.unwrap());
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let row = client
        .query_one(
            "SELECT COUNT(*), COUNT(DISTINCT version), MAX(version)::BIGINT FROM schema_migrations",
            &[],
        )
        .await
        .unwrap();
    let (applied, distinct, newest): (i64, i64, i64) = (row.get(0), row.get(1), row.get(2));
    assert_eq!(
        (applied, distinct),
        (newest, newest),
        "each migration applied once"
    );
    // Both see one database.
    let a = Store::Postgres(a);
    let b = Store::Postgres(b);
    a.create_user(user("alice", Role::Admin), 1).await.unwrap();
    assert_eq!(b.count_users().await.unwrap(), 1);
}

#[tokio::test]
async fn postgres_concurrent_deletes_on_two_replicas_give_strictly_increasing_versions() {
    let url = postgres_url().await;
    let settings = postgres_settings(&url);
    let a = Store::Postgres(PgStore::connect(&settings).await.unwrap());
    let b = Store::Postgres(PgStore::connect(&settings).await.unwrap());
    let mut ids = Vec::new();
    // As many deletes at once as the two pools have connections (8 each): none waits for a
    // connection, so a slow machine can't turn the test into a pool timeout.
    for i in 0..16 {
        let k = a
            .create_key(key(&format!("k{i}"), &format!("jti-{i}")))
            .await
            .unwrap();
        ids.push(k.id);
    }
    let mut tasks = tokio::task::JoinSet::new();
    for (i, id) in ids.into_iter().enumerate() {
        let store = if i % 2 == 0 { a.clone() } else { b.clone() };
        tasks.spawn(async move { store.delete_key(id, 10, "user:admin").await.unwrap().1 });
    }
    let mut versions = tasks.join_all().await;
    versions.sort_unstable();
    assert_eq!(
        versions,
        (1..=16).collect::<Vec<u64>>(),
        "one version per delete, no gaps"
    );
    assert_eq!(b.snapshot("k1", None).await.unwrap().entries.len(), 16);
    assert_eq!(a.revocations_version().await.unwrap(), 16);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_every_snapshot_of_a_version_holds_exactly_the_deletes_up_to_it() {
    // Replica B deletes while replica A keeps reading snapshots: a snapshot of version V must
    // hold exactly the keys whose delete returned a version <= V, or two replicas could sign
    // two different lists as V.
    let url = postgres_url().await;
    let settings = postgres_settings(&url);
    let a = Store::Postgres(PgStore::connect(&settings).await.unwrap());
    let b = Store::Postgres(PgStore::connect(&settings).await.unwrap());
    a.snapshot("k1", None).await.unwrap();
    let mut ids = Vec::new();
    for i in 0..40 {
        let k = b
            .create_key(key(&format!("k{i}"), &format!("jti-{i}")))
            .await
            .unwrap();
        ids.push((k.id, k.jti));
    }
    let deleting = tokio::spawn(async move {
        let mut at = std::collections::HashMap::new();
        for (id, jti) in ids {
            let (_, version) = b.delete_key(id, 10, "user:admin").await.unwrap();
            at.insert(jti, version);
        }
        at
    });
    let mut seen = Vec::new();
    while !deleting.is_finished() {
        seen.push(a.snapshot("k1", None).await.unwrap());
    }
    let at = deleting.await.unwrap();
    seen.push(a.snapshot("k1", None).await.unwrap());
    assert!(seen.len() > 2, "snapshots taken while deleting");
    for snap in seen {
        let mut got: Vec<&str> = snap.entries.iter().map(|e| e.jti.as_str()).collect();
        got.sort_unstable();
        let mut want: Vec<&str> = at
            .iter()
            .filter(|&(_, &v)| v <= snap.version)
            .map(|(j, _)| j.as_str())
            .collect();
        want.sort_unstable();
        assert_eq!(got, want, "the entries of version {}", snap.version);
    }
}

#[tokio::test]
async fn postgres_a_commit_on_one_replica_wakes_the_others_listener() {
    let url = postgres_url().await;
    let settings = postgres_settings(&url);
    let a = Store::Postgres(PgStore::connect(&settings).await.unwrap());
    let b = Store::Postgres(PgStore::connect(&settings).await.unwrap());
    let k = b.create_key(key("k", "jti-k")).await.unwrap();
    let changed = std::sync::Arc::new(tokio::sync::Notify::new());
    let stop = tokio_util::sync::CancellationToken::new();
    let listening = {
        let (a, changed, stop) = (a.clone(), changed.clone(), stop.clone());
        tokio::spawn(async move { a.listen(changed, stop.cancelled_owned()).await })
    };
    let within = std::time::Duration::from_secs(5);
    // Once when it starts listening: whatever came before is to be re-read.
    tokio::time::timeout(within, changed.notified())
        .await
        .expect("woken once listening");
    // Nothing else happens: no wake-up.
    assert!(
        tokio::time::timeout(std::time::Duration::from_millis(300), changed.notified())
            .await
            .is_err(),
        "woken without a change"
    );
    b.delete_key(k.id, 10, "user:admin").await.unwrap();
    tokio::time::timeout(within, changed.notified())
        .await
        .expect("a delete on B wakes A");
    stop.cancel();
    tokio::time::timeout(within, listening)
        .await
        .expect("the listener stops")
        .unwrap();
}

#[tokio::test]
async fn postgres_periodic_work_gets_one_turn_per_interval_across_replicas() {
    let url = postgres_url().await;
    let settings = postgres_settings(&url);
    let a = Store::Postgres(PgStore::connect(&settings).await.unwrap());
    let b = Store::Postgres(PgStore::connect(&settings).await.unwrap());
    let (ta, tb) = tokio::join!(
        a.claim_periodic("prune", 1000, 60),
        b.claim_periodic("prune", 1000, 60)
    );
    assert!(ta.unwrap() ^ tb.unwrap(), "one replica gets the turn");
    assert!(!a.claim_periodic("prune", 1059, 60).await.unwrap());
    assert!(!b.claim_periodic("prune", 1059, 60).await.unwrap());
    assert!(b.claim_periodic("prune", 1060, 60).await.unwrap());
    assert!(!a.claim_periodic("prune", 1060, 60).await.unwrap());
    // Another job has its own turn.
    assert!(a.claim_periodic("other", 1060, 60).await.unwrap());
}

#[tokio::test]
async fn postgres_password_from_a_file_and_never_in_what_is_shown() {
    let url = postgres_url().await;
    let (scheme_user, rest) = url.split_once('@').unwrap();
    let (user_part, password) = scheme_user.rsplit_once(':').unwrap();
    assert!(
        !password.is_empty(),
        "the test server's URL carries a password"
    );
    let bare = format!("{user_part}@{rest}");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("password");
    std::fs::write(&file, format!("{password}\n")).unwrap();
    let settings = crate::config::PostgresSettings {
        password_file: Some(file.clone()),
        ..postgres_settings(&bare)
    };
    let store = Store::connect(&Database::Postgres(settings)).await.unwrap();
    store.ping().await.unwrap();
    assert!(
        store
            .describe()
            .starts_with("postgres://postgres@127.0.0.1:")
    );
    assert!(!store.describe().contains(password));
    assert!(!format!("{store:?}").contains(password));
    // A wrong password: the error names the database, never the password tried.
    std::fs::write(&file, "not-the-password-xyz\n").unwrap();
    let settings = crate::config::PostgresSettings {
        password_file: Some(file),
        ..postgres_settings(&bare)
    };
    let err = Store::connect(&Database::Postgres(settings))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("postgres://postgres@127.0.0.1:"), "{err}");
    assert!(!err.contains("not-the-password-xyz"), "{err}");
    let wrong = url.replace(password, "wrong-password-abc");
    let err = Store::connect(&Database::Postgres(postgres_settings(&wrong)))
        .await
        .unwrap_err()
        .to_string();
    assert!(!err.contains("wrong-password-abc"), "{err}");
}

#[tokio::test]
async fn postgres_tls_goes_through_rustls_and_its_errors_name_the_setting() {
    let url = postgres_url().await;
    // The test server speaks no TLS: `require` must refuse to go on in plain text.
    let err = Store::connect(&Database::Postgres(postgres_settings(&format!(
        "{url}?sslmode=require"
    ))))
    .await
    .unwrap_err()
    .to_string();
    assert!(err.contains("postgres://postgres@127.0.0.1:"), "{err}");
    assert!(!err.contains("pyrogate-test"), "{err}");
    // A CA file that is not one: the error names database.tls-ca-path.
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, "not a certificate").unwrap();
    let mut settings = postgres_settings(&format!("{url}?sslmode=require"));
    settings.tls.ca_path = Some(ca);
    let err = Store::connect(&Database::Postgres(settings))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("database.tls-ca-path"), "{err}");
    // `prefer` falls back to plain text on a server without TLS, as libpq does.
    let store = Store::connect(&Database::Postgres(postgres_settings(&format!(
        "{url}?sslmode=prefer"
    ))))
    .await
    .unwrap();
    store.ping().await.unwrap();
}
