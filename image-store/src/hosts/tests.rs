use super::*;

fn parse(text: &str) -> Result<Vec<RegistryHost>, HostsError> {
    let dir = Path::new("/etc/berth/certs.d/docker.io");
    parse_hosts_toml("docker.io", false, text, dir, &dir.join("hosts.toml"))
}

#[test]
fn full_containerd_example_parses_in_file_order() {
    let hosts = parse(
        r#"
server = "https://registry-1.docker.io"
ca = "/etc/certs/server-ca.pem"

[host."https://mirror-b.example.com:5000"]
  capabilities = ["pull", "resolve"]
  skip_verify = true

[host."http://mirror-a.example.com/v2/proxy"]
  capabilities = ["pull"]
  ca = ["a.pem", "/abs/b.pem"]
  client = [["/c/client.cert", "client.key"], "both.pem"]
  override_path = true
  [host."http://mirror-a.example.com/v2/proxy".header]
    x-custom = "1"
    x-multi = ["a", "b"]
"#,
    )
    .unwrap();
    assert_eq!(hosts.len(), 3);
    let (b, a, server) = (&hosts[0], &hosts[1], &hosts[2]);
    assert_eq!(b.host, "mirror-b.example.com:5000");
    assert_eq!(b.scheme, Scheme::Https);
    assert!(b.mirror && b.skip_verify);
    assert_eq!(
        b.capabilities,
        Capabilities {
            pull: true,
            resolve: true,
            push: false
        }
    );
    assert_eq!(a.url(), "http://mirror-a.example.com/v2/proxy");
    assert_eq!(a.scheme, Scheme::Http);
    assert!(a.capabilities.pull && !a.capabilities.resolve);
    assert!(a.override_path);
    assert_eq!(
        a.ca,
        vec![
            PathBuf::from("/etc/berth/certs.d/docker.io/a.pem"),
            PathBuf::from("/abs/b.pem")
        ]
    );
    assert_eq!(
        a.client,
        vec![
            (
                PathBuf::from("/c/client.cert"),
                Some(PathBuf::from("/etc/berth/certs.d/docker.io/client.key"))
            ),
            (PathBuf::from("/etc/berth/certs.d/docker.io/both.pem"), None)
        ]
    );
    assert_eq!(
        a.header,
        vec![
            ("x-custom".to_owned(), "1".to_owned()),
            ("x-multi".to_owned(), "a".to_owned()),
            ("x-multi".to_owned(), "b".to_owned())
        ]
    );
    assert!(!server.mirror);
    assert_eq!(server.url(), "https://registry-1.docker.io");
    assert_eq!(server.capabilities, Capabilities::ALL);
    assert_eq!(server.ca, vec![PathBuf::from("/etc/certs/server-ca.pem")]);
}

#[test]
fn no_server_means_the_registry_itself() {
    let hosts = parse("skip_verify = true\n").unwrap();
    assert_eq!(hosts.len(), 1);
    assert_eq!(hosts[0].url(), "https://registry-1.docker.io");
    assert!(hosts[0].skip_verify);
    let dir = Path::new("/d");
    let h = parse_hosts_toml("127.0.0.1:5000", true, "", dir, &dir.join("hosts.toml")).unwrap();
    assert_eq!(h[0].url(), "http://127.0.0.1:5000");
}

#[test]
fn bad_values_name_the_key() {
    let e = parse("[host.\"https://m\"]\ncapabilities = [\"pull\", \"fly\"]\n").unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("host.\"https://m\".capabilities") && msg.contains("fly"),
        "{msg}"
    );
    let e = parse("server = \"ftp://x\"\n").unwrap_err().to_string();
    assert!(e.contains("server: unsupported scheme"), "{e}");
    let e = parse("skip_verify = \"yes\"\n").unwrap_err().to_string();
    assert!(e.contains("skip_verify: not a boolean"), "{e}");
    let e = parse("server = [").unwrap_err().to_string();
    assert!(
        e.starts_with("registry hosts /etc/berth/certs.d/docker.io/hosts.toml"),
        "{e}"
    );
}

