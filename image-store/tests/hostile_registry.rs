//! A registry that lies: a tiny in-test HTTP server serves a valid manifest and config but a
//! layer blob that is corrupted, truncated, too long, or a 500. Each pull must fail with an
//! error naming the blob and leave nothing visible in the store.
//!
//! The same lies are told to berth's own HTTP client (used for hosts.toml hosts with `header`,
//! `client` or `override_path`): the server then demands a header and serves the API under a
//! path prefix.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use image_store::{Digest, ImageStore, PullOptions, Reference, StoreConfig};

#[derive(Clone, Copy, Debug)]
enum Lie {
    CorruptByte,
    Truncated,
    TooLong,
    ServerError,
    Schema1Manifest,
    IndexWithoutOurPlatform,
    /// Not a lie: an honest registry behind a bearer-token challenge (token for berth:s3cret).
    BearerAuth,
    /// The first manifest request gets a 503 and the first two layer requests a 500; then
    /// everything is served.
    FlakyThenFine,
    /// The layer's headers and half its body, then silence longer than the read timeout.
    SlowBody,
}

/// How long the slow layer stalls; the tests' read timeout is shorter.
const STALL: Duration = Duration::from_millis(2500);
const READ_TIMEOUT: Duration = Duration::from_millis(800);

const TOKEN: &str = "tok-123";
const BASIC_BERTH: &str = "Basic YmVydGg6czNjcmV0";

struct Fixture {
    manifest: Vec<u8>,
    config: Vec<u8>,
    config_digest: Digest,
    layer: Vec<u8>,
    layer_digest: Digest,
}

fn fixture() -> Fixture {
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    let data = vec![7u8; 10_000];
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(1_600_000_000);
    h.set_cksum();
    b.append_data(&mut h, "payload", &data[..]).unwrap();
    let tar = b.into_inner().unwrap();
    let diff_id = Digest::sha256_of(&tar);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar).unwrap();
    let layer = gz.finish().unwrap();
    let layer_digest = Digest::sha256_of(&layer);
    let config = format!(
        r#"{{"architecture":"{}","os":"linux","rootfs":{{"type":"layers","diff_ids":["{diff_id}"]}}}}"#,
        image_store::Platform::host().architecture
    )
    .into_bytes();
    let config_digest = Digest::sha256_of(&config);
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config_digest}","size":{}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{layer_digest}","size":{}}}]}}"#,
        config.len(),
        layer.len()
    )
    .into_bytes();
    Fixture {
        manifest,
        config,
        config_digest,
        layer,
        layer_digest,
    }
}

/// The header the server demands of berth's own client, and the API root it serves then.
const TEST_HEADER: (&str, &str) = ("x-berth-test", "yes");
const PREFIX: &str = "/reg/root/";

