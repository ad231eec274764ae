//! Every distribution document is signed, so any static file server may serve them:
//! `pyrogate signing-key export` writes them in the authority's URL layout, a plain static
//! server serves that directory, and a pinned node syncs from it — or an air-gapped node reads
//! the same files.

use std::net::SocketAddr;
use std::path::PathBuf;

use axum::extract::Request;
use axum::http::StatusCode;
use axum::response::IntoResponse as _;
use tokio::sync::oneshot;

use crate::harness::*;

const PUSH: &str = "/ingest?name=mirror.cpu&format=folded";

/// A static file server for `dir`: the path is the file, the query string is ignored, as
/// nginx or a CDN would.
async fn static_mirror(
    dir: PathBuf,
) -> (
    SocketAddr,
    oneshot::Sender<()>,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
) {
    let hits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = hits.clone();
    let app = axum::Router::new().fallback(move |req: Request| {
        let path = dir.join(req.uri().path().trim_start_matches('/'));
        if req.uri().path() == "/api/revocations" {
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
        async move {
            match tokio::fs::read(&path).await {
                Ok(bytes) => bytes.into_response(),
                Err(_) => StatusCode::NOT_FOUND.into_response(),
            }
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = oneshot::channel::<()>();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = rx.await;
            })
            .await;
    });
    (addr, tx, hits)
}

async fn export(authority: &Authority, out: &std::path::Path) {
    let data = authority.data_dir();
    let keys = authority.keys_dir();
    let r = pyrogate_async(
        &[
            "signing-key",
            "export",
            "--out",
            out.to_str().unwrap(),
            "--storage-path",
            data.to_str().unwrap(),
            "--keys-dir",
            keys.to_str().unwrap(),
        ],
        &[],
        "",
    )
    .await;
    assert_eq!(r.code, Some(0), "{}", r.stderr);
}

async fn push(node: &Node, key: &str) -> u16 {
    node.push_status(PUSH, key).await
}

#[tokio::test]
async fn a_pinned_node_syncs_from_a_static_mirror_of_the_exported_documents() {
    let authority = Authority::on_system_clock().await;
    let (_, good) = authority.new_key("good", "Agent", None).await;
    let (doomed_id, doomed) = authority.new_key("doomed", "Agent", None).await;
    let mirror = tempfile::tempdir().unwrap();
    export(&authority, mirror.path()).await;
    let (addr, _stop, hits) = static_mirror(mirror.path().to_owned()).await;

    let storage = tempfile::tempdir().unwrap();
    let node = Node::start(
        storage.path(),
        &format!(
            "authority-url: http://{addr}\nauth:\n  ingestion:\n    enabled: true\nsync:\n  wait: 1s\n{}",
            authority.trust_yaml()
        ),
    )
    .await;
    node.wait_synced(0).await;
    assert_eq!(push(&node, &good).await, 200);
    assert_eq!(push(&node, &doomed).await, 200);
    // A static server answers at once, whatever ?wait=: the node paces itself by sync.wait.
    let before = hits.load(std::sync::atomic::Ordering::SeqCst);
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    let polls = hits.load(std::sync::atomic::Ordering::SeqCst) - before;
    assert!(
        polls <= 6,
        "{polls} polls of the mirror in 3 s with sync.wait 1s"
    );

    // Delete on the authority, re-export: the mirror's next answer revokes it.
    authority.delete_key(doomed_id).await;
    export(&authority, mirror.path()).await;
    let deadline = Deadline::secs(20, "the mirrored revocation to reach the node");
    while push(&node, &doomed).await != 401 {
        deadline.tick(String::new).await;
    }
    assert_eq!(push(&node, &good).await, 200);

    // The same files serve an air-gapped node.
    let air = tempfile::tempdir().unwrap();
    let gapped = Node::start(
        air.path(),
        &format!(
            "jwks-file: {:?}\nrevocations-file: {:?}\nauth:\n  ingestion:\n    enabled: true\n",
            mirror.path().join(".well-known/jwks.json"),
            mirror.path().join("api/revocations")
        ),
    )
    .await;
    assert_eq!(push(&gapped, &good).await, 200);
    assert_eq!(push(&gapped, &doomed).await, 401);
}
