//! A host without a system trust store (Debian without `ca-certificates`, a minimal node
//! image): pulls from plain-HTTP registries and from HTTPS registries whose CA hosts.toml
//! gives still work, and any other HTTPS pull fails with an error that says why. None panics:
//! berthd used to panic in every PullImage there, plain HTTP included ("No CA certificates
//! were loaded from the system", the client seeing only "stream terminated by RST_STREAM").
//!
//! Its own test binary: it points the trust store at nothing (SSL_CERT_FILE and SSL_CERT_DIR,
//! which the system trust store loader honours) for the whole process.

mod support;

use std::fs;
use std::path::Path;

use image_store::{Credentials, ImageStore, PullOptions, Reference, StoreConfig};
use support::*;

const TOOLS: &[&str] = &[
    "/usr/bin/docker-registry",
    "/usr/bin/umoci",
    "/usr/bin/skopeo",
    "/usr/bin/openssl",
    "/bin/busybox",
];

fn pull(root: &Path, reference: &str, setup: impl FnOnce(&mut StoreConfig)) -> Result<(), String> {
    let mut cfg = StoreConfig::new(root);
    cfg.registry.docker_config = Some(root.join("no-docker-config.json"));
    setup(&mut cfg);
    let store = ImageStore::open(cfg).unwrap();
    let r: Reference = reference.parse().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let opts = PullOptions {
        credentials: Credentials::Anonymous,
        ..PullOptions::default()
    };
    // A panic in the pull would fail this test: it must be an answer, good or bad.
    rt.block_on(store.pull(&r, &opts))
        .map(drop)
        .map_err(|e| e.to_string())
}

#[test]
fn pulls_without_a_system_trust_store() {
    let test = "pulls_without_a_system_trust_store";
    if !is_root() {
        eprintln!("SKIP {test}: needs root (the fixture's whiteouts, owners and fifo)");
        return;
    }
    if !have_tools(test, TOOLS) {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    // No system roots for this process (set before any client is built; the only test here).
    std::env::set_var("SSL_CERT_FILE", work.path().join("no-ca-bundle.pem"));
    std::env::set_var("SSL_CERT_DIR", work.path().join("no-ca-dir"));

    let plain = Registry::start();
    let ca_dir = work.path().join("ca");
    fs::create_dir_all(&ca_dir).unwrap();
    let ca = test_registry::tls::TestCa::new(&ca_dir).unwrap();
    let server = ca
        .server_cert("registry", &["IP:127.0.0.1", "DNS:localhost"])
        .unwrap();
    let tls = Registry::start_tls(&server, None);
    let layout = build_fixture(work.path());
    push(&layout, "app", &format!("{}/app:1", plain.host), &[]);
    push(&layout, "app", &format!("{}/app:1", tls.host), &[]);

    // Plain HTTP, listed insecure, and a loopback registry with no configuration.
    let root = tempfile::tempdir().unwrap();
    pull(root.path(), &format!("{}/app:1", plain.host), |c| {
        c.registry.insecure_hosts = vec![plain.host.clone()]
    })
    .expect("a plain-HTTP pull needs no CA certificates");
    let root = tempfile::tempdir().unwrap();
    pull(root.path(), &format!("{}/app:1", plain.host), |_| {})
        .expect("a loopback registry falls back to plain HTTP");

    // HTTPS with the CA in hosts.toml.
    let certs_d = work.path().join("certs.d");
    let host_dir = certs_d.join(&tls.host);
    fs::create_dir_all(&host_dir).unwrap();
    fs::copy(&ca.cert, host_dir.join("ca.pem")).unwrap();
    fs::write(
        host_dir.join("hosts.toml"),
        format!("server = \"https://{}\"\nca = \"ca.pem\"\n", tls.host),
    )
    .unwrap();
    let root = tempfile::tempdir().unwrap();
    pull(root.path(), &format!("{}/app:1", tls.host), |c| {
        c.registry.config_path = Some(certs_d.clone())
    })
    .expect("HTTPS with the registry's CA from hosts.toml");

    // HTTPS with nothing to verify it against: a clear error.
    let bare_d = work.path().join("bare.d");
    fs::create_dir_all(bare_d.join(&tls.host)).unwrap();
    fs::write(
        bare_d.join(&tls.host).join("hosts.toml"),
        format!("server = \"https://{}\"\n", tls.host),
    )
    .unwrap();
    let root = tempfile::tempdir().unwrap();
    let err = pull(root.path(), &format!("{}/app:1", tls.host), |c| {
        c.registry.config_path = Some(bare_d.clone())
    })
    .expect_err("HTTPS without any CA certificates");
    assert!(err.contains("no CA certificates"), "{err}");
    assert!(err.contains(&tls.host), "{err}");
}
