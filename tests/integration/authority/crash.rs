//! Crash safety: `pyrogate api-key create` killed with SIGKILL at varying moments never leaves
//! a corrupt database, a key without its `jti`, or a printed key that was not recorded.

use std::collections::HashMap;
use std::time::Duration;

use pyrogate::authority::store::Store;

use crate::harness::*;

#[test]
fn killing_api_key_create_at_any_moment_never_corrupts_the_store() {
    const RUNS: u64 = 30;
    let root = tempfile::tempdir().expect("temp dir");
    let (data, keys) = (root.path().join("data"), root.path().join("keys"));
    let (data_arg, keys_arg) = (
        data.to_str().expect("path").to_owned(),
        keys.to_str().expect("path").to_owned(),
    );
    pyrogate(
        &["signing-key", "generate", "--keys-dir", &keys_arg],
        &[],
        "",
    )
    .ok();

    let mut printed: Vec<(String, String)> = Vec::new();
    let mut killed = 0;
    for i in 0..RUNS {
        let name = format!("crash-{i}");
        let mut child = pyrogate_command(
            &[
                "api-key",
                "create",
                "--name",
                &name,
                "--role",
                "Agent",
                "--ttl",
                "60",
                "--storage-path",
                &data_arg,
                "--keys-dir",
                &keys_arg,
            ],
            &[],
        )
        .spawn()
        .expect("spawn");
        drop(child.stdin.take());
        // 0–30 ms, spread over the run at sub-millisecond steps so every phase of a ~5 ms
        // run (start-up, migration, insert, print) gets hit. The delay is what is being
        // tested, not a synchronisation.
        std::thread::sleep(Duration::from_micros(i * 7_919 % 30_000));
        let _ = child.kill();
        let out = child.wait_with_output().expect("wait");
        if out.status.success() {
            let key = String::from_utf8(out.stdout).expect("utf-8");
            let key = key.trim().to_owned();
            assert!(!key.is_empty(), "{name} exited 0 without printing a key");
            printed.push((name, key));
        } else {
            killed += 1;
        }
    }
    println!(
        "api-key create: {} of {RUNS} runs finished, {killed} were killed",
        printed.len()
    );

    let store = Store::open(&data).expect("the store opens after the crashes");
    let (integrity, rows) = store
        .sqlite()
        .expect("an SQLite store")
        .with(|c| {
            let integrity: String = c.query_row("PRAGMA integrity_check", [], |r| r.get(0))?;
            let mut stmt = c.prepare("SELECT name, jti FROM api_keys")?;
            let rows = stmt
                .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?
                .collect::<Result<Vec<_>, _>>()?;
            Ok((integrity, rows))
        })
        .expect("query");
    assert_eq!(integrity, "ok");
    let mut by_name: HashMap<String, String> = HashMap::new();
    for (name, jti) in rows {
        assert!(!jti.is_empty(), "{name} has an empty jti");
        assert!(name.starts_with("crash-"), "{name}");
        assert!(by_name.insert(name.clone(), jti).is_none(), "{name} twice");
    }
    for (name, key) in &printed {
        let jti = claims_of(key)["jti"].as_str().expect("jti").to_owned();
        assert_eq!(
            by_name.get(name),
            Some(&jti),
            "{name} was printed but not recorded with its jti"
        );
    }
    drop(store);
    // And the store still works for the next command.
    pyrogate(
        &[
            "api-key",
            "create",
            "--name",
            "after-the-crashes",
            "--role",
            "Agent",
            "--storage-path",
            &data_arg,
            "--keys-dir",
            &keys_arg,
        ],
        &[],
        "",
    )
    .ok();
}
