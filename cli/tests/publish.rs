//! `berth run -p` (the pod network's portmap), `-v` (bind mounts, read-only too), `--memory`
//! and `--cpus` (the container's OCI resources), on the test's own CNI network.

mod support;

use std::time::Duration;

use support::*;

#[test]
fn publish_volume_and_limits() {
    if !can_run("publish_volume_and_limits") {
        return;
    }
    let env = start_with(true);
    let image = env.image();
    let www = env.dir.path().join("www");
    std::fs::create_dir_all(&www).unwrap();
    std::fs::write(www.join("index.html"), "published\n").unwrap();
    let volume = format!("{}:/www:ro", www.display());
    let port = free_port();
    let publish = format!("{port}:8000");

    // The everyday flow: run -d -p HOST:CTR, then a TCP connect to 127.0.0.1:HOST.
    env.ok(&[
        "run", "-d", "--name", "web", "-p", &publish, "-v", &volume, "--memory", "64m", "--cpus",
        "0.5", &image, "httpd", "-f", "-p", "8000", "-h", "/www",
    ]);
    let r = http_get(port, "/index.html", Duration::from_secs(30));
    assert!(r.contains("200 OK") && r.ends_with("published\n"), "{r}");

    let inspect = env.ok(&["inspect", "web"]).pipe_json();
    let spec = &inspect[0]["info"]["info"]["runtimeSpec"]["linux"]["resources"];
    assert_eq!(spec["memory"]["limit"], 64 << 20, "{spec}");
    assert_eq!(spec["cpu"]["quota"], 50_000, "{spec}");
    assert_eq!(spec["cpu"]["period"], 100_000, "{spec}");

    // Read-only bind: readable, not writable; read-write: the host sees the write.
    let out = env.berth(&[
        "run",
        "--rm",
        "-v",
        &volume,
        &image,
        "sh",
        "-c",
        "cat /www/index.html; echo x > /www/new || echo refused",
    ]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "published\nrefused\n",
        "{out:?}"
    );
    let rw = format!("{}:/data", www.display());
    env.ok(&[
        "run",
        "--rm",
        "-v",
        &rw,
        &image,
        "sh",
        "-c",
        "echo written > /data/new",
    ]);
    assert_eq!(
        std::fs::read_to_string(www.join("new")).unwrap(),
        "written\n"
    );

    // What cannot work is refused before anything is created.
    let out = env.berth(&["run", "--net", "host", "-p", "1:2", &image, "true"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--net host"),
        "{out:?}"
    );
    let out = env.berth(&["run", "-v", "/nonexistent-berth:/x", &image, "true"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("does not exist"),
        "{out:?}"
    );

    env.ok(&["rm", "-f", "web"]);
    // The host port is released with the pod.
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
}
