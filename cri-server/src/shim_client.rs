//! berthd's side of berth-shim: start a shim for a container, read its readiness line, and talk
//! to its control socket. The protocol types live in `berth_runtime::shim_protocol`.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use berth_runtime::shim_protocol::{ExitRecord, Ready, Reply, ShimRequest, ShimState, SOCKET};
use sha2::{Digest, Sha256};

use crate::config::CgroupDriver;
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

/// The hex digits of a shim's socket name: 128 bits of a hash of its state directory.
const SOCKET_NAME_LEN: usize = 32;

/// The longest socket path a unix socket address holds (sun_path's 108 bytes, less the NUL).
const SUN_PATH_MAX: usize = 107;

/// The control socket of the shim whose state directory is `shim_state_dir`: a fixed-length
/// name under `socket_dir` (as containerd puts its shims' sockets under `/run/containerd/s`),
/// so that the path fits sun_path whatever the state directory. The same directory always
/// gives the same path, so a restarted berthd finds its shims again.
pub fn socket_path(socket_dir: &Path, shim_state_dir: &Path) -> PathBuf {
    let digest = Sha256::digest(shim_state_dir.as_os_str().as_encoded_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    socket_dir.join(&hex[..SOCKET_NAME_LEN])
}

/// Removes the socket of the shim whose state dir is `shim_state_dir`, once the shim is gone:
/// a shim that ended cleanly removed it, one that was killed left it. Absent is fine; another
/// failure is logged (nothing else depends on it).
pub fn remove_socket(socket_dir: &Path, shim_state_dir: &Path) {
    let socket = socket_path(socket_dir, shim_state_dir);
    if let Err(e) = std::fs::remove_file(&socket) {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(socket = %socket.display(), error = %e, "cannot remove a shim's socket");
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SocketDirError {
    #[error(
        "shim_socket_dir {dir}: too long for a unix socket path ({len} bytes with a socket \
         name; the limit is {SUN_PATH_MAX}); choose a shorter directory"
    )]
    TooLong { dir: PathBuf, len: usize },
    #[error("shim_socket_dir {dir}: {source}")]
    Io {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Makes `socket_dir` (0700: the sockets control containers) and checks that the shims'
/// socket paths under it fit a unix socket address, so that a bad setting fails berthd's
/// start-up rather than every RunPodSandbox.
pub fn prepare_socket_dir(socket_dir: &Path) -> Result<(), SocketDirError> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let len = socket_path(socket_dir, Path::new("")).as_os_str().len();
    if len > SUN_PATH_MAX {
        return Err(SocketDirError::TooLong {
            dir: socket_dir.to_owned(),
            len,
        });
    }
    let err = |source| SocketDirError::Io {
        dir: socket_dir.to_owned(),
        source,
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(socket_dir)
        .map_err(err)?;
    std::fs::set_permissions(socket_dir, std::fs::Permissions::from_mode(0o700)).map_err(err)
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
    /// The shim's directory (pid files, exit record).
    pub state_dir: PathBuf,
    /// Its control socket ([`socket_path`]).
    pub socket: PathBuf,
    /// The CRI log file (none for the pause container).
    pub log_path: Option<PathBuf>,
    pub stdin: bool,
    pub stdin_once: bool,
    /// Start the container as the runtime creates it (`run --detach`), for a pause.
    pub start: bool,
    /// The container's cgroup driver: under systemd the shim runs the runtime with
    /// `--systemd-cgroup` (as berthd does for every later command).
    pub cgroup_driver: CgroupDriver,
}

/// A running (or exited) shim, found by its state directory.
#[derive(Debug, Clone)]
pub struct Shim {
    pub id: String,
    pub state_dir: PathBuf,
    /// Its control socket ([`socket_path`]).
    pub socket: PathBuf,
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
            .arg(&args.state_dir)
            .arg("--socket")
            .arg(&args.socket);
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
        if args.cgroup_driver.is_systemd() {
            cmd.arg("--systemd-cgroup");
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
            Ok(Ready::Created { init_pid, shim_pid }) => {
                if args.cgroup_driver.is_systemd() {
                    move_to_own_scope(&args.id, shim_pid);
                }
                Ok(Shim {
                    id: args.id.clone(),
                    state_dir: args.state_dir.clone(),
                    socket: args.socket.clone(),
                    init_pid,
                })
            }
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

    /// The control socket; a shim started by a berth before the sockets moved out of the
    /// state directory still has its socket there.
    pub fn socket(&self) -> PathBuf {
        let legacy = self.state_dir.join(SOCKET);
        if !self.socket.exists() && legacy.exists() {
            return legacy;
        }
        self.socket.clone()
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

/// The shim's own scope under the systemd driver: `berth-shim-<id>.scope` in system.slice.
pub fn shim_scope(id: &str) -> Result<berth_cgroups::SystemdUnit, berth_cgroups::CgroupError> {
    berth_cgroups::SystemdUnit::parse(&format!("system.slice:berth-shim:{id}"))
}

/// Under the systemd driver the shim leaves berthd's unit for a scope of its own,
/// [`shim_scope`] (as CRI-O's conmon gets `crio-conmon-<id>.scope`): `systemctl kill` of
/// berthd's unit signals every process in its cgroup whatever its KillMode, and a shim killed
/// with berthd loses its container (re-adopted as exited while it still runs in its scope).
/// systemd removes the scope when the shim exits. A failure is only logged: the shim then stays
/// in berthd's cgroup, where KillMode=process keeps it across restarts.
fn move_to_own_scope(id: &str, shim_pid: i32) {
    let moved = shim_scope(id).and_then(|unit| {
        let scope = berth_cgroups::systemd::client::TransientUnit {
            slice: unit.slice.clone(),
            description: format!("berth shim of {id}"),
            pids: vec![shim_pid as u32],
            ..Default::default()
        };
        berth_cgroups::systemd::Systemd::connect()?.start_transient_unit(&unit.name, &scope)?;
        Ok(unit.name)
    });
    match moved {
        Ok(name) => {
            tracing::debug!(container = id, shim_pid, scope = %name, "shim in its own scope")
        }
        Err(e) => tracing::warn!(
            container = id,
            shim_pid,
            error = %e,
            "cannot move the shim to a scope of its own; it stays in berthd's cgroup"
        ),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_paths_are_short_and_fixed_whatever_the_state_dir() {
        let long = Path::new("/tmp").join("a-state-directory-name-".repeat(8));
        let a = socket_path(Path::new("/run/berth/s"), &long.join("containers/c1/shim"));
        let b = socket_path(Path::new("/run/berth/s"), &long.join("containers/c2/shim"));
        assert_ne!(a, b);
        assert_eq!(a.as_os_str().len(), "/run/berth/s/".len() + SOCKET_NAME_LEN);
        // The same state dir gives the same socket: a restarted berthd finds its shims.
        assert_eq!(
            a,
            socket_path(Path::new("/run/berth/s"), &long.join("containers/c1/shim"))
        );
    }

    #[test]
    fn the_shim_scope_is_a_valid_unit_in_system_slice() {
        let id = "0123456789abcdef".repeat(4);
        let unit = shim_scope(&id).unwrap();
        assert_eq!(unit.name, format!("berth-shim-{id}.scope"));
        assert_eq!(unit.slice, "system.slice");
        assert_eq!(
            unit.cgroup_path().unwrap(),
            Path::new(&format!("/system.slice/berth-shim-{id}.scope"))
        );
        // Never a container's scope (berth-<id>.scope) whatever the ID.
        assert_ne!(unit.name, format!("berth-{id}.scope"));
    }

    #[test]
    fn a_socket_dir_too_long_is_refused_up_front() {
        let dir = Path::new("/tmp").join("d".repeat(80));
        let e = prepare_socket_dir(&dir).unwrap_err();
        assert!(matches!(e, SocketDirError::TooLong { .. }), "{e}");
        assert!(e.to_string().contains("shim_socket_dir"), "{e}");
        assert!(!dir.exists());
    }
}
