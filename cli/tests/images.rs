//! Image administration through the built `berth`: tag, save/load round-trips (berth's own
//! archive, and a `docker save` archive made by skopeo), image prune, stats, login (docker's
//! config.json, used by the next pull).

mod support;

use std::process::Command;

use support::*;

#[test]
fn tag_save_load_prune_stats_login() {
    if !can_run("tag_save_load_prune_stats_login") {
        return;
    }
    let env = start_opts(false, true);
    let image = env.image();

    // The registry wants credentials: none, no pull; `login` stores them in docker's
    // config.json (mode 0600) and the pull passes them to berthd.
    let out = env.berth(&["pull", &image]);
    let not_authorized = |out: &std::process::Output| {
        !out.status.success()
            && String::from_utf8_lossy(&out.stderr)
                .to_lowercase()
                .contains("not authorized")
    };
    assert!(not_authorized(&out), "{out:?}");
    let out = env.berth_input(
        &["login", "-u", AUTH.0, "--password-stdin", &env.host],
        format!("{}\n", AUTH.1).as_bytes(),
    );
    assert!(out.status.success(), "{out:?}");
    let file = env.dir.path().join("docker/config.json");
    let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    // base64("alice:s3cret")
    assert_eq!(doc["auths"][&env.host]["auth"], "YWxpY2U6czNjcmV0", "{doc}");
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&file).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);
    env.ok(&["pull", &image]);

    // tag: a second name on the same ID.
    let mine = format!("{}/mine:v2", env.host);
    assert_eq!(env.ok(&["tag", &image, &mine]).trim(), mine);
    let images = env.ok(&["images", "--format", "json"]).pipe_json();
    let named = |name: &str| {
        images
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["repo_tags"].as_array().unwrap().iter().any(|t| t == name))
            .map(|i| i["id"].as_str().unwrap().to_owned())
    };
    let id = named(&image).expect("busybox listed");
    assert_eq!(named(&mine).as_deref(), Some(id.as_str()), "{images}");
    env.ok(&["image", "tag", &id[7..19], "localhost/short:1"]);
    assert!(env.ok(&["images"]).contains("localhost/short"));
    let out = env.berth(&["tag", "nosuchimage", "x:1"]);
    assert!(!out.status.success(), "{out:?}");

    // save -o, remove every name, load -i: the same ID, and it runs.
    let archive = env.dir.path().join("busybox.tar");
    env.ok(&["save", "-o", archive.to_str().unwrap(), &mine]);
    let listing = run_ok(Command::new("tar").arg("tf").arg(&archive));
    for f in ["oci-layout", "index.json", "manifest.json"] {
        assert!(listing.lines().any(|l| l == f), "{f} in {listing}");
    }
    // CRI RemoveImage removes the image with all its names.
    env.ok(&["rmi", &image]);
    assert!(env.lines(&["images", "-q"]).iter().all(|i| *i != id));
    let loaded = env.ok(&["load", "-i", archive.to_str().unwrap()]);
    assert_eq!(loaded.trim(), format!("Loaded image: {mine}"), "{loaded}");
    assert!(env.lines(&["images", "-q"]).contains(&id));
    let out = env.ok(&["run", "--rm", "--net", "host", &mine, "echo", "from-loaded"]);
    assert_eq!(out, "from-loaded\n");

    // A docker-archive made by skopeo from the registry, loaded from stdin.
    let docker_tar = env.dir.path().join("docker.tar");
    run_ok(
        Command::new("skopeo")
            .args(["copy", "--quiet", "--src-tls-verify=false"])
            .arg(format!("--src-creds={}:{}", AUTH.0, AUTH.1))
            .arg(format!("docker://{image}"))
            .arg(format!(
                "docker-archive:{}:{}/fromdocker:v9",
                docker_tar.display(),
                env.host
            )),
    );
    let input = std::fs::read(&docker_tar).unwrap();
    let out = env.berth_input(&["image", "load"], &input);
    assert!(out.status.success(), "{out:?}");
    let fromdocker = format!("{}/fromdocker:v9", env.host);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&fromdocker),
        "{out:?}"
    );
    assert!(env.ok(&["images"]).contains("fromdocker"));

    // stats of a running container: table and JSON.
    env.ok(&[
        "run",
        "-d",
        "--net",
        "host",
        "--name",
        "busy",
        &fromdocker,
        "sleep",
        "300",
    ]);
    let table = env.ok(&["stats"]);
    let row = table
        .lines()
        .find(|l| l.contains("busy"))
        .unwrap_or_else(|| panic!("{table}"));
    assert!(row.contains('%') && row.contains("B"), "{table}");
    let json = env.ok(&["stats", "--format", "json", "busy"]).pipe_json();
    assert_eq!(json.as_array().unwrap().len(), 1, "{json}");
    assert_eq!(json[0]["attributes"]["metadata"]["name"], "busy", "{json}");
    assert!(
        json[0]["memory"]["working_set_bytes"]["value"]
            .as_u64()
            .unwrap()
            > 0,
        "{json}"
    );

    // prune: untagged only by default (none here); -a removes what no container uses.
    let other = env.push_variant("other");
    env.ok(&["pull", &other]);
    let out = env.ok(&["image", "prune"]);
    assert!(out.contains("Removed 0 images"), "{out}");
    let out = env.ok(&["image", "prune", "-a"]);
    assert!(out.contains(&other) && !out.contains("fromdocker"), "{out}");
    assert!(out.contains("Removed 1 images"), "{out}");
    let left = env.ok(&["images"]);
    assert!(
        left.contains("fromdocker") && !left.contains("other"),
        "{left}"
    );
    env.ok(&["rm", "-f", "busy"]);
    env.ok(&["image", "prune", "-a"]);
    assert!(!env.ok(&["images"]).contains("fromdocker"));

    // pull --platform picks from an image index (berthd's admin service); the default is
    // this node's platform; a platform the index lacks is refused.
    let multi = env.push_multiarch("multi");
    let arm = env.ok(&["pull", "-q", "--platform", "linux/arm64", &multi]);
    let native = env.ok(&["pull", "-q", &multi]);
    assert_ne!(arm.trim(), native.trim());
    assert_eq!(
        native.trim(),
        id,
        "the node's platform is busybox as pushed"
    );
    let inspect = env.ok(&["image", "inspect", arm.trim()]).pipe_json();
    assert!(inspect.to_string().contains("arm64"), "{inspect}");
    let out = env.berth(&["image", "pull", "--platform", "linux/s390x", &multi]);
    assert!(!out.status.success(), "{out:?}");
    let out = env.berth(&["pull", "--platform", "arm64", &multi]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("os/architecture"),
        "{out:?}"
    );

    // logout: the entry is gone, and the registry refuses the next pull.
    let out = env.ok(&["logout", &env.host]);
    assert!(out.contains("Removed"), "{out}");
    let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    assert!(doc["auths"].get(&env.host).is_none(), "{doc}");
    let out = env.berth(&["pull", &image]);
    assert!(not_authorized(&out), "{out:?}");
}
