//! The harness of berth's root integration tests.
//!
//! The tests in `tests/tests/*.rs` run OCI bundles (a busybox-static rootfs and a config.json
//! that starts from `berth-runtime spec`) under berth-runtime and, where runc supports the
//! feature, under runc too, and compare what each runtime reports and what the container sees.
//!
//! - [`root_gate`]: [`require_root!`] skips (and says so) when not root; under `CI=true` it fails.
//! - [`binaries`]: where the built berth-runtime, runc, busybox and podman are.
//! - [`command`]: running a command with a time limit, output captured in files.
//! - [`bundle`]: the [`Bundle`] builder.
//! - [`runtime`]: the [`Runtime`] wrapper, one `--root` per wrapper, cleanup on drop.
//! - [`console`]: a console-socket receiver (SCM_RIGHTS) that reads the pty master.
//! - [`host`]: what the host sees: namespaces, cgroup files, helper processes held by PID.
//! - [`wait`]: bounded polling.
//! - [`compare`]: differential assertions (berth-runtime vs runc).

pub mod binaries;
pub mod bundle;
pub mod command;
pub mod compare;
pub mod console;
pub mod host;
pub mod root_gate;
pub mod runtime;
pub mod wait;

pub use bundle::Bundle;
pub use command::Outcome;
pub use runtime::Runtime;
pub use serde_json::{json, Value};
