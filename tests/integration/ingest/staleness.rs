//! `sync.max-staleness` counts on the node's injected clock: with the authority gone, a node
//! keeps accepting pushes until its clock says the last contact is older than the limit, and
//! then refuses them — and reads through its query proxy — with 503 and says so in `/ready`. Only the manual clock moves by ten
//! seconds here, so a node reading the system time instead would never turn stale in this test.

use std::sync::Arc;

use pyrogate::core::clock::{Clock as _, ManualClock, SystemClock};
use serde_json::json;

use crate::harness::{Authority, Deadline, Node, Upstream};

const PUSH: &str = "/ingest?name=staleness.cpu&format=folded";
const READ: &str = "/pyroscope/label-values?label=service_name";

#[tokio::test]
async fn a_node_refuses_pushes_once_its_clock_passes_max_staleness_without_the_authority() {
    let authority = Authority::on_system_clock().await;
    let (_, key) = authority.new_key("agent", "Agent", None).await;
    let (_, reader) = authority.new_key("reader", "ReadOnly", None).await;
    let upstream = Upstream::start().await;
    let clock = ManualClock::new(SystemClock.now());
    let storage = tempfile::tempdir().unwrap();
    let node = Node::start_with_clock(
        storage.path(),
        &format!(
            "authority-url: {}\nupstream: {}\nauth:\n  ingestion:\n    enabled: true\nsync:\n  wait: 1s\n  max-staleness: 10s\n{}",
            authority.origin(),
            upstream.url(),
            authority.trust_yaml()
        ),
        Arc::new(clock.clone()),
    )
    .await;
    node.wait_synced(authority.revocations_version().await)
        .await;
    let http = node.client();
    let push = || http.post(PUSH).bearer(&key).body("a;b 1\n").send();
    let read = || http.get(READ).bearer(&reader).send();
    push().await.expect(200);
    read().await.expect(200);

    drop(authority);
    let failures = "pyrogate_sync_failures_total";
    let failed = |n: f64| {
        let node = &node;
        async move {
            let deadline = Deadline::secs(30, format!("{n} failed contacts with the authority"));
            while node.metric(failures).await < n {
                deadline.tick(String::new).await;
            }
        }
    };
    failed(1.0).await;
    // Within the limit: the node checks again after its next failed contact and keeps serving.
    clock.advance(5);
    failed(2.0).await;
    let ready = node.ready().await;
    assert_eq!(ready["stale"], json!(false), "{ready}");
    push().await.expect(200);

    // Past it, by the node's clock only.
    clock.advance(6);
    let deadline = Deadline::secs(30, "the node to turn stale");
    loop {
        let ready = node.ready().await;
        if ready["stale"] == json!(true) {
            assert_eq!(ready["ready"], json!(false), "{ready}");
            break;
        }
        deadline.tick(|| ready.to_string()).await;
    }
    let refused = push().await.expect(503);
    assert!(
        refused.errors()[0].contains("sync.max-staleness"),
        "{:?}",
        refused.errors()
    );
    // A key revoked since the list was signed would pass the key check: reads stop too.
    let refused = read().await.expect(503);
    assert!(
        refused.errors()[0].contains("sync.max-staleness"),
        "{:?}",
        refused.errors()
    );
}
