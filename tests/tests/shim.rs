//! berth-shim: creates the container through berth-runtime, writes the CRI log, serves attach
//! (with stdin) on its socket, records the exit atomically, and outlives whoever started it.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use berth_tests::binaries::workspace_bin;
use berth_tests::command::run_bounded;
use berth_tests::runtime::Runtime;
use berth_tests::wait::{poll, until};
use berth_tests::{json, require_root, Bundle, Value};

/// Starts a shim for `id`; returns its readiness JSON.
fn start_shim(rt: &Runtime, id: &str, bundle: &Bundle, state: &Path, extra: &[&str]) -> Value {
    start_shim_with(rt, id, bundle, state, extra, |_| {})
}

/// [`start_shim`], with `adjust` applied to the shim's command (its environment, say).
fn start_shim_with(
    rt: &Runtime,
    id: &str,
    bundle: &Bundle,
    state: &Path,
    extra: &[&str],
    adjust: impl FnOnce(&mut Command),
) -> Value {
    bundle.write();
    let mut cmd = Command::new(workspace_bin("berth-shim"));
    adjust(&mut cmd);
    cmd.args(["--id", id, "--bundle"])
        .arg(bundle.path())
        .arg("--runtime")
        .arg(rt.bin())
        .arg("--runtime-root")
        .arg(rt.root())
        .arg("--state-dir")
        .arg(state)
        .arg("--log-path")
        .arg(state.join("ctr.log"))
        .args(extra);
    let out = run_bounded(&mut cmd, Duration::from_secs(20));
    serde_json::from_str(out.stdout.trim())
        .unwrap_or_else(|e| panic!("shim readiness line {:?}: {e}", out.stdout))
}

fn exit_record(state: &Path) -> Value {
    let path = state.join("exit.json");
    poll(Duration::from_secs(20), Duration::from_millis(20), || {
        std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
    })
    .unwrap_or_else(|| panic!("no exit record at {}", path.display()))
}

/// The content column of each CRI log record, with its stream and tag: "stdout F hello".
fn log_records(path: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .map(|l| {
            let (ts, rest) = l.split_once(' ').expect("record has a timestamp");
            chrono::DateTime::parse_from_rfc3339(ts)
                .unwrap_or_else(|e| panic!("timestamp {ts:?}: {e}"));
            rest.to_owned()
        })
        .collect()
}

fn state_dir(tag: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::Builder::new().prefix(tag).tempdir().unwrap();
    let state = dir.path().join("shim");
    (dir, state)
}

#[test]
fn log_exit_code_and_attach_with_stdin() {
    require_root!();
    let rt = Runtime::berth();
    let mut bundle = Bundle::new();
    bundle.set("/process/terminal", json!(false));
    bundle.sh("echo out1; echo err1 >&2; read line; echo got:$line; printf tail; exit 7");
    let (_dir, state) = state_dir("berth-shim-");
    let id = rt.new_id("shim");
    let ready = start_shim(&rt, &id, &bundle, &state, &["--stdin", "--stdin-once"]);
    let init_pid = ready["created"]["init_pid"]
        .as_i64()
        .unwrap_or_else(|| panic!("not created: {ready}"));
    assert!(init_pid > 0);
    assert_eq!(rt.status(&id), "created");

    let mut attach = UnixStream::connect(state.join("shim.sock")).unwrap();
    attach
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    attach
        .write_all(b"{\"op\":\"attach\",\"stdin\":true}\n")
        .unwrap();
    let mut reply = String::new();
    BufReader::new(attach.try_clone().unwrap())
        .read_line(&mut reply)
        .unwrap();
    assert!(reply.contains("\"ok\":true"), "{reply}");

    rt.start(&id).ok();
    attach.write_all(b"hello\n").unwrap();
    attach.shutdown(std::net::Shutdown::Write).unwrap();
    let mut frames = Vec::new();
    attach.read_to_end(&mut frames).unwrap();
    let mut seen = String::new();
    let mut r = &frames[..];
    while let Some((stream, data)) = berth_runtime::shim_protocol::read_frame(&mut r).unwrap() {
        seen.push_str(&format!("{:?}:{}|", stream, String::from_utf8_lossy(&data)));
    }
    assert!(seen.contains("Stdout:out1\n"), "{seen}");
    assert!(seen.contains("Stderr:err1\n"), "{seen}");
    assert!(seen.contains("got:hello"), "{seen}");

    let exit = exit_record(&state);
    assert_eq!(exit["exit_code"], 7, "{exit}");
    let records = log_records(&state.join("ctr.log"));
    for want in [
        "stdout F out1",
        "stderr F err1",
        "stdout F got:hello",
        "stdout P tail",
    ] {
        assert!(
            records.iter().any(|r| r == want),
            "{want:?} not in {records:?}"
        );
    }
    assert_eq!(rt.status(&id), "stopped");
    // The shim is gone once it recorded the exit.
    let shim_pid = ready["created"]["shim_pid"].as_i64().unwrap() as i32;
    until("the shim to exit", Duration::from_secs(10), || {
        std::fs::read_to_string(format!("/proc/{shim_pid}/stat"))
            .map(|s| s.contains(") Z"))
            .unwrap_or(true)
    });
    rt.delete(&id).ok();
}

