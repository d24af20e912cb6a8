//! What each runtime handler can do, for RuntimeStatus's per-handler features and for
//! CreateContainer. Asked of the runtime's `features` command (runtime-spec's `features.md`):
//! the `user` namespace and `mountExtensions.idmap.enabled`, as containerd does. A runtime too
//! old to have `features` (crun before 1.9) is judged by its version: crun 1.8 joins user
//! namespaces and idmaps mounts. Anything else: neither.
//!
//! A user-namespaced pod (`hostUsers: false`) needs its runtime to join the pod's user
//! namespace; the idmapped mounts it needs (the rootfs, image volumes, and the kubelet's
//! volumes with uid/gid mappings) berthd makes itself when the runtime cannot (runc 1.1), so
//! RuntimeStatus says `user_namespaces` for every handler that joins user namespaces.
//!
//! The answers are cached per binary path and checked at each lookup against a `stat` of the
//! binary ([`FileVersion`]): an upgraded runtime is probed again, without restarting berthd.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::file_version::{FileVersion, PerVersion};

/// Time limit of one probe (`features` or `--version`).
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// What one runtime binary can do for user-namespaced pods.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Features {
    /// It joins (or makes) a user namespace (`features`: `linux.namespaces` has `user`).
    pub user_namespace: bool,
    /// It idmaps bind mounts itself (`mounts[].uidMappings`; `mountExtensions.idmap`).
    pub idmap_mounts: bool,
    /// It makes recursively read-only mounts (`features`' `mountOptions` has `rro`, as
    /// containerd asks): RuntimeStatus's `recursive_read_only_mounts`, and CreateContainer
    /// refuses a `recursive_read_only` mount for a handler without it.
    pub rro_mounts: bool,
    /// It execs the init with the exact bytes of env values that are not UTF-8 (`features`'
    /// `annotations` has berth's `run.berth.env-bytes`): berthd passes them in that annotation,
    /// else only lossily (U+FFFD for each invalid byte) in `process.env`.
    pub env_bytes: bool,
}

impl Features {
    /// Whether it runs user-namespaced pods with berthd's help (RuntimeStatus's
    /// `user_namespaces`): berthd idmaps whatever the runtime cannot.
    pub fn user_namespaces(&self) -> bool {
        self.user_namespace
    }
}

/// The features of each runtime binary berthd has asked, with the version of the binary it
/// asked.
#[derive(Default)]
pub struct HandlerFeatures {
    probed: PerVersion<Features>,
}

impl HandlerFeatures {
    pub fn new() -> Self {
        Self::default()
    }

    /// What the runtime binary at `path` can do, as it is on disk now: probed on first use
    /// and again whenever the binary changed (a missing binary can do nothing). Blocking: may
    /// run the runtime.
    pub fn of(&self, path: &Path) -> Features {
        let Ok(now) = FileVersion::stat(path) else {
            return Features::default();
        };
        let previous = match self.probed.get(path, now) {
            Ok(features) => return features,
            Err(previous) => previous,
        };
        // Probed without the lock: a probe may take seconds; two racing callers both probe.
        let features = probe(path);
        // Changed while it was probed: the answer is for one of the two versions, so it is
        // not cached (the next lookup probes again).
        if FileVersion::stat(path).is_ok_and(|v| v == now) {
            self.probed.put(path, now, features);
        }
        tracing::info!(
            runtime = %path.display(),
            user_namespace = features.user_namespace,
            idmap_mounts = features.idmap_mounts,
            rro_mounts = features.rro_mounts,
            env_bytes = features.env_bytes,
            reprobed = previous.is_some(),
            changed = previous.is_some_and(|p| p != features),
            "runtime handler probed"
        );
        features
    }
}

/// Asks the OCI runtime at `path`. Blocking; runs the runtime.
fn probe(path: &Path) -> Features {
    if let Some(features) = output(path, "features") {
        if let Ok(json) = serde_json::from_str::<serde_json::Value>(&features) {
            return from_features(&json);
        }
    }
    let idmaps = output(path, "--version").is_some_and(|v| from_version(&v));
    Features {
        user_namespace: idmaps,
        idmap_mounts: idmaps,
        // Without `features` a runtime cannot say; containerd then assumes no.
        rro_mounts: false,
        env_bytes: false,
    }
}

