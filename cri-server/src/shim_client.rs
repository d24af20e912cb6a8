//! berthd's side of berth-shim: start a shim for a container, read its readiness line, and talk
//! to its control socket. The protocol types live in `berth_runtime::shim_protocol`.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use berth_runtime::shim_protocol::{ExitRecord, Ready, Reply, ShimRequest, ShimState, SOCKET};

use crate::sealed_runtime::SealedRuntime;

/// Control requests get an answer within this bound.
const CONTROL_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum ShimError {
    #[error("start berth-shim {shim} for {id}: {source}")]
    Spawn {
        shim: PathBuf,
        id: String,
        #[source]
        source: std::io::Error,
    },
    #[error("berth-shim for {id}: {message}")]
    Create { id: String, message: String },
    #[error("shim of {id} at {socket}: {source}")]
    Control {
        id: String,
        socket: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("shim of {id}: {message}")]
    Refused { id: String, message: String },
}

/// What a shim needs to create one container.
#[derive(Debug, Clone)]
pub struct ShimArgs {
    pub shim_binary: PathBuf,
    pub id: String,
    pub bundle: PathBuf,
    /// The OCI runtime of the RuntimeClass handler, and its `--root`.
    pub runtime: PathBuf,
    pub runtime_root: PathBuf,
    /// berthd's sealed copy of `runtime`, which the shim then runs for `create` (it opens it
    /// as `--runtime-copy /proc/<berthd>/fd/N`); None: the shim runs `runtime` and the runtime
    /// seals itself.
    pub sealed_runtime: Option<Arc<SealedRuntime>>,
    /// The shim's directory (sockets, pid files, exit record).
    pub state_dir: PathBuf,
    /// The CRI log file (none for the pause container).
    pub log_path: Option<PathBuf>,
    pub stdin: bool,
    pub stdin_once: bool,
    /// Start the container as the runtime creates it (`run --detach`), for a pause.
    pub start: bool,
}

/// A running (or exited) shim, found by its state directory.
#[derive(Debug, Clone)]
pub struct Shim {
    pub id: String,
    pub state_dir: PathBuf,
    pub init_pid: i32,
}

