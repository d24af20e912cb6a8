//! Terminals: process.terminal with --console-socket (the pty master arrives over SCM_RIGHTS
//! and the test reads the container's output from it), for create/start and for exec --tty.

use std::time::Duration;

use berth_tests::compare::same;
use berth_tests::console::ConsoleSocket;
use berth_tests::runtime::Runtime;
use berth_tests::{json, require_root, Bundle};

fn text(bytes: Vec<u8>) -> String {
    String::from_utf8_lossy(&bytes)
        .replace("\r\n", "\n")
        .trim()
        .to_string()
}

/// create --console-socket: the container's stdio is a pty of the given size.
#[test]
fn console_socket_create_start() {
    require_root!();
    let mut seen = Vec::new();
    for rt in [Runtime::berth(), Runtime::runc()] {
        let mut b = Bundle::new();
        b.set("/process/terminal", json!(true));
        b.set("/process/consoleSize", json!({"height": 30, "width": 100}));
        b.sh("tty; stty size; [ -t 0 ] && [ -t 1 ] && echo stdio-is-tty; ls -l /dev/console | cut -c1");
        let console = ConsoleSocket::listen(b.path(), Duration::from_secs(20));
        let id = rt.new_id("tty");
        let sock = console.path().to_str().unwrap().to_string();
        rt.create(&id, &b, &["--console-socket", &sock]).ok();
        rt.start(&id).ok();
        rt.wait_stopped(&id);
        let out = text(
            console
                .output()
                .unwrap_or_else(|e| panic!("{}: {e}", rt.name())),
        );
        seen.push(out);
    }
    assert_eq!(seen[0], "/dev/pts/0\n30 100\nstdio-is-tty\nc", "berth");
    same("terminal output", &seen[0], &seen[1]);
}

/// exec --tty --console-socket into a running container.
#[test]
fn exec_tty_console_socket() {
    require_root!();
    let mut seen = Vec::new();
    for rt in [Runtime::berth(), Runtime::runc()] {
        let mut b = Bundle::new();
        let id = rt.start_sleeper("exec-tty", &mut b);
        let console = ConsoleSocket::listen(b.path(), Duration::from_secs(20));
        let sock = console.path().to_str().unwrap().to_string();
        rt.exec_with(
            &["--tty", "--detach", "--console-socket", &sock],
            &id,
            &["sh", "-c", "[ -t 1 ] && echo exec-tty; tty | grep -c pts"],
        )
        .ok();
        let out = text(
            console
                .output()
                .unwrap_or_else(|e| panic!("{}: {e}", rt.name())),
        );
        seen.push(out);
    }
    assert_eq!(seen[0], "exec-tty\n1", "berth");
    same("exec --tty output", &seen[0], &seen[1]);
}

/// A terminal without --console-socket is refused by create (there is nowhere to send it).
#[test]
fn terminal_without_console_socket_refused() {
    require_root!();
    let mut b = Bundle::new();
    b.set("/process/terminal", json!(true));
    let mut res = Vec::new();
    for rt in [Runtime::berth(), Runtime::runc()] {
        let id = rt.new_id("tty-nosock");
        res.push(rt.create(&id, &b, &[]).success());
    }
    assert!(!res[0]);
    same("create with terminal and no socket", res[0], res[1]);
}
