//! docker credential helpers: `docker-credential-<name> get`, the server URL on stdin, a JSON
//! `{"ServerURL", "Username", "Secret"}` on stdout (docker-credential-helpers' protocol). A
//! helper that knows no credentials for the server says "credentials not found" and exits 1.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::Deserialize;
use tracing::debug;

use crate::registry::Credentials;

/// How long a helper may take (docker itself waits forever; a node daemon must not).
const HELPER_TIMEOUT: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(10);
/// Largest answer read from a helper.
const MAX_OUTPUT: u64 = 1 << 20;

/// Errors of running one credential helper.
#[derive(Debug, thiserror::Error)]
pub enum HelperError {
    /// The helper's binary is not in any of the searched directories.
    #[error("docker-credential-{helper}: not found in {searched}")]
    NotFound {
        /// The helper's name (`credsStore`/`credHelpers` value).
        helper: String,
        /// The directories searched, `:`-separated.
        searched: String,
    },
    /// Spawning it, or talking to it, failed.
    #[error("docker-credential-{helper}: {source}")]
    Io {
        /// The helper's name.
        helper: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// It did not answer in time (it was killed).
    #[error("docker-credential-{helper}: no answer within {0:?}", HELPER_TIMEOUT)]
    Timeout {
        /// The helper's name.
        helper: String,
    },
    /// It failed for another reason than "not found".
    #[error("docker-credential-{helper} get {server}: exit status {status}: {message}")]
    Failed {
        /// The helper's name.
        helper: String,
        /// The server URL asked for.
        server: String,
        /// Its exit status.
        status: std::process::ExitStatus,
        /// What it printed.
        message: String,
    },
    /// Its answer is not the JSON of the protocol.
    #[error("docker-credential-{helper} get {server}: bad answer: {source}")]
    BadAnswer {
        /// The helper's name.
        helper: String,
        /// The server URL asked for.
        server: String,
        /// The parser's error.
        source: serde_json::Error,
    },
}

#[derive(Deserialize)]
struct Answer {
    #[serde(rename = "Username", default)]
    username: String,
    #[serde(rename = "Secret", default)]
    secret: String,
}

/// Where helpers are looked up: the given directories, else `$PATH`.
pub(crate) fn search_dirs(dirs: Option<&[PathBuf]>) -> Vec<PathBuf> {
    match dirs {
        Some(d) => d.to_vec(),
        None => std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).collect())
            .unwrap_or_default(),
    }
}

fn find(helper: &str, dirs: &[PathBuf]) -> Option<PathBuf> {
    let name = format!("docker-credential-{helper}");
    dirs.iter().map(|d| d.join(&name)).find(|p| p.is_file())
}

/// Runs `docker-credential-<helper> get` for `server`. `Ok(None)` when the helper has no
/// credentials for it.
pub(crate) fn helper_get(
    helper: &str,
    server: &str,
    dirs: &[PathBuf],
) -> Result<Option<Credentials>, HelperError> {
    let io = |source| HelperError::Io {
        helper: helper.to_owned(),
        source,
    };
    if helper.is_empty() || helper.contains('/') {
        return Err(HelperError::NotFound {
            helper: helper.to_owned(),
            searched: "(invalid helper name)".into(),
        });
    }
    let Some(bin) = find(helper, dirs) else {
        return Err(HelperError::NotFound {
            helper: helper.to_owned(),
            searched: std::env::join_paths(dirs)
                .map(|p| p.to_string_lossy().into_owned())
                .unwrap_or_default(),
        });
    };
    let (status, stdout, stderr) = run(&bin, server).map_err(|e| match e {
        RunError::Io(e) => io(e),
        RunError::Timeout => HelperError::Timeout {
            helper: helper.to_owned(),
        },
    })?;
    if !status.success() {
        let out = String::from_utf8_lossy(&stdout);
        let err = String::from_utf8_lossy(&stderr);
        let message = format!("{} {}", out.trim(), err.trim()).trim().to_owned();
        if message.contains("credentials not found") {
            debug!(helper, server, "credential helper has no credentials");
            return Ok(None);
        }
        return Err(HelperError::Failed {
            helper: helper.to_owned(),
            server: server.to_owned(),
            status,
            message,
        });
    }
    let a: Answer = serde_json::from_slice(&stdout).map_err(|source| HelperError::BadAnswer {
        helper: helper.to_owned(),
        server: server.to_owned(),
        source,
    })?;
    debug!(helper, server, "credentials from credential helper");
    Ok(match (a.username.as_str(), a.secret.is_empty()) {
        (_, true) => None,
        // docker's convention for an identity token.
        ("<token>", false) => Some(Credentials::Bearer(a.secret)),
        (_, false) => Some(Credentials::Basic {
            username: a.username,
            password: a.secret,
        }),
    })
}

