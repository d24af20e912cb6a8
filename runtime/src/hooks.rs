//! OCI lifecycle hooks: each runs with the container's state JSON on stdin, the hook's own
//! args and env, and its timeout; a failing hook fails the lifecycle step (except poststart
//! and poststop, whose failures the caller only logs).

use std::io::Write;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use oci_spec::runtime::Hook;

use crate::error::{Result, RuntimeError};

/// Hooks of one kind with no timeout get this bound, so a stuck hook cannot hang the runtime.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookKind {
    Prestart,
    CreateRuntime,
    CreateContainer,
    StartContainer,
    Poststart,
    Poststop,
}

impl HookKind {
    pub fn name(self) -> &'static str {
        match self {
            Self::Prestart => "prestart",
            Self::CreateRuntime => "createRuntime",
            Self::CreateContainer => "createContainer",
            Self::StartContainer => "startContainer",
            Self::Poststart => "poststart",
            Self::Poststop => "poststop",
        }
    }

    /// The hooks of this kind in the spec.
    pub fn of(self, spec: &oci_spec::runtime::Spec) -> Vec<Hook> {
        let Some(h) = spec.hooks() else {
            return Vec::new();
        };
        #[allow(deprecated)]
        let hooks = match self {
            Self::Prestart => h.prestart(),
            Self::CreateRuntime => h.create_runtime(),
            Self::CreateContainer => h.create_container(),
            Self::StartContainer => h.start_container(),
            Self::Poststart => h.poststart(),
            Self::Poststop => h.poststop(),
        };
        hooks.clone().unwrap_or_default()
    }
}

/// Runs every hook of `kind` in order, stopping at the first failure.
pub fn run(kind: HookKind, hooks: &[Hook], state_json: &str) -> Result<()> {
    for hook in hooks {
        run_one(kind, hook, state_json)?;
    }
    Ok(())
}

fn run_one(kind: HookKind, hook: &Hook, state_json: &str) -> Result<()> {
    let fail = |reason: String| RuntimeError::Hook {
        kind: kind.name(),
        path: hook.path().clone(),
        reason,
    };
    let args = hook.args().clone().unwrap_or_default();
    let mut cmd = Command::new(hook.path());
    if let Some((arg0, rest)) = args.split_first() {
        cmd.arg0(arg0).args(rest);
    }
    cmd.env_clear();
    for kv in hook.env().iter().flatten() {
        if let Some((k, v)) = kv.split_once('=') {
            cmd.env(k, v);
        }
    }
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|e| fail(format!("spawn: {e}")))?;
    if let Some(mut stdin) = child.stdin.take() {
        // A hook that does not read its stdin is fine.
        let _ = stdin.write_all(state_json.as_bytes());
    }
    let timeout = hook
        .timeout()
        .map(|t| Duration::from_secs(t.max(1) as u64))
        .unwrap_or(DEFAULT_TIMEOUT);
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => return Ok(()),
            Ok(Some(status)) => {
                let mut stderr = String::new();
                if let Some(mut e) = child.stderr.take() {
                    use std::io::Read;
                    let _ = e.read_to_string(&mut stderr);
                }
                return Err(fail(format!("{status}: {}", stderr.trim())));
            }
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(fail(format!("timed out after {}s", timeout.as_secs())));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => return Err(fail(format!("wait: {e}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::HookBuilder;

    fn hook(script: &str, timeout: Option<i64>) -> Hook {
        let mut b = HookBuilder::default().path("/bin/sh").args(vec![
            "sh".to_string(),
            "-c".to_string(),
            script.to_string(),
        ]);
        if let Some(t) = timeout {
            b = b.timeout(t);
        }
        b.build().unwrap()
    }

    #[test]
    fn hook_reads_state_on_stdin() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let h = hook(&format!("cat > {}", out.display()), None);
        run(HookKind::Prestart, &[h], "{\"id\":\"x\"}").unwrap();
        assert_eq!(std::fs::read_to_string(out).unwrap(), "{\"id\":\"x\"}");
    }

    #[test]
    fn failing_and_slow_hooks_are_errors() {
        let err = run(
            HookKind::CreateRuntime,
            &[hook("echo boom >&2; exit 3", None)],
            "{}",
        )
        .unwrap_err();
        assert!(err.to_string().contains("boom"), "{err}");
        let err = run(HookKind::Poststop, &[hook("sleep 5", Some(1))], "{}").unwrap_err();
        assert!(err.to_string().contains("timed out"), "{err}");
    }
}
