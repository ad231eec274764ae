//! The official Rust Pyroscope agent (`pyroscope` crate, pprof-rs backend, reqwest + rustls),
//! driven by pyrogate's integration tests. Built by `scripts/install-test-deps.sh` outside the
//! pyrogate crate's dependency tree (its own Cargo.lock, its own target directory).
//!
//! Environment: PYRO_SERVER, PYRO_APP, PYRO_USER, PYRO_KEY (HTTP Basic: the key as password),
//! PYRO_SECONDS. TLS roots come from the system store, or SSL_CERT_FILE.

use std::time::{Duration, Instant};

use pyroscope::backend::{pprof_backend, BackendConfig, PprofConfig};
use pyroscope::pyroscope::PyroscopeAgentBuilder;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // reqwest is built without a default crypto provider: use ring, as pyrogate does.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let env = |name: &str| std::env::var(name).unwrap_or_default();
    let seconds: f64 = env("PYRO_SECONDS").parse().unwrap_or(3.0);
    let mut builder = PyroscopeAgentBuilder::new(
        env("PYRO_SERVER"),
        env("PYRO_APP"),
        100,
        "pyroscope-rs",
        "2.1.5",
        pprof_backend(PprofConfig::default(), BackendConfig::default()),
    )
    .upload_interval(Duration::from_secs(1));
    let key = env("PYRO_KEY");
    if !key.is_empty() {
        builder = builder.basic_auth(env("PYRO_USER"), key);
    }
    let running = builder.build()?.start()?;
    let end = Instant::now() + Duration::from_secs_f64(seconds);
    let mut n: u64 = 0;
    while Instant::now() < end {
        for i in 0..100_000u64 {
            n = n.wrapping_add(i * i);
        }
        std::hint::black_box(n);
    }
    let ready = running.stop()?;
    ready.shutdown();
    println!("burned {n}");
    Ok(())
}