/// The lying server; stopped and joined on drop.
struct LyingRegistry {
    host: String,
    stop: Arc<AtomicBool>,
    layer_requests: Arc<AtomicUsize>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for LyingRegistry {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(&self.host);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn respond(
    s: &mut TcpStream,
    status: &str,
    headers: &[(&str, String)],
    body: &[u8],
    declared: usize,
) {
    let mut head =
        format!("HTTP/1.1 {status}\r\nContent-Length: {declared}\r\nConnection: close\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let _ = s.write_all(head.as_bytes());
    let _ = s.write_all(body);
}

fn start(f: &Fixture, lie: Lie) -> LyingRegistry {
    start_via(f, lie, false)
}

/// With `direct`, requests must carry [`TEST_HEADER`] (else 400) and API paths start with
/// [`PREFIX`] instead of `/v2/` (else 404).
fn start_via(f: &Fixture, lie: Lie, direct: bool) -> LyingRegistry {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let host = listener.local_addr().unwrap().to_string();
    let stop = Arc::new(AtomicBool::new(false));
    let layer_requests = Arc::new(AtomicUsize::new(0));
    let (manifest, config, layer) = (f.manifest.clone(), f.config.clone(), f.layer.clone());
    let (cd, ld) = (f.config_digest.to_string(), f.layer_digest.to_string());
    let (stop2, count) = (Arc::clone(&stop), Arc::clone(&layer_requests));
    let manifest_requests = AtomicUsize::new(0);
    let host2 = host.clone();
    let thread = std::thread::spawn(move || {
        // Bounded: at most 200 connections, and it stops when told.
        for conn in listener.incoming().take(200) {
            if stop2.load(Ordering::SeqCst) {
                break;
            }
            let Ok(mut s) = conn else { continue };
            let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
            let mut r = BufReader::new(s.try_clone().unwrap());
            let mut line = String::new();
            if r.read_line(&mut line).is_err() {
                continue;
            }
            let mut path = line.split_whitespace().nth(1).unwrap_or("").to_owned();
            let mut hdr = String::new();
            let mut authorization = String::new();
            let mut test_header = false;
            while r.read_line(&mut hdr).is_ok_and(|n| n > 2) {
                if let Some((k, v)) = hdr.split_once(':') {
                    if k.eq_ignore_ascii_case("authorization") {
                        authorization = v.trim().to_owned();
                    }
                    if k.eq_ignore_ascii_case(TEST_HEADER.0) && v.trim() == TEST_HEADER.1 {
                        test_header = true;
                    }
                }
                hdr.clear();
            }
            if direct {
                if !test_header {
                    respond(&mut s, "400 Bad Request", &[], b"no test header", 14);
                    continue;
                }
                match path.strip_prefix(PREFIX) {
                    Some(rest) => path = format!("/v2/{rest}"),
                    None if path.starts_with("/token") => {}
                    None => {
                        respond(&mut s, "404 Not Found", &[], b"", 0);
                        continue;
                    }
                }
            }
            let json = |mt: &str| vec![("Content-Type", mt.to_owned())];
            if matches!(lie, Lie::BearerAuth) {
                let challenge = format!(r#"Bearer realm="http://{host2}/token",service="liar""#);
                if path.starts_with("/token") {
                    if authorization == BASIC_BERTH {
                        let body = format!(r#"{{"token":"{TOKEN}"}}"#);
                        respond(
                            &mut s,
                            "200 OK",
                            &json("application/json"),
                            body.as_bytes(),
                            body.len(),
                        );
                    } else {
                        respond(&mut s, "401 Unauthorized", &[], b"", 0);
                    }
                    continue;
                }
                if authorization != format!("Bearer {TOKEN}") {
                    let h = vec![("WWW-Authenticate", challenge)];
                    respond(&mut s, "401 Unauthorized", &h, b"", 0);
                    continue;
                }
            }
            if path == "/v2/" {
                respond(&mut s, "200 OK", &json("application/json"), b"{}", 2);
            } else if path.contains("/manifests/") {
                let n = manifest_requests.fetch_add(1, Ordering::SeqCst);
                if matches!(lie, Lie::FlakyThenFine) && n == 0 {
                    respond(&mut s, "503 Service Unavailable", &[], b"busy", 4);
                    continue;
                }
                let (body, mt) = match lie {
                    Lie::Schema1Manifest => (
                        br#"{"schemaVersion":1,"name":"bad","tag":"1","architecture":"amd64","fsLayers":[],"history":[]}"#.to_vec(),
                        "application/vnd.docker.distribution.manifest.v1+prettyjws",
                    ),
                    Lie::IndexWithoutOurPlatform => (
                        format!(
                            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{}","size":{},"platform":{{"os":"windows","architecture":"amd64"}}}},{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{}","size":{},"platform":{{"os":"linux","architecture":"s390x"}}}}]}}"#,
                            Digest::sha256_of(&manifest),
                            manifest.len(),
                            Digest::sha256_of(&manifest),
                            manifest.len()
                        )
                        .into_bytes(),
                        "application/vnd.oci.image.index.v1+json",
                    ),
                    _ => (manifest.clone(), "application/vnd.oci.image.manifest.v1+json"),
                };
                let mut h = json(mt);
                h.push((
                    "Docker-Content-Digest",
                    Digest::sha256_of(&body).to_string(),
                ));
                respond(&mut s, "200 OK", &h, &body, body.len());
            } else if path.ends_with(&cd) {
                respond(&mut s, "200 OK", &[], &config, config.len());
            } else if path.ends_with(&ld) {
                let n = count.fetch_add(1, Ordering::SeqCst);
                match lie {
                    Lie::FlakyThenFine if n < 2 => {
                        respond(&mut s, "500 Internal Server Error", &[], b"boom", 4);
                    }
                    Lie::SlowBody => {
                        let half = &layer[..layer.len() / 2];
                        respond(&mut s, "200 OK", &[], half, layer.len());
                        let _ = s.flush();
                        std::thread::sleep(STALL);
                    }
                    Lie::CorruptByte => {
                        let mut bad = layer.clone();
                        let mid = bad.len() / 2;
                        bad[mid] ^= 0x55;
                        respond(&mut s, "200 OK", &[], &bad, bad.len());
                    }
                    Lie::Truncated => {
                        let short = &layer[..layer.len() - 10];
                        respond(&mut s, "200 OK", &[], short, short.len());
                    }
                    Lie::TooLong => {
                        let mut long = layer.clone();
                        long.extend_from_slice(&[0u8; 4096]);
                        respond(&mut s, "200 OK", &[], &long, long.len());
                    }
                    Lie::ServerError => {
                        respond(&mut s, "500 Internal Server Error", &[], b"boom", 4);
                    }
                    Lie::Schema1Manifest
                    | Lie::IndexWithoutOurPlatform
                    | Lie::BearerAuth
                    | Lie::FlakyThenFine => {
                        respond(&mut s, "200 OK", &[], &layer, layer.len());
                    }
                }
            } else {
                respond(&mut s, "404 Not Found", &[], b"", 0);
            }
            let _ = r.read(&mut [0u8; 0]);
        }
    });
    LyingRegistry {
        host,
        stop,
        layer_requests,
        thread: Some(thread),
    }
}