impl Shim {
    /// Starts a shim, which creates the container (not started unless `args.start`: call the
    /// runtime's `start`).
    /// Blocking: run it on a blocking thread.
    pub fn create(args: &ShimArgs) -> Result<Shim, ShimError> {
        let mut cmd = Command::new(&args.shim_binary);
        cmd.arg("--id")
            .arg(&args.id)
            .arg("--bundle")
            .arg(&args.bundle)
            .arg("--runtime")
            .arg(&args.runtime)
            .arg("--runtime-root")
            .arg(&args.runtime_root)
            .arg("--state-dir")
            .arg(&args.state_dir);
        // `args` (and with it the copy) lives until the shim has reported, after `create`.
        if let Some(copy) = &args.sealed_runtime {
            cmd.arg("--runtime-copy").arg(copy.path_for_others());
        }
        if let Some(log) = &args.log_path {
            cmd.arg("--log-path").arg(log);
        }
        if args.stdin {
            cmd.arg("--stdin");
        }
        if args.stdin_once {
            cmd.arg("--stdin-once");
        }
        if args.start {
            cmd.arg("--start");
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        let spawn_err = |source| ShimError::Spawn {
            shim: args.shim_binary.clone(),
            id: args.id.clone(),
            source,
        };
        // The foreground shim prints one line and exits; the monitor lives on, detached.
        let out = cmd.output().map_err(spawn_err)?;
        let line = String::from_utf8_lossy(&out.stdout);
        match serde_json::from_str::<Ready>(line.trim()) {
            Ok(Ready::Created { init_pid, .. }) => Ok(Shim {
                id: args.id.clone(),
                state_dir: args.state_dir.clone(),
                init_pid,
            }),
            Ok(Ready::Failed { error }) => Err(ShimError::Create {
                id: args.id.clone(),
                message: error,
            }),
            Err(_) => Err(ShimError::Create {
                id: args.id.clone(),
                message: format!(
                    "the shim exited ({}) without reporting: {:?}",
                    out.status,
                    line.trim()
                ),
            }),
        }
    }

    /// The exit record, once the container's init exited.
    pub fn exit_record(&self) -> std::io::Result<Option<ExitRecord>> {
        ExitRecord::load(&self.state_dir)
    }

    pub fn socket(&self) -> PathBuf {
        self.state_dir.join(SOCKET)
    }

    fn connect(&self) -> Result<UnixStream, ShimError> {
        let err = |source| ShimError::Control {
            id: self.id.clone(),
            socket: self.socket(),
            source,
        };
        let conn = UnixStream::connect(self.socket()).map_err(err)?;
        conn.set_read_timeout(Some(CONTROL_TIMEOUT)).map_err(err)?;
        conn.set_write_timeout(Some(CONTROL_TIMEOUT)).map_err(err)?;
        Ok(conn)
    }

    fn request(&self, req: &ShimRequest) -> Result<String, ShimError> {
        let err = |source| ShimError::Control {
            id: self.id.clone(),
            socket: self.socket(),
            source,
        };
        let mut conn = self.connect()?;
        let mut line = serde_json::to_vec(req).expect("requests serialize");
        line.push(b'\n');
        conn.write_all(&line).map_err(err)?;
        let mut answer = String::new();
        BufReader::new(conn).read_line(&mut answer).map_err(err)?;
        Ok(answer)
    }

    fn simple(&self, req: &ShimRequest) -> Result<(), ShimError> {
        let answer = self.request(req)?;
        match serde_json::from_str::<Reply>(answer.trim()) {
            Ok(Reply { ok: true, .. }) => Ok(()),
            Ok(Reply { error, .. }) => Err(ShimError::Refused {
                id: self.id.clone(),
                message: error.unwrap_or_default(),
            }),
            Err(e) => Err(ShimError::Refused {
                id: self.id.clone(),
                message: format!("bad answer {answer:?}: {e}"),
            }),
        }
    }

    /// After the kubelet rotated the log file.
    pub fn reopen_log(&self) -> Result<(), ShimError> {
        self.simple(&ShimRequest::ReopenLog)
    }

    pub fn resize(&self, width: u16, height: u16) -> Result<(), ShimError> {
        self.simple(&ShimRequest::Resize { width, height })
    }

    pub fn state(&self) -> Result<ShimState, ShimError> {
        let answer = self.request(&ShimRequest::State)?;
        serde_json::from_str(answer.trim()).map_err(|e| ShimError::Refused {
            id: self.id.clone(),
            message: format!("bad state {answer:?}: {e}"),
        })
    }

    /// An attach session: after this, read frames (`shim_protocol::read_frame`) from the
    /// stream; with `stdin`, what is written goes to the container's stdin.
    pub fn attach(&self, stdin: bool) -> Result<UnixStream, ShimError> {
        let err = |source| ShimError::Control {
            id: self.id.clone(),
            socket: self.socket(),
            source,
        };
        let mut conn = self.connect()?;
        let mut line =
            serde_json::to_vec(&ShimRequest::Attach { stdin }).expect("requests serialize");
        line.push(b'\n');
        conn.write_all(&line).map_err(err)?;
        // The reply line, read byte by byte so that no frame byte is consumed.
        let mut reply = Vec::new();
        let mut byte = [0u8; 1];
        while reply.len() < 4096 {
            std::io::Read::read_exact(&mut conn, &mut byte).map_err(err)?;
            if byte[0] == b'\n' {
                break;
            }
            reply.push(byte[0]);
        }
        match serde_json::from_slice::<Reply>(&reply) {
            Ok(Reply { ok: true, .. }) => {
                conn.set_read_timeout(None).map_err(err)?;
                Ok(conn)
            }
            other => Err(ShimError::Refused {
                id: self.id.clone(),
                message: format!("attach refused: {other:?}"),
            }),
        }
    }
}

/// The shim binary installed next to berthd.
pub fn default_shim_binary() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join("berth-shim")))
        .filter(|p| p.exists())
        .unwrap_or_else(|| Path::new("/usr/local/bin/berth-shim").to_owned())
}
