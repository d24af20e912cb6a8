//! Running a command with a time limit. Output goes to files rather than pipes, so a container
//! that inherits stdout (create, run --detach) cannot keep the caller waiting for EOF.

use std::fmt;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// The default limit for one runtime command.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// How a command ended and what it printed.
#[derive(Clone)]
pub struct Outcome {
    /// The command line, for messages.
    pub what: String,
    /// The exit code, or 128+signal when killed by a signal (as a shell reports it).
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Outcome {
    pub fn success(&self) -> bool {
        self.code == 0
    }

    /// Panics (with the command and its output) unless the command exited 0.
    #[track_caller]
    pub fn ok(self) -> Self {
        assert!(self.success(), "command failed: {self:?}");
        self
    }

    /// Panics unless the command failed.
    #[track_caller]
    pub fn failed(self) -> Self {
        assert!(!self.success(), "command should have failed: {self:?}");
        self
    }

    /// stdout with `\r\n` turned into `\n` (pty output) and trailing whitespace trimmed.
    pub fn out(&self) -> String {
        self.stdout.replace("\r\n", "\n").trim_end().to_string()
    }
}

impl fmt::Debug for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "`{}` exited {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.what, self.code, self.stdout, self.stderr
        )
    }
}

/// The command line of `cmd`, for messages.
pub fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

fn read_all(mut f: &File) -> String {
    let mut buf = Vec::new();
    let _ = f.seek(SeekFrom::Start(0));
    let _ = f.read_to_end(&mut buf);
    String::from_utf8_lossy(&buf).into_owned()
}

/// Runs `cmd` (stdin from /dev/null unless the caller set it) with output in anonymous files,
/// killing it (by PID) if it runs longer than `timeout`, which fails the test.
#[track_caller]
pub fn run_bounded(cmd: &mut Command, timeout: Duration) -> Outcome {
    let out = tempfile::tempfile().expect("tempfile");
    let err = tempfile::tempfile().expect("tempfile");
    run_with_files(cmd, timeout, out, err)
}

/// Like [`run_bounded`] with given stdout/stderr files (read back from their start).
#[track_caller]
pub fn run_with_files(cmd: &mut Command, timeout: Duration, out: File, err: File) -> Outcome {
    let what = describe(cmd);
    let out2 = out.try_clone().expect("dup");
    let err2 = err.try_clone().expect("dup");
    let mut child = cmd
        .stdout(Stdio::from(out2))
        .stderr(Stdio::from(err2))
        .spawn()
        .unwrap_or_else(|e| panic!("spawn `{what}`: {e}"));
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait().expect("wait") {
            Some(s) => break s,
            None if Instant::now() >= deadline => {
                let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGKILL);
                let _ = child.wait();
                panic!(
                    "`{what}` did not finish within {timeout:?}; killed it\n--- stdout ---\n{}\n--- stderr ---\n{}",
                    read_all(&out),
                    read_all(&err)
                );
            }
            None => std::thread::sleep(Duration::from_millis(5)),
        }
    };
    let code = status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0));
    Outcome {
        what,
        code,
        stdout: read_all(&out),
        stderr: read_all(&err),
    }
}

/// Runs a host program with arguments, bounded by [`DEFAULT_TIMEOUT`].
#[track_caller]
pub fn host(program: &str, args: &[&str]) -> Outcome {
    run_bounded(Command::new(program).args(args), DEFAULT_TIMEOUT)
}
