//! `berth exec -it`, `run -it`, `attach` and `port-forward` through berthd's streaming server,
//! driven as a person would: on a pseudo-terminal (typed input, window size, exit codes,
//! Ctrl-P Ctrl-Q), with pipes, and with parallel TCP connections. Pods get the test's own CNI
//! network (see `support`).

mod support;

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::Duration;

use support::*;

const LIMIT: Duration = Duration::from_secs(30);

#[test]
fn exec_run_attach_on_a_terminal() {
    if !can_run("exec_run_attach_on_a_terminal") {
        return;
    }
    let env = start_with(true);
    let image = env.image();
    env.ok(&["pull", &image]);
    env.ok(&["run", "-d", "--name", "sh1", &image, "sleep", "300"]);

    // exec -it: a shell on a TTY of the local terminal's size; its exit code.
    let mut pty = env.spawn_pty(&["exec", "-it", "sh1", "sh"], 100, 40);
    assert!(pty.wait_for("# ", LIMIT), "no prompt: {:?}", pty.output());
    pty.write(b"stty size; echo hi-$((1+2))\n");
    assert!(pty.wait_for("hi-3", LIMIT), "{:?}", pty.output());
    assert!(pty.output().contains("40 100"), "{:?}", pty.output());
    // The terminal is resized and berth gets SIGWINCH (as a terminal emulator does): the
    // new size reaches the container's TTY.
    pty.resize(120, 50);
    pty.write(b"echo size-$(stty size | busybox tr ' ' x); exit 3\n");
    let (code, out) = pty.wait(LIMIT);
    assert!(out.contains("size-50x120"), "{out:?}");
    assert_eq!(code, Some(3), "{out:?}");

    // exec -i from a pipe (no TTY): stdin to its end.
    let out = env.berth_input(&["exec", "-i", "sh1", "wc", "-l"], b"a\nb\nc\n");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "3", "{out:?}");
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    // -t with a pipe for stdin: a TTY in the container, the local terminal left alone.
    let out = env.berth(&["exec", "-t", "sh1", "tty"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("/dev/pts/"),
        "{out:?}"
    );

    // run -it --rm: typed input reaches the container; its exit code; removed.
    let mut pty = env.spawn_pty(
        &[
            "run",
            "-it",
            "--rm",
            "--name",
            "it1",
            &image,
            "sh",
            "-c",
            "read x; echo got-$x-; exit 5",
        ],
        80,
        24,
    );
    pty.write(b"abc\n");
    let (code, out) = pty.wait(LIMIT);
    assert!(out.contains("got-abc-"), "{out:?}");
    assert_eq!(code, Some(5), "{out:?}");
    assert!(!env.ok(&["ps", "-a"]).contains("it1"));

    // run -it of a shell: a prompt (the shell redraws it on the first resize, which
    // follows the attach), a command, exit.
    let mut pty = env.spawn_pty(&["run", "-it", "--rm", &image, "sh"], 80, 24);
    let prompt = pty.wait_for("# ", LIMIT);
    pty.write(b"echo in-$((5*5)); exit\n");
    let (code, out) = pty.wait(LIMIT);
    assert!(prompt, "no prompt: {out:?}");
    assert!(out.contains("in-25"), "{out:?}");
    assert_eq!(code, Some(0), "{out:?}");

    // run -i from a pipe.
    let out = env.berth_input(&["run", "-i", "--rm", &image, "cat"], b"line1\nline2\n");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "line1\nline2\n",
        "{out:?}"
    );
    assert_eq!(out.status.code(), Some(0), "{out:?}");

    // attach to a detached -it container; Ctrl-P Ctrl-Q leaves it running; attach again.
    env.ok(&["run", "-d", "-it", "--name", "att", &image, "sh"]);
    let mut pty = env.spawn_pty(&["attach", "att"], 80, 24);
    pty.write(b"echo att-$((2+2))\n");
    assert!(pty.wait_for("att-4", LIMIT), "{:?}", pty.output());
    pty.write(b"\x10\x11");
    let (code, out) = pty.wait(LIMIT);
    assert_eq!(code, Some(0), "{out:?}");
    assert!(out.contains("detached"), "{out:?}");
    let ps = env.ok(&["ps"]);
    assert!(
        ps.lines()
            .any(|l| l.contains("att") && l.contains("Running")),
        "{ps}"
    );
    let mut pty = env.spawn_pty(&["attach", "att"], 80, 24);
    pty.write(b"echo again-$((3+4)); exit 7\n");
    let (code, out) = pty.wait(LIMIT);
    assert!(out.contains("again-7"), "{out:?}");
    assert_eq!(code, Some(7), "{out:?}");
    let out = env.berth(&["attach", "att"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("only a running container"),
        "{out:?}"
    );
}

