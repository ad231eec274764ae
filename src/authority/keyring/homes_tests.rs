//! The keyring's suite: the same rules whether it lives in the keys dir (SQLite installs) or
//! in PostgreSQL under the key-encryption key.

use std::sync::Arc;

use crate::authority::kek::{KEK_LEN, Kek};
use crate::authority::keyring::{KeyStatus, KeyringError, KeyringHome, Revision};
use crate::authority::store::{PgStore, Store, StoreError};
use crate::config::{ClientTls, PostgresSettings};

async fn postgres_url() -> String {
    crate::authority::store::postgres::testing::fresh_database().await
}

fn postgres_settings(url: &str) -> PostgresSettings {
    PostgresSettings {
        url: crate::core::token::Secret::new(url.to_owned()),
        password_file: None,
        tls: ClientTls {
            peer: "database",
            ..Default::default()
        },
    }
}

/// The published kids as the documents name them (sorted, comma-joined).
fn kid_list(ring: &crate::authority::keyring::Keyring) -> String {
    let mut kids: Vec<String> = ring.key_set().kids().map(str::to_owned).collect();
    kids.sort_unstable();
    kids.join(",")
}

fn kek(byte: u8) -> Arc<Kek> {
    Arc::new(Kek::from_bytes(&[byte; KEK_LEN]).unwrap())
}

struct Home {
    home: KeyringHome,
    _guard: Box<dyn std::any::Any + Send>,
}

async fn in_dir() -> Home {
    let dir = tempfile::tempdir().unwrap();
    Home {
        home: KeyringHome::Dir(dir.path().join("keys")),
        _guard: Box::new(dir),
    }
}

async fn pg_store(url: &str) -> PgStore {
    PgStore::connect(&postgres_settings(url)).await.unwrap()
}

async fn in_database() -> Home {
    let url = postgres_url().await;
    Home {
        home: KeyringHome::Database {
            store: pg_store(&url).await,
            kek: kek(7),
        },
        _guard: Box::new(()),
    }
}

macro_rules! keyring_suite {
    ($($name:ident),* $(,)?) => {
        mod in_keys_dir {
            $(
                #[tokio::test]
                async fn $name() {
                    let h = super::in_dir().await;
                    super::$name(&h.home).await;
                }
            )*
        }
        mod in_postgres {
            $(
                #[tokio::test]
                async fn $name() {
                    let h = super::in_database().await;
                    super::$name(&h.home).await;
                }
            )*
        }
    };
}

keyring_suite!(
    a_keyring_is_created_once_then_rotated_and_retired,
    every_change_moves_the_revision_and_a_reopened_keyring_is_the_same,
);

fn statuses(ring: &crate::authority::keyring::Keyring) -> Vec<(String, KeyStatus)> {
    ring.keys()
        .iter()
        .map(|k| (k.kid.clone(), k.status))
        .collect()
}

async fn a_keyring_is_created_once_then_rotated_and_retired(home: &KeyringHome) {
    assert!(matches!(
        home.open().await,
        Err(KeyringError::NotInitialized { .. } | KeyringError::NotInitializedInDatabase)
    ));
    let (ring, created) = home.open_or_generate(10).await.unwrap();
    assert!(created);
    let first = ring.active().kid().to_owned();
    let (again, created) = home.open_or_generate(11).await.unwrap();
    assert!(!created, "a second start loads the keyring");
    assert_eq!(again.active().kid(), first);
    let err = home.generate(12).await.unwrap_err();
    assert!(err.to_string().contains(&first), "{err}");

    let (ring, second) = home.rotate(20).await.unwrap();
    assert_eq!(ring.active().kid(), second);
    assert_eq!(
        statuses(&ring),
        vec![
            (first.clone(), KeyStatus::Published),
            (second.clone(), KeyStatus::Active)
        ]
    );
    let mut published: Vec<String> = ring.key_set().kids().map(str::to_owned).collect();
    published.sort_unstable();
    let mut both = vec![first.clone(), second.clone()];
    both.sort_unstable();
    assert_eq!(published, both);
    assert_eq!(ring.published_signers().len(), 2);

    assert!(matches!(
        home.retire(&second, 30).await,
        Err(KeyringError::RetireActive(_))
    ));
    assert!(matches!(
        home.retire("no-such-kid", 30).await,
        Err(KeyringError::UnknownKid(_))
    ));
    let ring = home.retire(&first, 30).await.unwrap();
    assert_eq!(ring.keys()[0].status, KeyStatus::Retired);
    assert_eq!(ring.keys()[0].retired_at, Some(30));
    assert_eq!(
        ring.key_set().kids().map(str::to_owned).collect::<Vec<_>>(),
        vec![second.clone()]
    );
    assert!(matches!(
        home.retire(&first, 31).await,
        Err(KeyringError::AlreadyRetired(_))
    ));
    let reopened = home.open().await.unwrap();
    assert_eq!(statuses(&reopened), statuses(&ring));
    assert_eq!(reopened.keys()[1].created_at, 20);
}

