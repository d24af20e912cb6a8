//! Registry hosts (containerd's hosts.toml in a certs.d directory) and docker's config.json
//! against real `docker-registry` processes: mirrors that are down or serving, a TLS registry
//! with a test CA (given as `ca`, as a `*.crt` file, or skipped with `skip_verify`), and
//! htpasswd auth over that TLS registry with credentials from the request, from config.json or
//! from a docker credential helper; mutual TLS (a client certificate as a pair, as one PEM, or
//! as docker's `*.cert`/`*.key` files).

mod support;

use std::fs;
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering as AtomicOrdering};
use std::sync::Arc;

use image_store::{Credentials, ImageStore, PullOptions, Reference, StoreConfig};
use support::*;
use test_registry::tls::{CertKey, TestCa};

const TOOLS: &[&str] = &[
    "/usr/bin/docker-registry",
    "/usr/bin/umoci",
    "/usr/bin/skopeo",
    "/usr/bin/openssl",
    "/bin/busybox",
];

fn runnable(test: &str) -> bool {
    if !is_root() {
        eprintln!("SKIP {test}: needs root (the fixture's whiteouts, owners and fifo)");
        return false;
    }
    have_tools(test, TOOLS)
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Pulls `reference` into a fresh store under `root` configured by `setup`.
fn pull(
    root: &Path,
    reference: &str,
    creds: Credentials,
    setup: impl FnOnce(&mut StoreConfig),
) -> Result<image_store::Image, String> {
    let mut cfg = StoreConfig::new(root);
    // No docker config unless the test names one.
    cfg.registry.docker_config = Some(root.join("no-docker-config.json"));
    setup(&mut cfg);
    let store = ImageStore::open(cfg).unwrap();
    let r: Reference = reference.parse().unwrap();
    let opts = PullOptions {
        credentials: creds,
        ..PullOptions::default()
    };
    rt().block_on(store.pull(&r, &opts))
        .map_err(|e| e.to_string())
}

fn hosts_toml(certs_d: &Path, registry: &str, text: &str) {
    let d = certs_d.join(registry);
    fs::create_dir_all(&d).unwrap();
    fs::write(d.join("hosts.toml"), text).unwrap();
}

#[test]
fn mirror_down_falls_back_to_the_server_and_a_live_mirror_serves() {
    if !runnable("mirror_down_falls_back_to_the_server") {
        return;
    }
    let server = Registry::start();
    let mirror = Registry::start();
    let work = tempfile::tempdir().unwrap();
    let layout = build_fixture(work.path());
    push(&layout, "app", &format!("{}/app:1", server.host), &[]);
    push(&layout, "app", &format!("{}/app:1", mirror.host), &[]);
    let dead = format!("127.0.0.1:{}", free_port());

    // A mirror nobody listens on, then the server: the pull falls back to the server.
    let certs_d = work.path().join("certs.d");
    hosts_toml(
        &certs_d,
        &server.host,
        &format!(
            "server = \"http://{}\"\n\n[host.\"http://{dead}\"]\n  capabilities = [\"pull\", \"resolve\"]\n",
            server.host
        ),
    );
    let root = tempfile::tempdir().unwrap();
    let image = pull(
        root.path(),
        &format!("{}/app:1", server.host),
        Credentials::Anonymous,
        |c| c.registry.config_path = Some(certs_d.clone()),
    )
    .unwrap_or_else(|e| panic!("fallback to the server failed: {e}"));
    assert_eq!(image.layers.len(), 3);

    // The registry itself is down; its mirror has the image: the mirror serves the pull
    // (requests carry `?ns=<registry>`, which docker-registry ignores).
    hosts_toml(
        &certs_d,
        &dead,
        &format!(
            "server = \"http://{dead}\"\n\n[host.\"http://{}\"]\n  capabilities = [\"pull\", \"resolve\"]\n",
            mirror.host
        ),
    );
    let root = tempfile::tempdir().unwrap();
    let from_mirror = pull(
        root.path(),
        &format!("{dead}/app:1"),
        Credentials::Anonymous,
        |c| c.registry.config_path = Some(certs_d.clone()),
    )
    .unwrap_or_else(|e| panic!("pull through the mirror failed: {e}"));
    assert_eq!(from_mirror.manifest_digest, image.manifest_digest);

    // A mirror that may only pull (not resolve) cannot answer the tag: with the server down
    // the error is the server's.
    hosts_toml(
        &certs_d,
        &dead,
        &format!(
            "server = \"http://{dead}\"\n\n[host.\"http://{}\"]\n  capabilities = [\"pull\"]\n",
            mirror.host
        ),
    );
    let root = tempfile::tempdir().unwrap();
    let err = pull(
        root.path(),
        &format!("{dead}/app:1"),
        Credentials::Anonymous,
        |c| c.registry.config_path = Some(certs_d.clone()),
    )
    .expect_err("the server is down and the mirror cannot resolve");
    assert!(
        err.contains(&format!("pull {dead}/app:1: manifest")),
        "{err}"
    );
    assert!(err.to_lowercase().contains("connect"), "{err}");
}

#[test]
fn tls_registry_with_test_ca_and_htpasswd() {
    if !runnable("tls_registry_with_test_ca_and_htpasswd") {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let (ca, server) = make_test_certs(work.path());
    let (user, password) = ("berth", "s3cret:x");
    let reg = Registry::start_tls(&server, Some((user, password)));
    let layout = build_fixture(work.path());
    push(
        &layout,
        "app",
        &format!("{}/app:tls", reg.host),
        &["--dest-creds", &format!("{user}:{password}")],
    );
    let reference = format!("{}/app:tls", reg.host);
    let basic = Credentials::Basic {
        username: user.into(),
        password: password.into(),
    };
    let certs_d = work.path().join("certs.d");

    // The server named in hosts.toml with no CA: the system roots do not know the test CA.
    // (With no hosts.toml at all, a registry on a loopback address is tried over HTTPS
    // without verification, then plain HTTP, as containerd does: checked below.)
    let no_ca_d = work.path().join("no-ca.d");
    hosts_toml(
        &no_ca_d,
        &reg.host,
        &format!("server = \"https://{}\"\n", reg.host),
    );
    let root = tempfile::tempdir().unwrap();
    let err = pull(root.path(), &reference, basic.clone(), |c| {
        c.registry.config_path = Some(no_ca_d.clone())
    })
    .expect_err("an unknown CA must fail");
    eprintln!("unknown CA: {err}");
    assert!(
        err.starts_with(&format!("pull {reference}: manifest")),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "TLS with https://{} failed: invalid peer certificate",
            reg.host
        )),
        "{err}"
    );
    assert!(
        !root.path().join("content/blobs").exists()
            || fs::read_dir(root.path().join("content/blobs/sha256")).map_or(0, |d| d.count()) == 0,
        "nothing stored"
    );

    // Nothing configured: a loopback registry's certificate is not checked (containerd's
    // localhost rule).
    let root = tempfile::tempdir().unwrap();
    pull(root.path(), &reference, basic.clone(), |_| {})
        .expect("a loopback registry over HTTPS, unverified, with no hosts.toml");

    // `ca` in hosts.toml (relative to the host's folder) makes it work.
    let host_dir = certs_d.join(&reg.host);
    fs::create_dir_all(&host_dir).unwrap();
    fs::copy(&ca.cert, host_dir.join("test-ca.pem")).unwrap();
    fs::write(
        host_dir.join("hosts.toml"),
        format!("server = \"https://{}\"\nca = \"test-ca.pem\"\n", reg.host),
    )
    .unwrap();
    let with_ca = |c: &mut StoreConfig| c.registry.config_path = Some(certs_d.clone());
    let root = tempfile::tempdir().unwrap();
    let image = pull(root.path(), &reference, basic.clone(), with_ca)
        .unwrap_or_else(|e| panic!("pull with the CA failed: {e}"));
    assert_eq!(image.layers.len(), 3);

    // Right CA, no credentials: the registry's 401 is reported as such.
    let root = tempfile::tempdir().unwrap();
    let err = pull(root.path(), &reference, Credentials::Anonymous, with_ca)
        .expect_err("anonymous must be refused");
    assert!(err.to_lowercase().contains("not authorized"), "{err}");

    // Credentials from docker's config.json when the request carries none.
    let docker = work.path().join("docker-config.json");
    let auth = base64_encode(format!("{user}:{password}").as_bytes());
    fs::write(
        &docker,
        format!(
            r#"{{"auths":{{"https://{}":{{"auth":"{auth}"}}}}}}"#,
            reg.host
        ),
    )
    .unwrap();
    let root = tempfile::tempdir().unwrap();
    pull(root.path(), &reference, Credentials::Anonymous, |c| {
        with_ca(c);
        c.registry.docker_config = Some(docker.clone());
    })
    .unwrap_or_else(|e| panic!("pull with config.json credentials failed: {e}"));

    // A credential helper named by config.json (`credsStore`), found in the configured helper
    // dirs, gets the registry's host on stdin.
    let helpers = work.path().join("helpers");
    fs::create_dir_all(&helpers).unwrap();
    let helper = helpers.join("docker-credential-berthtest");
    fs::write(
        &helper,
        format!(
            "#!/bin/sh\n[ \"$1\" = get ] || exit 2\nread server\n[ \"$server\" = \"{}\" ] || {{ echo credentials not found in native keychain; exit 1; }}\nprintf '{{\"ServerURL\":\"%s\",\"Username\":\"{user}\",\"Secret\":\"{password}\"}}' \"$server\"\n",
            reg.host
        ),
    )
    .unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&helper, fs::Permissions::from_mode(0o755)).unwrap();
    }
    let helper_config = work.path().join("docker-helper.json");
    fs::write(&helper_config, r#"{"credsStore":"berthtest","auths":{}}"#).unwrap();
    let root = tempfile::tempdir().unwrap();
    pull(root.path(), &reference, Credentials::Anonymous, |c| {
        with_ca(c);
        c.registry.docker_config = Some(helper_config.clone());
        c.registry.credential_helper_dirs = Some(vec![helpers.clone()]);
    })
    .unwrap_or_else(|e| panic!("pull with credential helper credentials failed: {e}"));
    // Not in the helper dirs: anonymous, refused.
    let root = tempfile::tempdir().unwrap();
    pull(root.path(), &reference, Credentials::Anonymous, |c| {
        with_ca(c);
        c.registry.docker_config = Some(helper_config.clone());
        c.registry.credential_helper_dirs = Some(vec![work.path().join("no-helpers")]);
    })
    .expect_err("no helper, no credentials");

    // Request credentials win over config.json (wrong ones here fail).
    let root = tempfile::tempdir().unwrap();
    let wrong = Credentials::Basic {
        username: user.into(),
        password: "wrong".into(),
    };
    pull(root.path(), &reference, wrong, |c| {
        with_ca(c);
        c.registry.docker_config = Some(docker.clone());
    })
    .expect_err("the request's (wrong) credentials are used first");

    // Without hosts.toml, a `*.crt` file in the host's folder is the CA (docker's layout).
    fs::remove_file(host_dir.join("hosts.toml")).unwrap();
    fs::rename(host_dir.join("test-ca.pem"), host_dir.join("ca.crt")).unwrap();
    let root = tempfile::tempdir().unwrap();
    pull(root.path(), &reference, basic.clone(), with_ca)
        .unwrap_or_else(|e| panic!("pull with ca.crt failed: {e}"));

    // skip_verify accepts the unknown CA.
    fs::remove_file(host_dir.join("ca.crt")).unwrap();
    fs::write(host_dir.join("hosts.toml"), "skip_verify = true\n").unwrap();
    let root = tempfile::tempdir().unwrap();
    pull(root.path(), &reference, basic, with_ca)
        .unwrap_or_else(|e| panic!("pull with skip_verify failed: {e}"));
}

