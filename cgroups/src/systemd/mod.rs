//! The systemd cgroup driver: a container's cgroup is a transient systemd unit (a scope in the
//! pod's slice, `Delegate=yes`), started, changed and stopped over D-Bus, as runc and crun do
//! with `--systemd-cgroup` and as kubeadm's nodes expect (`cgroupDriver: systemd`).
//!
//! - [`path`](crate::path::SystemdUnit) turns `slice:prefix:name` into the unit;
//! - [`properties`] maps OCI resources to unit properties;
//! - [`client`] is the D-Bus client (zbus);
//! - [`SystemdManager`] is the [`CgroupManager`](crate::CgroupManager).

pub mod client;
mod manager;
pub mod properties;

pub use client::Systemd;
pub use manager::SystemdManager;

/// Whether systemd is PID 1 (sd_booted(3)'s test: `/run/systemd/system` is a directory).
pub fn booted() -> bool {
    std::path::Path::new("/run/systemd/system").is_dir()
}
