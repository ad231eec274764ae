//! `pyrogate spool dead list|retry|drop`, the real binary, on the spool of a real node while it
//! runs: an upstream answering 400 dead-letters spooled pushes; `list` shows them with the
//! reason and never the agent's credentials; once the upstream takes pushes again `retry` gets
//! one delivered by the running node, `drop` deletes the other; unknown ids fail clearly.

use serde_json::{Value, json};

use crate::harness::{Deadline, Node, Output, Upstream, pyrogate_async};

/// What the agent sends as its key; the node never stores it, and no listing may show it.
const AGENT_KEY: &str = "agent-key-that-must-never-be-listed";

fn body(n: usize) -> String {
    format!("dead;letter {n}\n")
}

async fn spool(args: &[&str], config: &str) -> Output {
    let mut all = vec!["spool", "dead"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--config", config]);
    pyrogate_async(&all, &[], "").await
}

async fn listed(config: &str) -> Vec<Value> {
    let out = spool(&["list", "--json"], config).await.ok();
    assert!(!out.stdout.contains(AGENT_KEY), "{}", out.stdout);
    match serde_json::from_str(&out.stdout) {
        Ok(Value::Array(rows)) => rows,
        other => panic!("not a JSON array: {other:?}\n{}", out.stdout),
    }
}

async fn wait_metric(node: &Node, name: &str, want: f64) {
    let deadline = Deadline::secs(20, format!("{name} to be {want}"));
    loop {
        let got = node.metric(name).await;
        if got == want {
            return;
        }
        deadline.tick(|| format!("{name} = {got}")).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_are_listed_with_their_reason_retried_into_delivery_and_dropped_beside_a_running_node()
 {
    let dir = tempfile::tempdir().expect("temp dir");
    let upstream = Upstream::start().await;
    upstream.set_down(true);
    // The node's own configuration file is what the command reads.
    let yaml = format!(
        "storage-path: {:?}\nupstream:\n  url: {}\n",
        dir.path(),
        upstream.url()
    );
    let config_path = dir.path().join("node.yaml");
    std::fs::write(&config_path, &yaml).expect("write the config");
    let config = config_path.to_str().expect("utf-8 path");
    let node = Node::start(dir.path(), &yaml).await;
    for n in 0..2 {
        let r = node
            .client()
            .post(&format!("/ingest?name=dead.cpu&n={n}"))
            .headers(&[
                ("content-type", "text/plain"),
                ("x-scope-orgid", "tenant-d"),
                ("authorization", &format!("Bearer {AGENT_KEY}")),
            ])
            .body(body(n))
            .send()
            .await
            .expect(200);
        assert_eq!(r.header("pyrogate-spooled"), Some("true"), "push {n}");
    }
    upstream.script(&[(400, None), (400, None)]);
    upstream.set_down(false);
    wait_metric(&node, "pyrogate_spool_dead_letters", 2.0).await;
    assert!(upstream.accepted().is_empty());

    // list: both, with why, and nothing secret.
    let table = spool(&["list"], config).await.ok().stdout;
    assert!(!table.contains(AGENT_KEY), "{table}");
    assert!(
        table.contains("tenant-d") && table.contains("dead.cpu"),
        "{table}"
    );
    assert!(table.contains("upstream answered 400"), "{table}");
    let rows = listed(config).await;
    assert_eq!(rows.len(), 2, "{rows:?}");
    let ids: Vec<String> = rows
        .iter()
        .map(|r| r["id"].as_str().expect("id").to_owned())
        .collect();
    for row in &rows {
        assert_eq!(row["tenant"], json!("tenant-d"), "{row}");
        assert_eq!(row["app"], json!("dead.cpu"), "{row}");
        assert_eq!(row["path"], json!("/ingest"), "{row}");
        assert_eq!(row["damaged"], Value::Null, "{row}");
        assert!(row["bytes"].as_u64().unwrap_or(0) > 0, "{row}");
        assert!(row["ageSeconds"].as_u64().is_some(), "{row}");
        let reason = row["reason"].as_str().unwrap_or_default();
        assert!(reason.contains("400"), "{row}");
    }

    // Unknown ids fail, naming the id, and change nothing.
    for args in [
        vec!["retry", "999"],
        vec!["drop", "999", "--yes"],
        vec!["retry", "../node.yaml"],
    ] {
        let out = spool(&args, config).await.fails();
        assert!(
            out.stderr.contains("no dead letter") && out.stderr.contains(args[1]),
            "{}",
            out.stderr
        );
    }
    // drop wants --yes.
    let out = spool(&["drop", &ids[1]], config).await;
    assert_eq!(out.code, Some(2), "{out:?}");
    assert!(out.stderr.contains("--yes"), "{}", out.stderr);
    assert_eq!(listed(config).await.len(), 2);

    // The upstream takes pushes again (the script is used up): a retried entry is delivered by
    // the running node, once.
    let out = spool(&["retry", &ids[0]], config).await.ok();
    assert_eq!(out.stdout.trim(), ids[0]);
    let got = upstream.wait_accepted(1, 20).await;
    assert_eq!(got[0].body, body(0));
    assert_eq!(got[0].tenant(), Some("tenant-d"));
    assert_eq!(got[0].header("authorization"), None);
    wait_metric(&node, "pyrogate_spool_entries", 0.0).await;
    wait_metric(&node, "pyrogate_spool_dead_letters", 1.0).await;
    let rows = listed(config).await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["id"], json!(ids[1]));

    // drop deletes the other; the node's gauge and /ready follow.
    let out = spool(&["drop", &ids[1], "--yes"], config).await.ok();
    assert_eq!(out.stdout.trim(), ids[1]);
    assert!(listed(config).await.is_empty());
    wait_metric(&node, "pyrogate_spool_dead_letters", 0.0).await;
    assert_eq!(node.ready().await["spoolDeadLetters"], json!(0));
    let out = spool(&["retry", &ids[1]], config).await.fails();
    assert!(out.stderr.contains("no dead letter"), "{}", out.stderr);
    assert_eq!(
        upstream.accepted().len(),
        1,
        "the dropped push was never sent"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_retried_while_the_node_is_stopped_are_delivered_after_it_starts() {
    let dir = tempfile::tempdir().expect("temp dir");
    let upstream = Upstream::start().await;
    upstream.set_down(true);
    let yaml = format!("upstream: {}\n", upstream.url());
    let mut node = Node::start(dir.path(), &yaml).await;
    node.client()
        .post("/ingest?name=later.cpu")
        .body(body(7))
        .send()
        .await
        .expect(200);
    upstream.script(&[(422, None)]);
    upstream.set_down(false);
    wait_metric(&node, "pyrogate_spool_dead_letters", 1.0).await;
    node.stop().await;

    let storage = dir.path().to_str().expect("utf-8 path");
    let out = pyrogate_async(
        &["spool", "dead", "retry", "--all"],
        &[("PYROSCOPE_STORAGE_PATH", storage)],
        "",
    )
    .await
    .ok();
    assert_eq!(out.stdout.lines().count(), 1, "{out:?}");

    let node = node.restart().await;
    let got = upstream.wait_accepted(1, 20).await;
    assert_eq!(got[0].body, body(7));
    wait_metric(&node, "pyrogate_spool_dead_letters", 0.0).await;
    wait_metric(&node, "pyrogate_spool_entries", 0.0).await;
}
