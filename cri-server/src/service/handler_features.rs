//! What each runtime handler can do, for RuntimeStatus's per-handler features: user namespaces
//! need the OCI runtime to join a pod's user namespace and to idmap bind mounts (the kubelet
//! gives every volume of a `hostUsers: false` pod the pod's mappings). Asked of the runtime's
//! `features` command (runtime-spec's `features.md`): the `user` namespace and
//! `mountExtensions.idmap.enabled`, as containerd does. A runtime too old to have `features`
//! (crun before 1.9) is judged by its version: crun 1.8 idmaps mounts. Anything else: false.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Time limit of one probe (`features` or `--version`).
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// Whether the OCI runtime at `path` runs user-namespaced pods. Blocking; runs the runtime.
pub fn user_namespaces(path: &Path) -> bool {
    if let Some(features) = output(path, "features") {
        if let Ok(json) = serde_json::from_str::<serde_json::Value>(&features) {
            return from_features(&json);
        }
    }
    output(path, "--version").is_some_and(|v| from_version(&v))
}

/// From `features` output: the user namespace and idmapped mounts.
fn from_features(json: &serde_json::Value) -> bool {
    let linux = &json["linux"];
    let user = linux["namespaces"]
        .as_array()
        .is_some_and(|ns| ns.iter().any(|n| n == "user"));
    user && linux["mountExtensions"]["idmap"]["enabled"] == true
}

/// From `--version` of a runtime without `features`: crun 1.8 or later.
fn from_version(version: &str) -> bool {
    let first = version.lines().next().unwrap_or_default();
    let Some(v) = first.strip_prefix("crun version ") else {
        return false;
    };
    let mut parts = v
        .split(['.', '+', '-'])
        .map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    (major, minor) >= (1, 8)
}

/// The standard output of `path arg` if it exits 0 within [`PROBE_TIMEOUT`] (killed, by its
/// PID, otherwise).
fn output(path: &Path, arg: &str) -> Option<String> {
    let mut child = Command::new(path)
        .arg(arg)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let deadline = Instant::now() + PROBE_TIMEOUT;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            _ => {
                tracing::warn!(runtime = %path.display(), arg, "runtime probe timed out");
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
    }
    let out = child.wait_with_output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn features_need_user_namespace_and_idmap() {
        let json = |v: &str| serde_json::from_str::<serde_json::Value>(v).unwrap();
        assert!(from_features(&json(
            r#"{"linux":{"namespaces":["net","user"],"mountExtensions":{"idmap":{"enabled":true}}}}"#
        )));
        // runc 1.1: no mountExtensions.
        assert!(!from_features(&json(
            r#"{"linux":{"namespaces":["net","user"]}}"#
        )));
        assert!(!from_features(&json(
            r#"{"linux":{"namespaces":["net"],"mountExtensions":{"idmap":{"enabled":true}}}}"#
        )));
    }

    #[test]
    fn versions_without_features() {
        assert!(from_version("crun version 1.8.1\ncommit: f8a0"));
        assert!(from_version("crun version 1.10"));
        assert!(!from_version("crun version 1.7.2"));
        assert!(!from_version("runc version 1.1.5+ds1"));
        assert!(!from_version(""));
    }

    #[test]
    fn a_missing_binary_supports_nothing() {
        assert!(!user_namespaces(Path::new("/nonexistent/runtime")));
    }
}