async fn every_change_moves_the_revision_and_a_reopened_keyring_is_the_same(home: &KeyringHome) {
    let (ring, _) = home.open_or_generate(10).await.unwrap();
    let mut seen = vec![home.revision().await.unwrap()];
    assert_eq!(home.revision_of(&ring).await.unwrap(), seen[0]);
    // A stat's modification time has coarse steps on some file systems.
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let (ring, _) = home.rotate(20).await.unwrap();
    seen.push(home.revision().await.unwrap());
    assert_eq!(home.revision_of(&ring).await.unwrap(), seen[1]);
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let old = ring.keys()[0].kid.clone();
    home.retire(&old, 30).await.unwrap();
    seen.push(home.revision().await.unwrap());
    assert_ne!(seen[0], seen[1]);
    assert_ne!(seen[1], seen[2]);
    if let KeyringHome::Database { .. } = home {
        assert!(matches!(seen[2], Revision::Version(3)), "{seen:?}");
        assert_eq!(home.open().await.unwrap().version(), Some(3));
    }
    let reopened = home.open().await.unwrap();
    assert_eq!(reopened.active().kid(), ring.active().kid());
}

#[tokio::test]
async fn postgres_replicas_starting_together_create_one_keyring() {
    let url = postgres_url().await;
    let mut homes = Vec::new();
    for _ in 0..6 {
        homes.push(KeyringHome::Database {
            store: pg_store(&url).await,
            kek: kek(7),
        });
    }
    let mut tasks = tokio::task::JoinSet::new();
    for home in homes {
        tasks.spawn(async move {
            let (ring, created) = home.open_or_generate(10).await.unwrap();
            (ring.active().kid().to_owned(), created, ring.keys().len())
        });
    }
    let results = tasks.join_all().await;
    let kids: std::collections::BTreeSet<_> = results.iter().map(|r| r.0.clone()).collect();
    assert_eq!(kids.len(), 1, "one keyring: {results:?}");
    assert_eq!(results.iter().filter(|r| r.1).count(), 1, "{results:?}");
    assert!(results.iter().all(|r| r.2 == 1), "{results:?}");
}

#[tokio::test]
async fn postgres_a_wrong_missing_or_malformed_kek_is_refused_naming_the_setting() {
    let url = postgres_url().await;
    let right = KeyringHome::Database {
        store: pg_store(&url).await,
        kek: kek(7),
    };
    let (ring, _) = right.open_or_generate(10).await.unwrap();
    let wrong = KeyringHome::Database {
        store: pg_store(&url).await,
        kek: kek(8),
    };
    for err in [
        wrong.open().await.unwrap_err(),
        wrong.open_or_generate(11).await.unwrap_err(),
    ] {
        assert!(matches!(err, KeyringError::Sealed { .. }), "{err:?}");
        let text = err.to_string();
        assert!(text.contains("authority.key-encryption-key-file"), "{text}");
        assert!(text.contains(ring.active().kid()), "{text}");
    }
    // A wrong key changes nothing: the right one still opens the same keyring.
    assert_eq!(
        right.open().await.unwrap().active().kid(),
        ring.active().kid()
    );

    let store = Store::Postgres(pg_store(&url).await);
    let dir = tempfile::tempdir().unwrap();
    let err = KeyringHome::for_store(&store, dir.path(), None).unwrap_err();
    assert!(matches!(err, KeyringError::KekRequired), "{err:?}");
    assert!(
        err.to_string()
            .contains("authority.key-encryption-key-file is required"),
        "{err}"
    );
    let file = dir.path().join("kek");
    std::fs::write(&file, "c2hvcnQ=\n").unwrap();
    let err = KeyringHome::for_store(&store, dir.path(), Some(&file))
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("authority.key-encryption-key-file:"),
        "{err}"
    );
    assert!(!err.contains("c2hvcnQ"), "the file is never quoted: {err}");
    // SQLite keeps the keys dir and needs no key-encryption key.
    let sqlite = Store::open(dir.path()).unwrap();
    assert!(matches!(
        KeyringHome::for_store(&sqlite, &dir.path().join("keys"), None).unwrap(),
        KeyringHome::Dir(_)
    ));
}