#[test]
fn reopen_log_after_rotation_and_signal_exit() {
    require_root!();
    let rt = Runtime::berth();
    let mut bundle = Bundle::new();
    bundle.set("/process/terminal", json!(false));
    bundle.sh("trap 'echo term; exit 0' TERM; echo first; while true; do sleep 0.05; done");
    let (_dir, state) = state_dir("berth-shim-");
    let id = rt.new_id("shimlog");
    let ready = start_shim(&rt, &id, &bundle, &state, &[]);
    assert!(ready.get("created").is_some(), "{ready}");
    rt.start(&id).ok();
    let log = state.join("ctr.log");
    until("the first line", Duration::from_secs(10), || {
        log_records(&log).iter().any(|r| r == "stdout F first")
    });
    // Rotate as the kubelet does: rename, then ask the runtime to reopen.
    std::fs::rename(&log, state.join("ctr.log.1")).unwrap();
    let mut ctl = UnixStream::connect(state.join("shim.sock")).unwrap();
    ctl.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    ctl.write_all(b"{\"op\":\"reopen_log\"}\n").unwrap();
    let mut reply = String::new();
    BufReader::new(ctl).read_line(&mut reply).unwrap();
    assert!(reply.contains("\"ok\":true"), "{reply}");
    rt.kill(&id, "TERM").ok();
    let exit = exit_record(&state);
    assert_eq!(exit["exit_code"], 0, "{exit}");
    assert_eq!(log_records(&log), vec!["stdout F term".to_string()]);
    assert!(log_records(&state.join("ctr.log.1")).contains(&"stdout F first".to_string()));
    // A killed container records 128 + signal.
    let mut bundle = Bundle::new();
    bundle.set("/process/terminal", json!(false));
    bundle.args(&["sleep", "300"]);
    let (_dir2, state2) = state_dir("berth-shim-");
    let id2 = rt.new_id("shimkill");
    assert!(start_shim(&rt, &id2, &bundle, &state2, &[])
        .get("created")
        .is_some());
    rt.start(&id2).ok();
    rt.kill(&id2, "KILL").ok();
    let exit = exit_record(&state2);
    assert_eq!(
        (exit["exit_code"].as_i64(), exit["signal"].as_i64()),
        (Some(137), Some(9)),
        "{exit}"
    );
}

#[test]
fn failed_create_is_reported_on_the_readiness_line() {
    require_root!();
    let rt = Runtime::berth();
    let mut bundle = Bundle::new();
    bundle.set("/process/terminal", json!(false));
    bundle.args(&["/no/such/binary"]);
    let (_dir, state) = state_dir("berth-shim-");
    let id = rt.new_id("shimfail");
    let ready = start_shim(&rt, &id, &bundle, &state, &[]);
    let err = ready["failed"]["error"]
        .as_str()
        .unwrap_or_else(|| panic!("not failed: {ready}"));
    assert!(err.contains("/no/such/binary"), "{err}");
    assert!(
        rt.try_state(&id).is_none(),
        "a failed create left a container"
    );
}

#[test]
fn terminal_container_under_a_long_state_dir() {
    require_root!();
    let rt = Runtime::berth();
    let mut bundle = Bundle::new();
    bundle.set("/process/terminal", json!(true));
    bundle.sh("echo on-the-pty; exit 4");
    // A state dir as long as the shim's own socket allows (`<state>/shim.sock` is 107 bytes,
    // sun_path's limit): the console socket must not live in it. Its private temp dir goes
    // under TMPDIR, which the test owns and checks is empty afterwards.
    let (dir, _) = state_dir("berth-shim-");
    let base = dir.path().as_os_str().len() + "/".len() + "/shim".len() + "/shim.sock".len();
    let pad = 107usize
        .checked_sub(base)
        .expect("temp dir path too long for the test");
    let state = dir.path().join("d".repeat(pad)).join("shim");
    assert_eq!(state.join("shim.sock").as_os_str().len(), 107);
    let tmp = tempfile::Builder::new()
        .prefix("berth-shim-tmp-")
        .tempdir()
        .unwrap();
    let id = rt.new_id("shimtty");
    let ready = start_shim_with(&rt, &id, &bundle, &state, &[], |cmd| {
        cmd.env("TMPDIR", tmp.path());
    });
    assert!(
        ready["created"]["init_pid"].as_i64().is_some(),
        "not created under {}: {ready}",
        state.display()
    );
    rt.start(&id).ok();
    let exit = exit_record(&state);
    assert_eq!(exit["exit_code"], 4, "{exit}");
    let records = log_records(&state.join("ctr.log"));
    assert!(
        records.iter().any(|r| r.starts_with("stdout F on-the-pty")),
        "pty output not logged: {records:?}"
    );
    let left: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().collect();
    assert!(left.is_empty(), "console socket dir left behind: {left:?}");
    rt.delete(&id).ok();
}
