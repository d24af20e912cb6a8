//! berthd's streaming server over TLS (`[streaming] tls_cert_file`, a certificate of the
//! operator's own CA): `berth exec -i` connects with `--streaming-ca` (or
//! `BERTH_STREAMING_CA`) and is refused, naming the certificate, without it.

mod support;

use std::path::Path;

use support::*;
use test_registry::tls::{TestCa, OPENSSL};

#[test]
fn exec_over_tls_streaming_with_the_operators_ca() {
    if !can_run("exec_over_tls_streaming") {
        return;
    }
    if !Path::new(OPENSSL).exists() {
        eprintln!("SKIP exec_over_tls_streaming: {OPENSSL} is not installed");
        return;
    }
    let mut ca = String::new();
    let env = start_config(false, false, |dir| {
        let certs = dir.join("certs");
        std::fs::create_dir_all(&certs).unwrap();
        // A fresh CA and a server certificate for `IP:127.0.0.1`.
        let test_ca = TestCa::new(&certs).expect("make a test CA");
        let server = test_ca
            .server_cert("server", &["IP:127.0.0.1"])
            .expect("make a server certificate");
        ca = test_ca.cert.display().to_string();
        let (cert, key) = (server.cert.display(), server.key.display());
        format!(
            "[streaming]\naddress = \"127.0.0.1:0\"\ntls_cert_file = \"{cert}\"\n\
             tls_key_file = \"{key}\"\n"
        )
    });
    let image = env.image();
    env.ok(&["pull", "-q", &image]);
    env.ok(&[
        "run", "-d", "--net", "host", "--name", "t1", &image, "sleep", "300",
    ]);

    let out = env.berth_input(
        &["--streaming-ca", &ca, "exec", "-i", "t1", "cat"],
        b"over tls\n",
    );
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "over tls\n");

    // The environment variable does the same.
    let mut cmd = env.command();
    cmd.env("BERTH_STREAMING_CA", &ca)
        .args(["exec", "-i", "t1", "sh", "-c", "cat; exit 4"]);
    cmd.stdin(std::process::Stdio::null());
    let out = cmd.output().unwrap();
    assert_eq!(out.status.code(), Some(4), "{out:?}");

    // Without the CA, the server's certificate is not trusted.
    let out = env.berth_input(&["exec", "-i", "t1", "cat"], b"x\n");
    assert!(!out.status.success(), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr).to_lowercase();
    assert!(err.contains("certificate"), "{err}");

    env.ok(&["rm", "-f", "t1"]);
}
