//! Fleet reports: ingest nodes with a Node key report their traffic and health to the
//! authority, which shows each key's last use, the apps it pushed and every node's state.
//! Reports go out every second here (`node.report-interval: 1s`); each wait allows two
//! intervals plus slack for a busy test machine.

use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::{Authority, Deadline, Http, Node, Upstream, metric_value, plane};

/// A legacy push for `app` with `key`; returns the status.
async fn push(node: &Http, key: &str, app: &str) -> u16 {
    node.post(&format!("/ingest?name={app}&from=1&until=2"))
        .bearer(key)
        .raw("text/plain", "main;work 1\n")
        .send()
        .await
        .status
        .as_u16()
}

fn key_named<'a>(keys: &'a Value, name: &str) -> &'a Value {
    keys.as_array()
        .and_then(|a| a.iter().find(|k| k["name"] == name))
        .unwrap_or_else(|| panic!("key {name} in {keys}"))
}

fn node_named<'a>(nodes: &'a Value, name: &str) -> Option<&'a Value> {
    nodes.as_array()?.iter().find(|n| n["name"] == name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_report_last_use_apps_and_spool_and_a_stopped_node_shows_as_not_reporting() {
    let dir = tempfile::tempdir().expect("temp dir");
    let authority = Authority::on_system_clock().await;
    let admin = authority.admin().await;
    let healthy = Upstream::start().await;
    let mut down = Upstream::start().await;
    down.stop().await;
    let (_, node_key_1) = authority.new_key("ingest-1-key", "Node", None).await;
    let (_, node_key_2) = authority.new_key("ingest-2-key", "Node", None).await;
    let (_, agent_a) = authority.new_key("agent-a", "Agent", None).await;
    let (_, agent_b) = authority.new_key("agent-b", "Agent", None).await;
    let mut one = Node::reporting(
        &dir.path().join("one"),
        &authority,
        &healthy.url(),
        "ingest-1",
        &node_key_1,
    )
    .await;
    let two = Node::reporting(
        &dir.path().join("two"),
        &authority,
        &down.url(),
        "ingest-2",
        &node_key_2,
    )
    .await;

    assert_eq!(push(&one.client(), &agent_a, "checkout.cpu").await, 200);
    // Through the node whose upstream is down: taken, and kept in its spool.
    assert_eq!(push(&two.client(), &agent_b, "billing.cpu").await, 200);
    // A Node key is no agent's key.
    assert_eq!(push(&one.client(), &node_key_1, "checkout.cpu").await, 403);

    let deadline = Deadline::after(
        Duration::from_secs(4),
        "both keys' last use on the authority",
    );
    let keys = loop {
        let keys = admin.get("/api/keys").send().await.expect(200).json();
        if !key_named(&keys, "agent-a")["lastUsedAt"].is_null()
            && !key_named(&keys, "agent-b")["lastUsedAt"].is_null()
        {
            break keys;
        }
        deadline.tick(|| keys.to_string()).await;
    };
    assert_eq!(
        key_named(&keys, "agent-a")["lastUsedBy"],
        json!({"node": "ingest-1", "app": "checkout.cpu"})
    );
    assert_eq!(
        key_named(&keys, "agent-b")["lastUsedBy"],
        json!({"node": "ingest-2", "app": "billing.cpu"})
    );
    // The node keys are seen in use too (reporting), but not as pushing anything.
    assert!(key_named(&keys, "ingest-1-key")["lastUsedBy"].is_null());

    let deadline = Deadline::after(
        Duration::from_secs(4),
        "ingest-2's backlog on the authority",
    );
    let nodes = loop {
        let nodes = admin.get("/api/nodes").send().await.expect(200).json();
        if node_named(&nodes, "ingest-2").is_some_and(|n| n["spoolEntries"].as_u64() >= Some(1))
            && node_named(&nodes, "ingest-1").is_some()
        {
            break nodes;
        }
        deadline.tick(|| nodes.to_string()).await;
    };
    let first = node_named(&nodes, "ingest-1").expect("ingest-1");
    let second = node_named(&nodes, "ingest-2").expect("ingest-2");
    assert_eq!(first["state"], "ok", "{first}");
    assert_eq!(second["state"], "backlog", "{second}");
    assert_eq!(first["version"], env!("CARGO_PKG_VERSION"));
    assert!(first["keySetVersion"].as_u64() >= Some(1), "{first}");
    assert_eq!(first["refusals"]["role"], 1, "the Node key's push: {first}");

    let ingestion = admin.get("/api/ingestion").send().await.expect(200).json();
    let fleet = ingestion["fleet"].as_array().expect("fleet");
    let checkout = fleet
        .iter()
        .find(|a| a["app"] == "checkout.cpu")
        .expect("checkout.cpu");
    assert_eq!(checkout["pushes"], 1);
    assert_eq!(checkout["keys"][0]["key"], "agent-a");
    assert_eq!(checkout["nodes"][0]["node"], "ingest-1");

    let metrics = authority
        .client()
        .get("/metrics")
        .send()
        .await
        .expect(200)
        .text();
    assert_eq!(
        metric_value(&metrics, "pyrogate_fleet_nodes{state=\"backlog\"}"),
        1.0,
        "{metrics}"
    );
    assert!(metric_value(&metrics, "pyrogate_fleet_spool_entries{node=\"ingest-2\"}") >= 1.0);

    // ingest-1 stops: after three intervals without a report it is not reporting.
    one.stop().await;
    let deadline = Deadline::after(Duration::from_secs(8), "ingest-1 to show as not reporting");
    loop {
        let nodes = admin.get("/api/nodes").send().await.expect(200).json();
        if node_named(&nodes, "ingest-1").is_some_and(|n| n["state"] == "not_reporting") {
            assert_ne!(
                node_named(&nodes, "ingest-2").expect("ingest-2")["state"],
                "not_reporting"
            );
            break;
        }
        deadline.tick(|| nodes.to_string()).await;
    }
    drop(two);
}

/// A minimal valid report, as a node would send it.
fn report(seq: u64) -> Value {
    json!({
        "node": "ingest-9", "version": "test", "startedAt": 1000, "seq": seq,
        "intervalSeconds": 15, "keySetVersion": 1, "revocationsVersion": 1,
        "revocationsAgeSeconds": 1, "stale": false,
        "spool": {"entries": 0, "bytes": 0, "oldestSeconds": 0, "deadLetters": 0},
        "reportFailures": 0, "refusals": {},
        "usage": [{"jti": "j".repeat(22), "key": "k", "app": "a.cpu", "pushes": 2, "bytes": 20,
                   "refused": 0, "lastPushAt": 1010}]
    })
}

#[tokio::test]
async fn only_a_live_node_key_may_report_and_it_may_do_nothing_else() {
    let authority = Authority::start_with("auth:\n  ingestion:\n    enabled: true\n").await;
    let (_, agent) = authority.new_key("agent", "Agent", None).await;
    let (_, reader) = authority.new_key("reader", "ReadOnly", None).await;
    let (_, admin_key) = authority.new_key("automation", "Admin", None).await;
    let (node_id, node_key) = authority.new_key("ingest-9", "Node", None).await;
    let http = authority.client();
    let post =
        |key: &str, body: &Value| http.post("/api/nodes/report").bearer(key).json(body).send();

    for key in [&agent, &reader, &admin_key] {
        let r = post(key, &report(1)).await.expect(403);
        assert!(r.text().contains("Node"), "{}", r.text());
    }
    http.post("/api/nodes/report")
        .json(&report(1))
        .send()
        .await
        .expect(401);
    http.post("/api/nodes/report")
        .bearer(&crate::harness::tamper(&node_key))
        .json(&report(1))
        .send()
        .await
        .expect(401);

    let r = post(&node_key, &report(1)).await.expect(200).json();
    assert_eq!(r["duplicate"], false);
    // The same report again (its answer lost): acknowledged, not counted twice.
    let r = post(&node_key, &report(1)).await.expect(200).json();
    assert_eq!(r["duplicate"], true);
    let admin = authority.admin().await;
    let ingestion = admin.get("/api/ingestion").send().await.expect(200).json();
    assert_eq!(ingestion["fleet"][0]["pushes"], 2, "{ingestion}");

    // Reports outside the bounds: 400, with the reason.
    let mut bad = report(2);
    bad["node"] = json!("not a name");
    let r = post(&node_key, &bad).await.expect(400);
    assert!(r.text().contains("node"), "{}", r.text());
    let mut bad = report(2);
    bad["usage"] = json!(vec![report(1)["usage"][0].clone(); 502]);
    post(&node_key, &bad).await.expect(400);
    http.post("/api/nodes/report")
        .bearer(&node_key)
        .raw("application/json", "{not json")
        .send()
        .await
        .expect(400);

    // A Node key is good for nothing else: not the admin API, not the ingest routes.
    http.get("/api/keys")
        .bearer(&node_key)
        .send()
        .await
        .expect(403);
    http.get("/api/nodes")
        .bearer(&node_key)
        .send()
        .await
        .expect(403);
    assert_eq!(push(&http, &node_key, "a.cpu").await, 403);
    assert_eq!(push(&http, &agent, "a.cpu").await, 200);
    // Nor can a user be given the Node role.
    admin
        .post("/api/users")
        .json(&json!({"name": "nodey", "password": "a-long-enough-password-1", "role": "Node"}))
        .send()
        .await
        .expect(400);

    // Revoked: 401, on the authority's own revocation list.
    authority.delete_key(node_id).await;
    post(&node_key, &report(2)).await.expect(401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_without_a_node_key_serves_pushes_as_before_and_reports_nothing() {
    let p = plane().await;
    let (_, agent) = p.authority.new_key("agent", "Agent", None).await;
    assert_eq!(push(&p.http, &agent, "plain.cpu").await, 200);
    p.upstream.wait_accepted(1, 10).await;
    let admin = p.authority.admin().await;
    let nodes = admin.get("/api/nodes").send().await.expect(200).json();
    assert_eq!(nodes, json!([]));
    assert!(
        key_named(
            &admin.get("/api/keys").send().await.expect(200).json(),
            "agent"
        )["lastUsedBy"]
            .is_null()
    );
}

/// The pushes of `app` the authority counts fleet-wide (0 before any).
async fn fleet_pushes(admin: &Http, app: &str) -> u64 {
    let ingestion = admin.get("/api/ingestion").send().await.expect(200).json();
    ingestion["fleet"]
        .as_array()
        .and_then(|apps| apps.iter().find(|a| a["app"] == app))
        .and_then(|a| a["pushes"].as_u64())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counts_made_while_the_authority_is_down_arrive_once_when_it_is_back() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut authority = Authority::on_system_clock().await;
    let upstream = Upstream::start().await;
    let (_, node_key) = authority.new_key("ingest-1-key", "Node", None).await;
    let (_, agent) = authority.new_key("agent", "Agent", None).await;
    let node = Node::reporting(
        &dir.path().join("n"),
        &authority,
        &upstream.url(),
        "ingest-1",
        &node_key,
    )
    .await;
    assert_eq!(push(&node.client(), &agent, "outage.cpu").await, 200);
    let admin = authority.admin().await;
    let deadline = Deadline::after(Duration::from_secs(4), "the first push counted");
    while fleet_pushes(&admin, "outage.cpu").await != 1 {
        deadline.tick(String::new).await;
    }

    authority.stop().await;
    for _ in 0..2 {
        assert_eq!(push(&node.client(), &agent, "outage.cpu").await, 200);
    }
    let deadline = Deadline::after(Duration::from_secs(6), "a report to fail");
    while node.metric("pyrogate_node_report_failures_total").await < 1.0 {
        deadline.tick(String::new).await;
    }
    let authority = authority.restart_at_same_address().await;
    let admin = authority.admin().await;
    let deadline = Deadline::after(Duration::from_secs(6), "the pushes made during the outage");
    while fleet_pushes(&admin, "outage.cpu").await < 3 {
        deadline.tick(String::new).await;
    }
    // Two more reports go through; the count stays where it is.
    let seq = |nodes: Value| nodes[0]["seq"].as_u64().unwrap_or(0);
    let after = seq(admin.get("/api/nodes").send().await.expect(200).json()) + 2;
    let deadline = Deadline::after(Duration::from_secs(6), "two more reports");
    while seq(admin.get("/api/nodes").send().await.expect(200).json()) < after {
        deadline.tick(String::new).await;
    }
    assert_eq!(fleet_pushes(&admin, "outage.cpu").await, 3);
}

#[tokio::test]
async fn keys_expiring_soon_or_unused_for_30_days_are_flagged_and_counted() {
    let authority = Authority::start().await;
    let admin = authority.admin().await;
    for (name, ttl) in [
        ("old-ci", 0),
        ("rotating", 40 * 86_400),
        ("fresh", 0),
        ("expired", 86_400),
    ] {
        admin
            .post("/api/keys")
            .json(&json!({"name": name, "role": "Agent", "ttlSeconds": ttl}))
            .send()
            .await
            .expect(201);
    }
    authority.clock().advance(35 * 86_400);
    let admin = authority.admin().await;
    admin
        .post("/api/keys")
        .json(&json!({"name": "new", "role": "Agent", "ttlSeconds": 3 * 86_400}))
        .send()
        .await
        .expect(201);
    pyrogate::authority::routes::nodes::refresh_all_metrics(&authority.state).await;
    let keys = admin.get("/api/keys").send().await.expect(200).json();
    let flags = |name: &str| {
        let k = key_named(&keys, name);
        (
            k["expiringSoon"].as_bool().unwrap(),
            k["unused"].as_bool().unwrap(),
        )
    };
    assert_eq!(flags("old-ci"), (false, true));
    assert_eq!(flags("rotating"), (true, true), "expires in 5 days");
    assert_eq!(flags("fresh"), (false, true));
    assert_eq!(
        flags("new"),
        (true, false),
        "3 days left, too new to be unused"
    );
    assert_eq!(flags("expired"), (false, false), "dead, not unused");
    let metrics = authority
        .client()
        .get("/metrics")
        .send()
        .await
        .expect(200)
        .text();
    assert_eq!(
        metric_value(&metrics, "pyrogate_api_keys_expiring "),
        2.0,
        "{metrics}"
    );
    assert_eq!(
        metric_value(&metrics, "pyrogate_api_keys_unused "),
        3.0,
        "{metrics}"
    );
}
