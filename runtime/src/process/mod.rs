//! The processes the runtime forks, and what they do to themselves before exec.
//!
//! `create` forks **stage 1**, which joins the namespaces to join, creates the user namespace
//! (the runtime writes its maps), unshares the other new namespaces, and forks **init** (PID 1
//! of a new PID namespace) before exiting. Init sets up the rootfs and the process attributes,
//! reports `Created`, waits on the exec FIFO for `start`, and execs the user process. `exec`
//! follows the same two stages, joining the container's namespaces instead.

pub mod apparmor;
pub mod capabilities;
pub mod console;
pub mod env_bytes;
pub mod fds;
pub mod init;
pub mod namespaces;
pub mod procfs;
pub mod rlimits;
pub mod sealed_exe;
pub mod seccomp;
pub mod selinux;
pub mod stage1;
pub mod sync;
pub mod user;
