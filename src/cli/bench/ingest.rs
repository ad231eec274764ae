//! `pyrogate bench ingest`: push throughput through an ingest node, auth off vs auth on, in
//! one run.

use std::fmt;
use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;

use pyrogate::core::b64;
use pyrogate::core::crypto::SigningKey;
use pyrogate::core::jwk::KeySet;
use pyrogate::core::jws::Signer;
use pyrogate::core::token::{self, KeyRequest, Role};

use super::{TempDir, median, node_settings, start_node};

/// Result of `pyrogate bench ingest`.
#[derive(Debug, Clone, Serialize)]
pub struct IngestReport {
    /// TLS on both hops.
    pub tls: bool,
    pub body_bytes: usize,
    pub concurrency: usize,
    pub rounds: usize,
    pub seconds_per_round: f64,
    /// Best round of each mode: noise only ever lowers throughput, so this is the robust
    /// estimate of what each mode can do on this machine.
    pub auth_off_rps: f64,
    pub auth_on_rps: f64,
    pub auth_on_over_off: f64,
    /// Median round of each mode, and the median of per-round ratios.
    pub auth_off_median_rps: f64,
    pub auth_on_median_rps: f64,
    pub auth_on_over_off_median: f64,
}

impl fmt::Display for IngestReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "ingest benchmark{}: {}-byte pushes, {} concurrent clients, {} rounds × {:.1} s per mode",
            if self.tls {
                " (TLS client → node → upstream)"
            } else {
                ""
            },
            self.body_bytes,
            self.concurrency,
            self.rounds,
            self.seconds_per_round
        )?;
        writeln!(f, "{:<24} {:>14} {:>14}", "mode", "pushes/s best", "median")?;
        writeln!(
            f,
            "{:<24} {:>14.0} {:>14.0}",
            "auth off", self.auth_off_rps, self.auth_off_median_rps
        )?;
        writeln!(
            f,
            "{:<24} {:>14.0} {:>14.0}",
            "auth on (Agent key)", self.auth_on_rps, self.auth_on_median_rps
        )?;
        writeln!(
            f,
            "auth on / auth off = {:.3} (best rounds), {:.3} (median of per-round ratios)",
            self.auth_on_over_off, self.auth_on_over_off_median
        )
    }
}