#[test]
fn port_forward_parallel_connections() {
    if !can_run("port_forward_parallel_connections") {
        return;
    }
    let env = start_with(true);
    let image = env.image();
    let www = env.dir.path().join("www");
    std::fs::create_dir_all(&www).unwrap();
    std::fs::write(www.join("index.html"), "hello from the pod\n").unwrap();
    let volume = format!("{}:/www:ro", www.display());
    env.ok(&[
        "run", "-d", "--name", "web", "-v", &volume, &image, "httpd", "-f", "-p", "8000", "-h",
        "/www",
    ]);

    let fixed = free_port();
    let mut child = env
        .command()
        .args([
            "port-forward",
            "web",
            ":8000",
            &format!("{fixed}:8000"),
            ":8001",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut ports = Vec::new();
    for _ in 0..3 {
        let line = rx.recv_timeout(LIMIT).unwrap_or_else(|_| {
            let _ = child.kill();
            panic!("port-forward printed no 'Forwarding from' lines")
        });
        // Forwarding from 127.0.0.1:PORT -> REMOTE
        let port: u16 = line
            .split_whitespace()
            .nth(2)
            .and_then(|a| a.rsplit(':').next())
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("{line}"));
        ports.push(port);
    }
    assert_eq!(ports[1], fixed);
    let random = ports[0];
    let result = std::panic::catch_unwind(|| {
        // Eight connections at once, over both listeners.
        let threads: Vec<_> = (0..8)
            .map(|i| {
                let port = if i % 2 == 0 { random } else { fixed };
                std::thread::spawn(move || http_get(port, "/index.html", LIMIT))
            })
            .collect();
        for t in threads {
            let r = t.join().unwrap();
            assert!(
                r.contains("200 OK") && r.ends_with("hello from the pod\n"),
                "{r}"
            );
        }
        // Nothing listens on 8001 in the pod: the connection just closes.
        let mut s = std::net::TcpStream::connect(("127.0.0.1", ports[2])).unwrap();
        s.set_read_timeout(Some(LIMIT)).unwrap();
        let mut buf = Vec::new();
        let _ = std::io::Read::read_to_end(&mut s, &mut buf);
        assert!(buf.is_empty(), "{buf:?}");
    });
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    if let Err(e) = result {
        eprintln!("port-forward stderr: {stderr}");
        eprintln!(
            "{}\nlogs: {:?}",
            env.ok(&["ps", "-a"]),
            env.berth(&["logs", "web"])
        );
        std::panic::resume_unwind(e);
    }
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("Handling connection for 8000"), "{stderr}");
    assert!(stderr.contains("8001"), "{stderr}");
}

#[test]
fn ctrl_c_stops_a_foreground_run() {
    if !can_run("ctrl_c_stops_a_foreground_run") {
        return;
    }
    let env = start();
    let image = env.image();
    env.ok(&["pull", &image]);
    let mut child = env
        .command()
        .args([
            "run",
            "--rm",
            "--net",
            "host",
            "--name",
            "fg",
            &image,
            "sh",
            "-c",
            "trap 'echo got-term; exit 42' TERM; echo ready; while true; do sleep 1; done",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let ready = rx.recv_timeout(LIMIT);
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    // SIGINT, as Ctrl-C on berth's terminal: the container gets SIGTERM (StopContainer).
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).unwrap();
    let deadline = std::time::Instant::now() + LIMIT;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("berth run did not end after SIGINT");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(ready.as_deref(), Ok("ready"));
    let rest: Vec<String> = rx.try_iter().collect();
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(stderr.contains("stopping"), "{stderr}");
    assert_eq!(rest, ["got-term"], "{stderr}");
    assert_eq!(status.code(), Some(42), "{stderr}");
    // --rm removed it.
    assert!(!env.ok(&["ps", "-a"]).contains("fg"));
}