/// From `features` output: the user namespace and idmapped mounts.
fn from_features(json: &serde_json::Value) -> Features {
    let linux = &json["linux"];
    Features {
        user_namespace: linux["namespaces"]
            .as_array()
            .is_some_and(|ns| ns.iter().any(|n| n == "user")),
        idmap_mounts: linux["mountExtensions"]["idmap"]["enabled"] == true,
        rro_mounts: json["mountOptions"]
            .as_array()
            .is_some_and(|o| o.iter().any(|o| o == "rro")),
        env_bytes: json["annotations"]
            .get(berth_runtime::features::ANNOTATION_ENV_BYTES)
            .is_some(),
    }
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
    use std::path::PathBuf;

    #[test]
    fn features_tell_user_namespaces_and_idmap() {
        let json = |v: &str| serde_json::from_str::<serde_json::Value>(v).unwrap();
        let all = Features {
            user_namespace: true,
            idmap_mounts: true,
            rro_mounts: true,
            env_bytes: true,
        };
        assert_eq!(
            from_features(&json(
                r#"{"mountOptions":["ro","rro"],"annotations":{"run.berth.env-bytes":"1"},"linux":{"namespaces":["net","user"],"mountExtensions":{"idmap":{"enabled":true}}}}"#
            )),
            all
        );
        // runc 1.1: no mountExtensions (berthd idmaps for it), no rro.
        let runc_1_1 = from_features(&json(
            r#"{"mountOptions":["ro","rbind"],"linux":{"namespaces":["net","user"]}}"#,
        ));
        assert_eq!(
            runc_1_1,
            Features {
                user_namespace: true,
                idmap_mounts: false,
                rro_mounts: false,
                env_bytes: false,
            }
        );
        assert!(runc_1_1.user_namespaces());
        // runc: its own annotations only.
        assert!(
            !from_features(&json(
                r#"{"annotations":{"io.github.seccomp.libseccomp.version":"2.5.5"}}"#
            ))
            .env_bytes
        );
        // berth-runtime's own features document says it.
        let ours = serde_json::to_value(berth_runtime::features::features()).unwrap();
        assert!(from_features(&ours).env_bytes);
        let no_user = from_features(&json(
            r#"{"linux":{"namespaces":["net"],"mountExtensions":{"idmap":{"enabled":true}}}}"#,
        ));
        assert!(!no_user.user_namespaces());
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
        let cache = HandlerFeatures::new();
        assert_eq!(
            cache.of(Path::new("/nonexistent/runtime")),
            Features::default()
        );
    }

    /// A fake runtime: a script whose `features` prints `namespaces` and counts its runs in
    /// `<dir>/runs`; installed as an upgrade is (a new file renamed over the old).
    fn install(dir: &Path, namespaces: &str, idmap: bool) -> PathBuf {
        let bin = dir.join("runtime");
        let tmp = dir.join("runtime.new");
        let runs = dir.join("runs");
        std::fs::write(
            &tmp,
            format!(
                "#!/bin/sh\necho run >> {runs}\n[ \"$1\" = features ] || exit 1\n\
                 echo '{{\"linux\":{{\"namespaces\":[{namespaces}],\
                 \"mountExtensions\":{{\"idmap\":{{\"enabled\":{idmap}}}}}}}}}'\n",
                runs = runs.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&tmp, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        std::fs::rename(&tmp, &bin).unwrap();
        bin
    }

    fn runs(dir: &Path) -> usize {
        std::fs::read_to_string(dir.join("runs"))
            .unwrap_or_default()
            .lines()
            .count()
    }

    #[test]
    fn an_upgraded_runtime_is_probed_again() {
        let dir = tempfile::tempdir().unwrap();
        let bin = install(dir.path(), r#""user""#, false);
        let cache = HandlerFeatures::new();
        let old = Features {
            user_namespace: true,
            idmap_mounts: false,
            rro_mounts: false,
            env_bytes: false,
        };
        assert_eq!(cache.of(&bin), old);
        assert_eq!(cache.of(&bin), old);
        assert_eq!(runs(dir.path()), 1, "probed once while unchanged");

        // Upgraded (runc 1.1 -> 1.2): idmapped mounts now.
        install(dir.path(), r#""user""#, true);
        let new = Features {
            user_namespace: true,
            idmap_mounts: true,
            rro_mounts: false,
            env_bytes: false,
        };
        assert_eq!(cache.of(&bin), new);
        assert_eq!(cache.of(&bin), new);
        assert_eq!(runs(dir.path()), 2, "probed again once after the upgrade");

        // Removed: nothing; put back: probed again.
        std::fs::remove_file(&bin).unwrap();
        assert_eq!(cache.of(&bin), Features::default());
        install(dir.path(), r#""net""#, false);
        assert_eq!(cache.of(&bin), Features::default());
        assert_eq!(runs(dir.path()), 3);
    }
}