fn pull_from_liar(lie: Lie) -> (String, usize) {
    pull_from_liar_via(lie, false)
}

fn pull_from_liar_via(lie: Lie, direct: bool) -> (String, usize) {
    let f = fixture();
    let (err, requests, host, root) = pull_err_via(&f, lie, direct);
    let prefix = format!("pull {host}/bad:1: layer {}: ", f.layer_digest);
    assert!(err.starts_with(&prefix), "{lie:?}: {err}");
    assert_nothing_visible(&root, &f, lie);
    (err, requests)
}

/// Pulls `<liar>/bad:1` into a fresh store and returns the error, the number of layer
/// requests, the registry host and the store root (kept for inspection).
fn pull_err(f: &Fixture, lie: Lie) -> (String, usize, String, tempfile::TempDir) {
    pull_err_via(f, lie, false)
}

/// A store whose certs.d sends `host` through berth's own client: the [`TEST_HEADER`] and the
/// API root under [`PREFIX`] (`override_path`).
fn direct_config(cfg: &mut StoreConfig, host: &str, certs_d: &std::path::Path) {
    let d = certs_d.join(host);
    std::fs::create_dir_all(&d).unwrap();
    let prefix = PREFIX.trim_end_matches('/');
    std::fs::write(
        d.join("hosts.toml"),
        format!(
            "server = \"http://{host}{prefix}\"\noverride_path = true\n[header]\n{} = \"{}\"\n",
            TEST_HEADER.0, TEST_HEADER.1
        ),
    )
    .unwrap();
    cfg.registry.config_path = Some(certs_d.to_owned());
}

fn pull_err_via(f: &Fixture, lie: Lie, direct: bool) -> (String, usize, String, tempfile::TempDir) {
    let reg = start_via(f, lie, direct);
    let root = tempfile::tempdir().unwrap();
    let mut cfg = StoreConfig::new(root.path());
    cfg.registry.insecure_hosts = vec![reg.host.clone()];
    cfg.registry.read_timeout = Some(READ_TIMEOUT);
    let certs_d = tempfile::tempdir().unwrap();
    if direct {
        direct_config(&mut cfg, &reg.host, certs_d.path());
    }
    let store = ImageStore::open(cfg).unwrap();
    let r: Reference = format!("{}/bad:1", reg.host).parse().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let err = rt
        .block_on(store.pull(&r, &PullOptions::default()))
        .expect_err("a lying registry must fail the pull")
        .to_string();
    eprintln!("{lie:?}: {err}");
    let requests = reg.layer_requests.load(Ordering::SeqCst);
    (err, requests, reg.host.clone(), root)
}

