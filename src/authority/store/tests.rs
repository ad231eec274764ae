use super::*;

fn store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    (dir, store)
}

fn key<'a>(name: &'a str, jti: &'a str) -> NewKey<'a> {
    NewKey {
        name,
        role: Role::Agent,
        jti,
        kid: "k1",
        tenant: None,
        created_at: 100,
        expires_at: Some(1000),
        created_by: Some("admin"),
        apps: None,
        cidrs: None,
    }
}

#[test]
fn deleting_a_key_revokes_its_jti_and_bumps_the_version() {
    let (_d, s) = store();
    s.with(|c| {
        let k = insert_key(c, &key("ci", "jti-1"))?;
        assert_eq!(revocations_version(c)?, 0);
        let (_, v) = delete_key(c, k.id, 200)?;
        assert_eq!(v, 1);
        let entries = revocation_entries(c)?;
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].jti, "jti-1");
        assert_eq!(entries[0].exp, Some(1000));
        assert!(matches!(get_key(c, k.id), Err(StoreError::NotFound(_))));
        // The name is free again.
        insert_key(c, &key("ci", "jti-2"))?;
        Ok(())
    })
    .unwrap();
}

#[test]
fn live_key_names_are_unique() {
    let (_d, s) = store();
    s.with(|c| {
        insert_key(c, &key("ci", "a"))?;
        let err = insert_key(c, &key("ci", "b")).unwrap_err();
        assert_eq!(err.to_string(), "api key with this name already exists");
        Ok(())
    })
    .unwrap();
}

#[test]
fn pruning_drops_expired_and_unpublished_entries() {
    let (_d, s) = store();
    s.with(|c| {
        revoke_jti(c, "old", Some(100), Some("k1"), 50)?;
        revoke_jti(c, "forever", None, Some("k1"), 50)?;
        revoke_jti(c, "retired", None, Some("k0"), 50)?;
        let v = revocations_version(c)?;
        let v2 = prune_revocations(c, 1000, 60, &["k1".to_owned()])?;
        assert_eq!(v2, v + 1);
        let left: Vec<String> = revocation_entries(c)?.into_iter().map(|e| e.jti).collect();
        assert_eq!(left, vec!["forever".to_owned()]);
        assert_eq!(prune_revocations(c, 1000, 60, &["k1".to_owned()])?, v2);
        Ok(())
    })
    .unwrap();
}

#[test]
fn data_survives_reopening() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = Store::open(dir.path()).unwrap();
        s.with(|c| {
            create_user(
                c,
                &NewUser {
                    name: "alice",
                    email: None,
                    full_name: None,
                    password_hash: "h",
                    role: Role::Admin,
                },
                1,
            )?;
            Ok(())
        })
        .unwrap();
    }
    let s = Store::open(dir.path()).unwrap();
    let users = s.with(|c| list_users(c)).unwrap();
    assert_eq!(users.len(), 1);
    assert_eq!(users[0].name, "alice");
}

#[test]
fn database_files_are_private_even_in_an_open_directory_and_old_ones_are_tightened() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    {
        let s = Store::open(dir.path()).unwrap();
        s.with(|c| insert_key(c, &key("ci", "jti-1")).map(|_| ()))
            .unwrap();
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