/// Pushes `body_bytes`-byte profiles through two in-process ingest nodes — auth off and auth
/// on — to a local upstream that answers 200, alternating rounds (ABBA) so both see the same
/// machine. Both nodes get identical requests (key and `X-Scope-OrgID` included, as agents
/// configured with a key send them), so the difference is the cost of checking the key.
pub async fn ingest(
    seconds_per_round: f64,
    rounds: usize,
    concurrency: usize,
    body_bytes: usize,
    tls_dir: Option<&std::path::Path>,
) -> anyhow::Result<IngestReport> {
    use axum::Router;
    use axum::routing::post;
    use http_body_util::Full;
    use pyrogate::config::{ClientTls, ServerTls};
    use pyrogate::edge::server::{Lifecycle, Server};

    let cleanup = TempDir::new("")?;
    let dir = cleanup.path().to_path_buf();

    let server_tls = tls_dir.map(|d| ServerTls {
        cert_path: d.join("cert.pem"),
        key_path: d.join("key.pem"),
        client_ca_path: None,
    });
    let (scheme, host) = match tls_dir {
        Some(_) => ("https", "localhost"),
        None => ("http", "127.0.0.1"),
    };
    // Upstream: accepts everything (over TLS too, through the same server shell).
    let upstream = Server::bind(
        &pyrogate::config::ServerSettings {
            api_bind_addr: "127.0.0.1:0".parse()?,
            log_level: "error",
            storage_path: dir.clone(),
            tls: server_tls,
            read_timeout: std::time::Duration::from_secs(30),
            max_connections: 0,
            max_connections_per_client: 0,
            allowed_hosts: Vec::new(),
        },
        Router::new().route("/ingest", post(|| async { "" })),
    )
    .await?;
    let upstream_port = upstream.local_addr().port();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut upstream_stopped = stopped.clone();
    let upstream_task = tokio::spawn(upstream.run_until(
        async move {
            let _ = upstream_stopped.wait_for(|s| *s).await;
        },
        Lifecycle::new(),
    ));
    let tls_yaml = match tls_dir {
        Some(d) => format!(
            "server:\n  http-tls-cert-path: {:?}\n  http-tls-key-path: {:?}\nupstream:\n  url: https://localhost:{upstream_port}\n  tls-ca-path: {:?}\n",
            d.join("cert.pem"),
            d.join("key.pem"),
            d.join("ca.pem")
        ),
        None => format!("upstream:\n  url: http://127.0.0.1:{upstream_port}\n"),
    };

    // A signing key and its JWKS file for the auth-on node.
    let signer = Signer::new(SigningKey::generate());
    let jwks = KeySet::new([signer.verifying_key()]).to_jwks();
    let jwks_path = dir.join("jwks.json");
    std::fs::write(&jwks_path, serde_json::to_vec(&jwks)?)?;
    let clock: Arc<dyn pyrogate::core::clock::Clock> = Arc::new(pyrogate::core::clock::SystemClock);
    let token = token::issue(
        &signer,
        "pyrogate",
        clock.now(),
        &KeyRequest {
            name: "bench-agent",
            role: Role::Agent,
            ttl_seconds: 3600,
            tenant: Some("bench"),
            apps: None,
            cidrs: None,
        },
    )?
    .token;

    let mut ports = Vec::new();
    let mut nodes = Vec::new();
    for auth in [false, true] {
        let yaml = format!(
            "api-bind-addr: 127.0.0.1:0\nstorage-path: {:?}\n{tls_yaml}log-level: error\nauth:\n  ingestion:\n    enabled: {auth}\n{}",
            dir.join(if auth { "on" } else { "off" }),
            if auth {
                format!("jwks-file: {:?}\n", jwks_path)
            } else {
                String::new()
            }
        );
        let (port, node) = start_node(node_settings(&yaml)?, clock.clone(), &stopped).await?;
        ports.push(port);
        nodes.push(node);
    }

    let body = axum::body::Bytes::from(b64::random(body_bytes).into_bytes()[..body_bytes].to_vec());
    let client_tls = pyrogate::edge::tls::client_config(&ClientTls {
        peer: "bench",
        ca_path: tls_dir.map(|d| d.join("ca.pem")),
        client_cert: None,
        insecure_skip_verify: false,
    })?;
    let client = pyrogate::edge::client::http_client(std::time::Duration::from_secs(5), client_tls);
    let bearer = format!("Bearer {}", token.expose());
    let run = |port: u16| {
        let client = client.clone();
        let body = body.clone();
        let bearer = bearer.clone();
        async move {
            let deadline = Instant::now() + std::time::Duration::from_secs_f64(seconds_per_round);
            let mut tasks = Vec::new();
            for _ in 0..concurrency {
                let (client, body, bearer) = (client.clone(), body.clone(), bearer.clone());
                tasks.push(tokio::spawn(async move {
                    let mut ok = 0u64;
                    while Instant::now() < deadline {
                        let mut req = axum::http::Request::post(format!(
                            "{scheme}://{host}:{port}/ingest?name=bench.cpu"
                        ))
                        .header("content-type", "application/octet-stream");
                        // The same push to both nodes — key and tenant header included, as an
                        // agent configured with a key sends them — so the only difference is
                        // whether the node checks the key.
                        req = req
                            .header("authorization", bearer.as_str())
                            .header("x-scope-orgid", "bench");
                        let Ok(req) = req.body(Full::new(body.clone())) else {
                            break;
                        };
                        if let Ok(resp) = client.request(req).await
                            && resp.status().is_success()
                        {
                            ok += 1;
                        }
                    }
                    ok
                }));
            }
            let start = Instant::now();
            let mut total = 0;
            for t in tasks {
                total += t.await.unwrap_or(0);
            }
            total as f64 / start.elapsed().as_secs_f64().max(seconds_per_round)
        }
    };
    // Warm both paths (connection pools, the verified-token cache).
    run(ports[0]).await;
    run(ports[1]).await;
    let (mut off, mut on, mut ratios) = (vec![], vec![], vec![]);
    for round in 0..rounds {
        // ABBA order: a drift in machine load favours neither mode.
        let (a, b) = if round % 2 == 0 {
            let a = run(ports[0]).await;
            (a, run(ports[1]).await)
        } else {
            let b = run(ports[1]).await;
            (run(ports[0]).await, b)
        };
        off.push(a);
        on.push(b);
        ratios.push(b / a.max(1.0));
    }
    // Stop the nodes (and their file watchers) before their directory goes.
    stop.send_replace(true);
    for node in nodes {
        let _ = node.await;
    }
    let _ = upstream_task.await;
    drop(cleanup);
    let best = |xs: &[f64]| xs.iter().copied().fold(0.0, f64::max);
    let (auth_off_rps, auth_on_rps) = (best(&off), best(&on));
    Ok(IngestReport {
        tls: tls_dir.is_some(),
        body_bytes,
        concurrency,
        rounds,
        seconds_per_round,
        auth_off_rps,
        auth_on_rps,
        auth_on_over_off: auth_on_rps / auth_off_rps.max(1.0),
        auth_off_median_rps: median(off),
        auth_on_median_rps: median(on),
        auth_on_over_off_median: median(ratios),
    })
}