#[test]
fn folders_are_looked_up_like_containerd() {
    let root = tempfile::tempdir().unwrap();
    // No folder: the default server.
    let h = resolve_hosts(Some(root.path()), "r.example:5000", false).unwrap();
    assert_eq!(h.len(), 1);
    assert_eq!(h[0].url(), "https://r.example:5000");
    // _default applies to every registry without its own folder.
    fs::create_dir(root.path().join("_default")).unwrap();
    fs::write(
        root.path().join("_default/hosts.toml"),
        "[host.\"http://cache:1\"]\ncapabilities = [\"pull\"]\n",
    )
    .unwrap();
    let h = resolve_hosts(Some(root.path()), "r.example:5000", false).unwrap();
    assert_eq!(h[0].url(), "http://cache:1");
    assert_eq!(h[1].url(), "https://r.example:5000");
    // The registry's own folder wins; without hosts.toml its certificate files apply.
    let own = root.path().join("r.example:5000");
    fs::create_dir(&own).unwrap();
    fs::write(own.join("ca.crt"), "x").unwrap();
    fs::write(own.join("me.cert"), "x").unwrap();
    fs::write(own.join("me.key"), "x").unwrap();
    let h = resolve_hosts(Some(root.path()), "r.example:5000", true).unwrap();
    assert_eq!(h.len(), 1);
    assert_eq!(h[0].url(), "http://r.example:5000");
    assert_eq!(h[0].ca, vec![own.join("ca.crt")]);
    assert_eq!(
        h[0].client,
        vec![(own.join("me.cert"), Some(own.join("me.key")))]
    );
    // A client certificate without its key is an error.
    fs::remove_file(own.join("me.key")).unwrap();
    let e = resolve_hosts(Some(root.path()), "r.example:5000", false).unwrap_err();
    assert!(matches!(e, HostsError::MissingKey { .. }), "{e}");
    // The `host_port_` spelling comes first.
    let alt = root.path().join("r.example_5000_");
    fs::create_dir(&alt).unwrap();
    fs::write(alt.join("hosts.toml"), "server = \"https://elsewhere\"\n").unwrap();
    let h = resolve_hosts(Some(root.path()), "r.example:5000", false).unwrap();
    assert_eq!(h[0].url(), "https://elsewhere");
}

#[test]
fn loopback_registries_try_https_then_plain_http() {
    // A registry on this machine with no hosts.toml (critest's fixtures, `docker run registry`):
    // containerd and docker fall back to plain HTTP; HTTPS alone failed every pull.
    for registry in [
        "127.0.0.1:5000",
        "localhost:5000",
        "[::1]:5000",
        "127.0.0.2:8080",
    ] {
        let h = resolve_hosts(None, registry, false).unwrap();
        let urls: Vec<_> = h.iter().map(|h| (h.url(), h.skip_verify)).collect();
        assert_eq!(
            urls,
            [
                (format!("https://{registry}"), true),
                (format!("http://{registry}"), false)
            ],
            "{registry}"
        );
        assert!(h.iter().all(|h| !h.mirror));
    }
    // Port 443 (or none) is HTTPS only, port 80 plain HTTP; other hosts HTTPS, verified.
    let one = |r: &str| {
        resolve_hosts(None, r, false)
            .unwrap()
            .iter()
            .map(|h| (h.url(), h.skip_verify))
            .collect::<Vec<_>>()
    };
    assert_eq!(one("localhost"), [("https://localhost".to_owned(), false)]);
    assert_eq!(
        one("127.0.0.1:443"),
        [("https://127.0.0.1:443".to_owned(), false)]
    );
    assert_eq!(
        one("127.0.0.1:80"),
        [("http://127.0.0.1:80".to_owned(), false)]
    );
    assert_eq!(
        one("10.0.0.1:5000"),
        [("https://10.0.0.1:5000".to_owned(), false)]
    );
    assert_eq!(
        one("localhost.example.com:5000"),
        [("https://localhost.example.com:5000".to_owned(), false)]
    );
    // Listed insecure: plain HTTP only.
    assert_eq!(
        resolve_hosts(None, "127.0.0.1:5000", true).unwrap()[0].url(),
        "http://127.0.0.1:5000"
    );
    // A folder with no hosts.toml for it: the same fallback.
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(
        resolve_hosts(Some(dir.path()), "127.0.0.1:5000", false)
            .unwrap()
            .len(),
        2
    );
}
