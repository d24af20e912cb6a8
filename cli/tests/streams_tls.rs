//! berthd's streaming server over TLS (`[streaming] tls_cert_file`, a certificate of the
//! operator's own CA): `berth exec -i` connects with `--streaming-ca` (or
//! `BERTH_STREAMING_CA`) and is refused, naming the certificate, without it.

mod support;

use std::path::Path;
use std::process::Command;

use support::*;

/// A fresh CA and a server certificate for `IP:127.0.0.1` in `dir`: (ca, cert, key).
fn make_certs(dir: &Path) -> (String, String, String) {
    let p = |n: &str| dir.join(n).display().to_string();
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    run_ok(
        Command::new("openssl")
            .args(["req", "-x509", "-days", "2", "-subj", "/CN=berth test CA"])
            .args(ec)
            .args(["-addext", "basicConstraints=critical,CA:TRUE"])
            .args(["-addext", "keyUsage=critical,keyCertSign,cRLSign"])
            .args(["-keyout", &p("ca.key"), "-out", &p("ca.pem")]),
    );
    run_ok(
        Command::new("openssl")
            .args(["req", "-subj", "/CN=127.0.0.1"])
            .args(ec)
            .args(["-keyout", &p("server.key"), "-out", &p("server.csr")]),
    );
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\n\
         extendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    run_ok(
        Command::new("openssl")
            .args(["x509", "-req", "-days", "2", "-set_serial", "2"])
            .args(["-in", &p("server.csr"), "-CA", &p("ca.pem")])
            .args(["-CAkey", &p("ca.key"), "-extfile", &p("ext.cnf")])
            .args(["-out", &p("server.pem")]),
    );
    (p("ca.pem"), p("server.pem"), p("server.key"))
}

#[test]
fn exec_over_tls_streaming_with_the_operators_ca() {
    if !can_run("exec_over_tls_streaming") {
        return;
    }
    if !Path::new("/usr/bin/openssl").exists() {
        eprintln!("SKIP exec_over_tls_streaming: /usr/bin/openssl is not installed");
        return;
    }
    let mut ca = String::new();
    let env = start_config(false, false, |dir| {
        let certs = dir.join("certs");
        std::fs::create_dir_all(&certs).unwrap();
        let (c, cert, key) = make_certs(&certs);
        ca = c;
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