#[tokio::test]
async fn postgres_private_keys_are_never_in_the_database_in_plain_text() {
    let url = postgres_url().await;
    let home = KeyringHome::Database {
        store: pg_store(&url).await,
        kek: kek(7),
    };
    let (ring, _) = home.open_or_generate(10).await.unwrap();
    let (ring2, _) = home.rotate(20).await.unwrap();
    assert_eq!(ring2.keys().len(), 2);
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    // Every byte of the table, as stored and as text.
    let mut raw: Vec<u8> = Vec::new();
    for row in client
        .query("SELECT t::text, sealed FROM signing_keys t", &[])
        .await
        .unwrap()
    {
        raw.extend(row.get::<_, String>(0).into_bytes());
        raw.extend(row.get::<_, Vec<u8>>(1));
    }
    assert!(!raw.is_empty());
    let contains = |needle: &[u8]| raw.windows(needle.len()).any(|w| w == needle);
    for signer in ring2.published_signers() {
        let der = signer.signing_key().to_pkcs8_der();
        let seed = &der[16..];
        let hex: String = seed.iter().map(|b| format!("{b:02x}")).collect();
        use base64::Engine as _;
        for needle in [
            seed.to_vec(),
            der.clone(),
            hex.into_bytes(),
            base64::engine::general_purpose::STANDARD
                .encode(&der)
                .into_bytes(),
            crate::core::b64::encode(seed).into_bytes(),
            signer.signing_key().to_pkcs8_pem().into_bytes(),
        ] {
            assert!(
                !contains(&needle),
                "a private key is in the table in plain text"
            );
        }
    }
    // A sealed key moved to another key's row does not open (the kid is the AAD).
    client
        .execute(
            "UPDATE signing_keys SET sealed = (SELECT sealed FROM signing_keys WHERE kid = $1)
             WHERE kid = $2",
            &[&ring.active().kid(), &ring2.active().kid()],
        )
        .await
        .unwrap();
    let err = home.open().await.unwrap_err();
    assert!(
        matches!(err, KeyringError::Sealed { ref kid } if kid == ring2.active().kid()),
        "{err:?}"
    );
}

#[tokio::test]
async fn postgres_a_replica_with_an_older_keyring_may_not_sign_a_key_set() {
    let url = postgres_url().await;
    let a = KeyringHome::Database {
        store: pg_store(&url).await,
        kek: kek(7),
    };
    let store_b = Store::Postgres(pg_store(&url).await);
    let (before, _) = a.open_or_generate(10).await.unwrap();
    let kids_before = kid_list(&before);
    let first = store_b
        .snapshot(&kids_before, before.version())
        .await
        .unwrap();
    let (after, _) = a.rotate(20).await.unwrap();
    // B has not reloaded yet: it may not go back to the old key set.
    assert!(matches!(
        store_b.snapshot(&kids_before, before.version()).await,
        Err(StoreError::StaleKeyring)
    ));
    let kids_after = kid_list(&after);
    let next = store_b
        .snapshot(&kids_after, after.version())
        .await
        .unwrap();
    assert!(next.keyset_version > first.keyset_version);
    assert!(
        next.version > first.version,
        "nodes hear of the new key set"
    );
}
