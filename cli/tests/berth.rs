//! Drives the built `berth` binary against a `berthd` it starts (see `support`): pull, images,
//! run (foreground and detached), ps, exec, logs, inspect, stop, kill, rm, pods, rmi.

mod support;

use std::fs;
use std::process::Command;
use std::time::{Duration, Instant};

use support::*;

#[test]
fn daemon_not_running_says_how_to_start_it() {
    let out = Command::new(berth_bin())
        .args(["--address", "unix:///nonexistent/berth.sock", "ps"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("berthd is not running"), "{err}");
    assert!(err.contains("systemctl start berthd"), "{err}");
}

#[test]
fn completion_scripts() {
    for shell in ["bash", "zsh", "fish"] {
        let out = run_ok(Command::new(berth_bin()).args(["completion", shell]));
        assert!(out.contains("berth"), "{shell}: {out}");
    }
}

#[test]
fn pull_run_exec_logs_rm() {
    if !can_run("pull_run_exec_logs_rm") {
        return;
    }
    let env = start();
    let image = format!("{}/busybox:v1", env.host);

    let version = env.ok(&["version"]);
    assert!(version.contains("Server:"), "{version}");

    env.ok(&["pull", &image]);
    let images = env.ok(&["images"]);
    assert!(images.starts_with("REPOSITORY"), "{images}");
    let row = images
        .lines()
        .find(|l| l.starts_with(&format!("{}/busybox ", env.host)))
        .unwrap_or_else(|| panic!("busybox in {images}"));
    assert!(row.split_whitespace().nth(1) == Some("v1"), "{row}");
    let ids = env.lines(&["images", "-q"]);
    assert!(ids.iter().any(|i| i.starts_with("sha256:")), "{ids:?}");
    let json: serde_json::Value =
        serde_json::from_str(&env.ok(&["images", "--format", "json"])).unwrap();
    assert!(json.as_array().is_some_and(|a| !a.is_empty()), "{json}");

    // Foreground: the output, then the container's exit code.
    let out = env.berth(&["run", "--net", "host", "--name", "t1", &image, "echo", "hi"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hi\n", "{out:?}");
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let out = env.berth(&[
        "run",
        "--rm",
        "--net",
        "host",
        "--name",
        "t2",
        "-e",
        "X=42",
        &image,
        "sh",
        "-c",
        "echo x=$X; echo err >&2; exit 3",
    ]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "x=42\n", "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "err\n", "{out:?}");
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    let all = env.ok(&["ps", "-a"]);
    assert!(all.contains("t1") && !all.contains("t2"), "{all}");
    assert!(all.contains("Exited (0)"), "{all}");

    // Detached.
    let id = env.ok(&[
        "run",
        "-d",
        "--net",
        "host",
        "--name",
        "bg",
        &image,
        "sh",
        "-c",
        "echo started; sleep 300",
    ]);
    let id = id.trim().to_owned();
    assert!(!id.is_empty());
    let ps = env.ok(&["ps"]);
    assert!(
        ps.contains("bg") && ps.contains("Running") && !ps.contains("t1"),
        "{ps}"
    );
    assert_eq!(env.lines(&["ps", "-q"]), std::slice::from_ref(&id));
    let pods = env.ok(&["pods"]);
    assert!(pods.contains("bg") && pods.contains("Ready"), "{pods}");

    assert_eq!(env.ok(&["exec", "bg", "echo", "from-exec"]), "from-exec\n");
    let out = env.berth(&["exec", &id[..8], "sh", "-c", "exit 4"]);
    assert_eq!(out.status.code(), Some(4), "{out:?}");
    // -i without a TTY: stdin from a pipe, to its end, over the streaming server.
    let out = env.berth_input(&["exec", "-i", "bg", "sh", "-c", "cat; exit 6"], b"piped\n");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "piped\n", "{out:?}");
    assert_eq!(out.status.code(), Some(6), "{out:?}");

    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let logs = env.ok(&["logs", "bg"]);
        if logs == "started\n" {
            break;
        }
        assert!(Instant::now() < deadline, "logs: {logs:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let logs = env.ok(&["logs", "--timestamps", "--tail", "1", "t1"]);
    assert!(logs.ends_with(" hi\n") && logs.len() > 20, "{logs:?}");

    let inspect: serde_json::Value = serde_json::from_str(&env.ok(&["inspect", &id[..6]])).unwrap();
    assert_eq!(inspect[0]["status"]["state"], "Running", "{inspect}");
    assert_eq!(inspect[0]["status"]["id"], id.as_str(), "{inspect}");

    // Entrypoint, working directory and user.
    let out = env.ok(&[
        "run",
        "--rm",
        "--net",
        "host",
        "--workdir",
        "/tmp",
        "--user",
        "1000:1000",
        "--entrypoint",
        "sh",
        &image,
        "-c",
        "pwd; busybox id -u; busybox id -g",
    ]);
    assert_eq!(out, "/tmp\n1000\n1000\n");

    // logs -f follows until the container exits; stop; the pod commands.
    let id2 = env.ok(&[
        "run",
        "-d",
        "--net",
        "host",
        "--name",
        "fl",
        &image,
        "sh",
        "-c",
        "echo a; sleep 1; echo b",
    ]);
    assert_eq!(env.ok(&["logs", "-f", "fl"]), "a\nb\n");
    let all = env.ok(&["container", "ls", "-a"]);
    assert!(all.contains("fl") && all.contains("Exited (0)"), "{all}");
    let pod = env.ok(&["inspect", id2.trim()]);
    let pod: serde_json::Value = serde_json::from_str(&pod).unwrap();
    assert_eq!(pod[0]["status"]["state"], "Exited", "{pod}");
    let pod_id = env
        .ok(&["ps", "-a", "--format", "json"])
        .pipe_json()
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == id2.trim())
        .map(|c| c["pod_sandbox_id"].as_str().unwrap().to_owned())
        .unwrap();
    let p: serde_json::Value =
        serde_json::from_str(&env.ok(&["pod", "inspect", &pod_id[..10]])).unwrap();
    assert_eq!(p[0]["status"]["state"], "Ready", "{p}");
    env.ok(&["pod", "stop", &pod_id]);
    assert!(env.ok(&["pods"]).contains("NotReady"));
    env.ok(&["pod", "rm", "fl"]);
    assert!(!env.ok(&["ps", "-a"]).contains("fl"));
    let img: serde_json::Value =
        serde_json::from_str(&env.ok(&["image", "inspect", &image])).unwrap();
    assert!(
        img[0]["image"]["id"]
            .as_str()
            .unwrap()
            .starts_with("sha256:"),
        "{img}"
    );
    let info = env.ok(&["info"]);
    assert!(info.contains("Runtime:"), "{info}");
    eprintln!("{info}\n{}\n{}", env.ok(&["ps", "-a"]), env.ok(&["images"]));

    // kill: SIGKILL at once (sleep as PID 1 ignores SIGTERM).
    env.ok(&[
        "run", "-d", "--net", "host", "--name", "k", &image, "sleep", "300",
    ]);
    env.ok(&["kill", "k"]);
    let all = env.ok(&["ps", "-a"]);
    assert!(
        all.lines()
            .any(|l| l.contains("Exited (137)") && l.split_whitespace().rev().nth(1) == Some("k")),
        "{all}"
    );
    env.ok(&["rm", "k"]);

    let out = env.berth(&["rm", "bg"]);
    assert!(
        !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("rm -f"),
        "{out:?}"
    );
    env.ok(&["rm", "-f", "bg"]);
    env.ok(&["rm", "t1"]);
    assert!(env.lines(&["ps", "-a", "-q"]).is_empty());
    assert!(env.lines(&["pods", "-q"]).is_empty());
    assert!(
        fs::read_dir(env.dir.path().join("logs")).map_or(true, |mut d| d.next().is_none()),
        "pod log dirs left behind"
    );

    env.ok(&["rmi", &image]);
    assert!(!env.ok(&["images"]).contains("busybox"));
}