enum RunError {
    Io(std::io::Error),
    Timeout,
}

impl From<std::io::Error> for RunError {
    fn from(e: std::io::Error) -> Self {
        RunError::Io(e)
    }
}

type Output = (std::process::ExitStatus, Vec<u8>, Vec<u8>);

fn run(bin: &Path, server: &str) -> Result<Output, RunError> {
    let spawn = || {
        Command::new(bin)
            .arg("get")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
    };
    // ETXTBSY: a helper just written by another thread of this process may still be open for
    // writing in a child forked meanwhile; that passes within moments.
    let mut child = spawn();
    for _ in 0..10 {
        match &child {
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) => {
                std::thread::sleep(Duration::from_millis(20));
                child = spawn();
            }
            _ => break,
        }
    }
    let mut child = child?;
    let mut stdin = child.stdin.take().expect("piped");
    let mut stdout = child.stdout.take().expect("piped");
    let mut stderr = child.stderr.take().expect("piped");
    // Readers on threads, so that a chatty helper cannot block on a full pipe.
    let out = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = (&mut stdout).take(MAX_OUTPUT).read_to_end(&mut b);
        b
    });
    let err = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = (&mut stderr).take(MAX_OUTPUT).read_to_end(&mut b);
        b
    });
    // A helper may exit without reading stdin: a broken pipe is not an error.
    let _ = stdin.write_all(server.as_bytes());
    drop(stdin);
    let start = Instant::now();
    // Bounded by HELPER_TIMEOUT.
    let status = loop {
        if let Some(s) = child.try_wait()? {
            break s;
        }
        if start.elapsed() > HELPER_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            return Err(RunError::Timeout);
        }
        std::thread::sleep(POLL);
    };
    let stdout = out.join().unwrap_or_default();
    let stderr = err.join().unwrap_or_default();
    Ok((status, stdout, stderr))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    pub(crate) fn fake_helper(dir: &Path, name: &str, script: &str) {
        let p = dir.join(format!("docker-credential-{name}"));
        std::fs::write(&p, format!("#!/bin/sh\n{script}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    #[test]
    fn answers_not_found_failures() {
        let dir = tempfile::tempdir().unwrap();
        let dirs = vec![dir.path().to_owned()];
        // Echoes the server it was asked about as the user name: proves stdin and `get`.
        fake_helper(
            dir.path(),
            "ok",
            r#"[ "$1" = get ] || exit 9; read s; printf '{"ServerURL":"%s","Username":"u-%s","Secret":"pw"}' "$s" "$s""#,
        );
        assert_eq!(
            helper_get("ok", "r.example:5000", &dirs).unwrap(),
            Some(Credentials::Basic {
                username: "u-r.example:5000".into(),
                password: "pw".into()
            })
        );
        fake_helper(
            dir.path(),
            "tok",
            r#"printf '{"Username":"<token>","Secret":"idt"}'"#,
        );
        assert_eq!(
            helper_get("tok", "x", &dirs).unwrap(),
            Some(Credentials::Bearer("idt".into()))
        );
        fake_helper(
            dir.path(),
            "none",
            "echo credentials not found in native keychain; exit 1",
        );
        assert_eq!(helper_get("none", "x", &dirs).unwrap(), None);
        fake_helper(dir.path(), "broken", "echo dbus is down >&2; exit 3");
        let e = helper_get("broken", "x", &dirs).unwrap_err();
        assert!(e.to_string().contains("dbus is down"), "{e}");
        fake_helper(dir.path(), "garbage", "echo not json");
        let e = helper_get("garbage", "x", &dirs).unwrap_err();
        assert!(matches!(e, HelperError::BadAnswer { .. }), "{e}");
        let e = helper_get("absent", "x", &dirs).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("docker-credential-absent: not found in"),
            "{e}"
        );
        assert!(helper_get("../x", "x", &dirs).is_err());
    }
}