fn assert_nothing_visible(root: &tempfile::TempDir, f: &Fixture, lie: Lie) {
    // On disk first: opening the store would clean orphan snapshot dirs.
    let count = |p: &str| std::fs::read_dir(root.path().join(p)).unwrap().count();
    assert_eq!(count("content/ingest"), 0, "{lie:?}: ingest left behind");
    assert_eq!(count("snapshots"), 0, "{lie:?}: snapshot dir left behind");
    let store = ImageStore::open(StoreConfig::new(root.path())).unwrap();
    assert!(
        store.images().unwrap().is_empty(),
        "{lie:?}: image recorded"
    );
    assert!(
        !store.content().contains(&f.layer_digest),
        "{lie:?}: layer blob visible"
    );
    assert!(
        store.snapshots().list().unwrap().is_empty(),
        "{lie:?}: snapshot recorded"
    );
}

#[test]
fn corrupted_layer_bytes_are_a_digest_mismatch() {
    let (err, _) = pull_from_liar(Lie::CorruptByte);
    assert!(err.contains("digest mismatch"), "{err}");
}

#[test]
fn truncated_layer_is_an_error() {
    let (err, _) = pull_from_liar(Lie::Truncated);
    assert!(
        err.contains("size mismatch") || err.contains("unpack"),
        "{err}"
    );
}

#[test]
fn too_long_layer_is_a_size_mismatch() {
    let (err, _) = pull_from_liar(Lie::TooLong);
    assert!(err.contains("size mismatch"), "{err}");
}

#[test]
fn server_errors_are_retried_then_reported() {
    let (err, requests) = pull_from_liar(Lie::ServerError);
    assert!(
        err.contains("500") || err.to_lowercase().contains("server"),
        "{err}"
    );
    assert_eq!(requests, 3, "bounded retries");
}

#[test]
fn schema1_manifest_is_refused_clearly() {
    let f = fixture();
    let (err, requests, host, root) = pull_err(&f, Lie::Schema1Manifest);
    assert!(
        err.starts_with(&format!("pull {host}/bad:1: manifest sha256:")),
        "{err}"
    );
    assert!(
        err.contains("schema 1 manifests are not supported"),
        "{err}"
    );
    assert_eq!(requests, 0);
    assert_nothing_visible(&root, &f, Lie::Schema1Manifest);
}

#[test]
fn index_without_our_platform_is_refused_clearly() {
    let f = fixture();
    let (err, requests, host, root) = pull_err(&f, Lie::IndexWithoutOurPlatform);
    assert!(
        err.starts_with(&format!("pull {host}/bad:1: index sha256:")),
        "{err}"
    );
    let host_platform = image_store::Platform::host().to_string();
    assert!(
        err.contains(&format!("no manifest for platform {host_platform}")),
        "{err}"
    );
    assert!(err.contains("windows/amd64, linux/s390x"), "{err}");
    assert_eq!(requests, 0);
    assert_nothing_visible(&root, &f, Lie::IndexWithoutOurPlatform);
}