#[test]
fn mutual_tls_with_client_certificates() {
    if !runnable("mutual_tls_with_client_certificates") {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let (ca, server_cert) = make_test_certs(work.path());
    let CertKey {
        cert: client_cert,
        key: client_key,
    } = ca.client_cert("client").expect("make a client certificate");
    let reg = Registry::start_mutual_tls(&server_cert, &ca);
    // skopeo reads docker's layout: ca.crt, client.cert, client.key.
    let skopeo_certs = work.path().join("skopeo-certs");
    fs::create_dir_all(&skopeo_certs).unwrap();
    fs::copy(&ca.cert, skopeo_certs.join("ca.crt")).unwrap();
    fs::copy(&client_cert, skopeo_certs.join("client.cert")).unwrap();
    fs::copy(&client_key, skopeo_certs.join("client.key")).unwrap();
    let layout = build_fixture(work.path());
    let reference = format!("{}/app:mtls", reg.host);
    push(
        &layout,
        "app",
        &reference,
        &["--dest-cert-dir", skopeo_certs.to_str().unwrap()],
    );
    let certs_d = work.path().join("certs.d");
    let host_dir = certs_d.join(&reg.host);
    fs::create_dir_all(&host_dir).unwrap();
    fs::copy(&ca.cert, host_dir.join("test-ca.pem")).unwrap();
    fs::copy(&client_cert, host_dir.join("client.pem")).unwrap();
    fs::copy(&client_key, host_dir.join("client.key")).unwrap();
    let combined = [
        fs::read(&client_cert).unwrap(),
        fs::read(&client_key).unwrap(),
    ]
    .concat();
    fs::write(host_dir.join("combined.pem"), combined).unwrap();
    let with_certs_d = |c: &mut StoreConfig| c.registry.config_path = Some(certs_d.clone());
    let server = format!("server = \"https://{}\"\nca = \"test-ca.pem\"\n", reg.host);

    // The CA but no client certificate: the registry refuses. With TLS 1.3 the client's
    // handshake completes before the server's alert arrives, so what the client sees first is
    // racy (the alert, or a connection closed before the request went out).
    fs::write(host_dir.join("hosts.toml"), &server).unwrap();
    let root = tempfile::tempdir().unwrap();
    let err = pull(
        root.path(),
        &reference,
        Credentials::Anonymous,
        with_certs_d,
    )
    .expect_err("no client certificate must fail");
    eprintln!("no client certificate: {err}");
    assert!(
        err.starts_with(&format!("pull {reference}: manifest {reference}: ")),
        "{err}"
    );

    // `client` as a [cert, key] pair.
    fs::write(
        host_dir.join("hosts.toml"),
        format!("{server}client = [[\"client.pem\", \"client.key\"]]\n"),
    )
    .unwrap();
    let root = tempfile::tempdir().unwrap();
    let image = pull(
        root.path(),
        &reference,
        Credentials::Anonymous,
        with_certs_d,
    )
    .unwrap_or_else(|e| panic!("pull with a client cert+key pair failed: {e}"));
    assert_eq!(image.layers.len(), 3);

    // `client` as one PEM holding both.
    fs::write(
        host_dir.join("hosts.toml"),
        format!("{server}client = \"combined.pem\"\n"),
    )
    .unwrap();
    let root = tempfile::tempdir().unwrap();
    pull(
        root.path(),
        &reference,
        Credentials::Anonymous,
        with_certs_d,
    )
    .unwrap_or_else(|e| panic!("pull with a combined client PEM failed: {e}"));

    // A client certificate the registry's CA did not sign: refused.
    let other = work.path().join("other");
    fs::create_dir_all(&other).unwrap();
    let CertKey {
        cert: other_cert,
        key: other_key,
    } = TestCa::new(&other)
        .and_then(|other_ca| other_ca.client_cert("client"))
        .expect("make another CA's client certificate");
    fs::copy(&other_cert, host_dir.join("other.pem")).unwrap();
    fs::copy(&other_key, host_dir.join("other.key")).unwrap();
    fs::write(
        host_dir.join("hosts.toml"),
        format!("{server}client = [[\"other.pem\", \"other.key\"]]\n"),
    )
    .unwrap();
    let root = tempfile::tempdir().unwrap();
    let err = pull(
        root.path(),
        &reference,
        Credentials::Anonymous,
        with_certs_d,
    )
    .expect_err("a foreign client certificate must fail");
    eprintln!("foreign client certificate: {err}");

    // docker's layout, no hosts.toml: ca.crt, client.cert + client.key.
    for f in [
        "hosts.toml",
        "test-ca.pem",
        "client.pem",
        "client.key",
        "combined.pem",
    ] {
        fs::remove_file(host_dir.join(f)).unwrap();
    }
    fs::remove_file(host_dir.join("other.pem")).unwrap();
    fs::remove_file(host_dir.join("other.key")).unwrap();
    fs::copy(&ca.cert, host_dir.join("ca.crt")).unwrap();
    fs::copy(&client_cert, host_dir.join("client.cert")).unwrap();
    fs::copy(&client_key, host_dir.join("client.key")).unwrap();
    let root = tempfile::tempdir().unwrap();
    pull(
        root.path(),
        &reference,
        Credentials::Anonymous,
        with_certs_d,
    )
    .unwrap_or_else(|e| panic!("pull with docker's cert files failed: {e}"));
}

fn base64_encode(b: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in b.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                out.push(T[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[test]
fn loopback_registry_without_hosts_toml_falls_back_to_plain_http() {
    // critest's fixture registry on 127.0.0.1:5000, `docker run registry:2`: no hosts.toml, not
    // listed insecure. containerd and docker try HTTPS, then plain HTTP for loopback
    // registries; berth tried HTTPS only and every pull failed.
    if !runnable("loopback_registry_without_hosts_toml_falls_back_to_plain_http") {
        return;
    }
    let reg = Registry::start();
    let work = tempfile::tempdir().unwrap();
    let layout = build_fixture(work.path());
    push(&layout, "app", &format!("{}/app:1", reg.host), &[]);
    for host in [reg.host.clone(), reg.host.replace("127.0.0.1", "localhost")] {
        let root = tempfile::tempdir().unwrap();
        let image = pull(
            root.path(),
            &format!("{host}/app:1"),
            Credentials::Anonymous,
            |_| {},
        )
        .unwrap_or_else(|e| panic!("pull from {host} with no configuration: {e}"));
        assert_eq!(image.layers.len(), 3);
    }

    // HTTPS is tried for the first request of a pull, not for every blob: a TLS failure marks
    // the host down for the rest of the pull.
    let proxy = CountingProxy::start(&reg.host);
    let root = tempfile::tempdir().unwrap();
    let image = pull(
        root.path(),
        &format!("{}/app:1", proxy.host),
        Credentials::Anonymous,
        |_| {},
    )
    .expect("pull through the counting proxy");
    assert_eq!(image.layers.len(), 3);
    let (tls, plain) = proxy.counts();
    // The first request's only (oci-client's /v2/ check and the manifest GET): 10 when each
    // blob tried HTTPS again.
    assert!(
        tls <= 2,
        "{tls} TLS attempts ({plain} plain HTTP connections)"
    );
    assert!(plain >= 1);
}

/// A TCP proxy on a free loopback port in front of `upstream` that counts the connections
/// opening with a TLS handshake record (0x16) and the others; both are forwarded as they are.
struct CountingProxy {
    host: String,
    tls: Arc<AtomicUsize>,
    plain: Arc<AtomicUsize>,
}

impl CountingProxy {
    fn start(upstream: &str) -> CountingProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let host = listener.local_addr().unwrap().to_string();
        let (tls, plain) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let (t, p, upstream) = (tls.clone(), plain.clone(), upstream.to_owned());
        // The accept loop ends with the test process (a blocked accept holds no resource of
        // the test's); each connection's threads end when either side closes.
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { break };
                let mut first = [0u8; 1];
                if client.peek(&mut first).unwrap_or(0) == 1 && first[0] == 0x16 {
                    t.fetch_add(1, AtomicOrdering::SeqCst);
                } else {
                    p.fetch_add(1, AtomicOrdering::SeqCst);
                }
                let Ok(server) = TcpStream::connect(&upstream) else {
                    continue;
                };
                let pipe = |mut from: TcpStream, mut to: TcpStream| {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(std::net::Shutdown::Write);
                    })
                };
                pipe(client.try_clone().unwrap(), server.try_clone().unwrap());
                pipe(server, client);
            }
        });
        CountingProxy { host, tls, plain }
    }

    fn counts(&self) -> (usize, usize) {
        (
            self.tls.load(AtomicOrdering::SeqCst),
            self.plain.load(AtomicOrdering::SeqCst),
        )
    }
}