#[test]
fn bearer_token_challenge_is_answered_with_credentials() {
    let f = fixture();
    // Anonymous: the token endpoint refuses, so the pull fails at the manifest.
    let (err, requests, host, root) = pull_err(&f, Lie::BearerAuth);
    assert!(
        err.starts_with(&format!("pull {host}/bad:1: manifest")),
        "{err}"
    );
    assert_eq!(requests, 0);
    assert_nothing_visible(&root, &f, Lie::BearerAuth);
    // With the right credentials the whole image comes through the bearer token.
    let reg = start(&f, Lie::BearerAuth);
    let root = tempfile::tempdir().unwrap();
    let mut cfg = StoreConfig::new(root.path());
    cfg.registry.insecure_hosts = vec![reg.host.clone()];
    let store = ImageStore::open(cfg).unwrap();
    let r: Reference = format!("{}/bad:1", reg.host).parse().unwrap();
    let opts = PullOptions {
        credentials: image_store::Credentials::Basic {
            username: "berth".into(),
            password: "s3cret".into(),
        },
        ..PullOptions::default()
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let image = rt
        .block_on(store.pull(&r, &opts))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(image.layers, vec![f.layer_digest.clone()]);
    assert!(store.content().contains(&f.layer_digest));
}

#[test]
fn server_errors_then_success_are_retried_to_a_complete_image() {
    let f = fixture();
    let reg = start(&f, Lie::FlakyThenFine);
    let root = tempfile::tempdir().unwrap();
    let mut cfg = StoreConfig::new(root.path());
    cfg.registry.insecure_hosts = vec![reg.host.clone()];
    let store = ImageStore::open(cfg).unwrap();
    let r: Reference = format!("{}/bad:1", reg.host).parse().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let image = rt
        .block_on(store.pull(&r, &PullOptions::default()))
        .unwrap_or_else(|e| panic!("a retry must get through: {e}"));
    assert_eq!(image.layers, vec![f.layer_digest.clone()]);
    assert!(store.content().contains(&f.layer_digest));
    assert_eq!(
        reg.layer_requests.load(Ordering::SeqCst),
        3,
        "two 500s, then 200"
    );
    assert_eq!(store.images().unwrap().len(), 1);
}

#[test]
fn slow_body_hits_the_read_timeout_and_leaves_nothing_visible() {
    let f = fixture();
    let started = std::time::Instant::now();
    let (err, requests) = pull_from_liar(Lie::SlowBody);
    assert!(err.contains("download interrupted"), "{err}");
    assert!(err.contains("timed out"), "the cause is named: {err}");
    assert_eq!(requests, 3, "bounded retries");
    // Each attempt gives up after the read timeout, not after the server's stall.
    assert!(started.elapsed() < STALL * 3 + Duration::from_secs(10));
    drop(f);
}

#[test]
fn lies_told_to_berths_own_client_fail_alike() {
    let (err, _) = pull_from_liar_via(Lie::CorruptByte, true);
    assert!(err.contains("digest mismatch"), "{err}");
    let (err, _) = pull_from_liar_via(Lie::Truncated, true);
    assert!(
        err.contains("size mismatch") || err.contains("unpack"),
        "{err}"
    );
    let (err, _) = pull_from_liar_via(Lie::TooLong, true);
    assert!(err.contains("size mismatch"), "{err}");
    let (err, requests) = pull_from_liar_via(Lie::ServerError, true);
    assert!(err.contains("HTTP 500"), "{err}");
    assert_eq!(requests, 3, "bounded retries");
    let (err, requests) = pull_from_liar_via(Lie::SlowBody, true);
    assert!(err.contains("timed out"), "{err}");
    // The single-threaded liar still stalls on the first connection when the second attempt
    // comes, which then times out before it is served: 2 or 3 served, never more.
    assert!((2..=3).contains(&requests), "bounded retries: {requests}");
}

/// Pulls `<host>/bad:1` through berth's own client (header, override_path) with `creds`.
fn pull_direct(
    reg: &LyingRegistry,
    creds: image_store::Credentials,
) -> (
    Result<image_store::Image, String>,
    ImageStore,
    tempfile::TempDir,
) {
    let root = tempfile::tempdir().unwrap();
    let certs_d = root.path().join("certs.d");
    let mut cfg = StoreConfig::new(&root.path().join("store"));
    direct_config(&mut cfg, &reg.host, &certs_d);
    let store = ImageStore::open(cfg).unwrap();
    let r: Reference = format!("{}/bad:1", reg.host).parse().unwrap();
    let opts = PullOptions {
        credentials: creds,
        ..PullOptions::default()
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let res = rt
        .block_on(store.pull(&r, &opts))
        .map_err(|e| e.to_string());
    (res, store, root)
}

#[test]
fn berths_own_client_sends_headers_under_the_path_and_answers_bearer_challenges() {
    let f = fixture();
    // Retried 5xx, then the image: header and path prefix on every request.
    let reg = start_via(&f, Lie::FlakyThenFine, true);
    let (image, store, _root) = pull_direct(&reg, image_store::Credentials::Anonymous);
    let image = image.unwrap_or_else(|e| panic!("a retry must get through: {e}"));
    assert_eq!(image.layers, vec![f.layer_digest.clone()]);
    assert_eq!(reg.layer_requests.load(Ordering::SeqCst), 3);
    assert_eq!(store.images().unwrap().len(), 1);

    // Bearer challenge: anonymous is refused at the manifest, credentials get a token.
    let reg = start_via(&f, Lie::BearerAuth, true);
    let (err, _, _root) = pull_direct(&reg, image_store::Credentials::Anonymous);
    let err = err.expect_err("anonymous must be refused");
    assert!(
        err.starts_with(&format!("pull {}/bad:1: manifest", reg.host)),
        "{err}"
    );
    assert!(err.contains("HTTP 401"), "{err}");
    let basic = image_store::Credentials::Basic {
        username: "berth".into(),
        password: "s3cret".into(),
    };
    let (image, store, _root) = pull_direct(&reg, basic);
    let image = image.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(image.layers, vec![f.layer_digest.clone()]);
    assert!(store.content().contains(&f.layer_digest));
    // A registry token is sent as is.
    let (image, _, _root) = pull_direct(&reg, image_store::Credentials::Bearer(TOKEN.into()));
    image.unwrap_or_else(|e| panic!("{e}"));

    // Without the hosts.toml (plain oci-client, no header), the same server refuses.
    let reg = start_via(&f, Lie::FlakyThenFine, true);
    let root = tempfile::tempdir().unwrap();
    let mut cfg = StoreConfig::new(root.path());
    cfg.registry.insecure_hosts = vec![reg.host.clone()];
    let store = ImageStore::open(cfg).unwrap();
    let r: Reference = format!("{}/bad:1", reg.host).parse().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let err = rt
        .block_on(store.pull(&r, &PullOptions::default()))
        .expect_err("no header, no image");
    assert!(err.to_string().contains("400"), "{err}");
}

/// A plain-HTTP server as Go writes them: whatever arrives, it answers 400 and closes.
/// Counts connections; stopped on drop.
struct PlainHttp {
    host: String,
    connections: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl PlainHttp {
    fn start() -> PlainHttp {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let host = listener.local_addr().unwrap().to_string();
        let connections = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (c, st) = (Arc::clone(&connections), Arc::clone(&stop));
        let thread = std::thread::spawn(move || {
            // Bounded: at most 50 connections, and it stops when told.
            for conn in listener.incoming().take(50) {
                if st.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(mut s) = conn else { continue };
                c.fetch_add(1, Ordering::SeqCst);
                let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
                let _ = s.read(&mut [0u8; 512]);
                let _ = s.write_all(
                    b"HTTP/1.0 400 Bad Request\r\n\r\nClient sent an HTTP request to an HTTPS server.\n",
                );
            }
        });
        PlainHttp {
            host,
            connections,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for PlainHttp {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(&self.host);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[test]
fn tls_failures_are_permanent_and_name_the_registry() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // HTTPS to a plain-HTTP server: a TLS failure, tried once, not retried. The server is
    // named HTTPS in hosts.toml: unconfigured, a loopback registry would fall back to HTTP
    // (containerd's rule for local registries).
    let plain = PlainHttp::start();
    let root = tempfile::tempdir().unwrap();
    let d = root.path().join("certs.d").join(&plain.host);
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(
        d.join("hosts.toml"),
        format!("server = \"https://{}\"\n", plain.host),
    )
    .unwrap();
    let mut cfg = StoreConfig::new(&root.path().join("store"));
    cfg.registry.config_path = Some(root.path().join("certs.d"));
    let store = ImageStore::open(cfg).unwrap();
    let r: Reference = format!("{}/bad:1", plain.host).parse().unwrap();
    let err = rt
        .block_on(store.pull(&r, &PullOptions::default()))
        .expect_err("TLS to a plain HTTP server must fail")
        .to_string();
    eprintln!("{err}");
    assert!(
        err.contains(&format!("TLS with https://{} failed", plain.host)),
        "{err}"
    );
    // oci-client probes /v2/ before the manifest: two connections, not three attempts' six.
    assert!(plain.connections.load(Ordering::SeqCst) <= 2, "not retried");

    // The same through berth's own client.
    let plain = PlainHttp::start();
    let root = tempfile::tempdir().unwrap();
    let d = root.path().join("certs.d").join(&plain.host);
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(
        d.join("hosts.toml"),
        format!(
            "server = \"https://{}\"\n[header]\nx-berth-test = \"yes\"\n",
            plain.host
        ),
    )
    .unwrap();
    let mut cfg = StoreConfig::new(&root.path().join("store"));
    cfg.registry.config_path = Some(root.path().join("certs.d"));
    let store = ImageStore::open(cfg).unwrap();
    let r: Reference = format!("{}/bad:1", plain.host).parse().unwrap();
    let err = rt
        .block_on(store.pull(&r, &PullOptions::default()))
        .expect_err("TLS to a plain HTTP server must fail")
        .to_string();
    eprintln!("{err}");
    assert!(
        err.contains(&format!("TLS with https://{} failed", plain.host)),
        "{err}"
    );
    assert_eq!(plain.connections.load(Ordering::SeqCst), 1, "not retried");
}
