//! Mount descriptions (what a snapshot needs mounted) and the calls that mount them.

use std::io;
use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use serde::{Deserialize, Serialize};

/// Errors of mounting a snapshot.
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    /// The option string does not fit one page (too many layers).
    #[error(
        "mount {target}: overlay options are {len} bytes, more than the {max} the kernel takes"
    )]
    OptionsTooLong {
        /// The mount point.
        target: PathBuf,
        /// Option string length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The mount or unmount syscall failed.
    #[error("{op} {target}: {source}")]
    Sys {
        /// `mount` or `unmount`.
        op: &'static str,
        /// The mount point.
        target: PathBuf,
        /// The OS error.
        source: io::Error,
    },
}

/// A mount to perform, containerd style: `type`, `source`, `options`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mount {
    /// `overlay` or `bind`.
    pub fstype: String,
    /// The source path (`overlay` for overlay mounts).
    pub source: String,
    /// Options: `ro`/`rw`, `rbind`, or overlay's `lowerdir=`, `upperdir=`, `workdir=`, `index=off`.
    pub options: Vec<String>,
}

/// Longest option string the kernel copies for a mount (one page).
pub const MAX_OPTIONS_LEN: usize = 4095;

impl Mount {
    /// The options as one `mount -o` string.
    pub fn options_string(&self) -> String {
        self.options.join(",")
    }

    /// Mounts at `target` (an existing directory). Needs CAP_SYS_ADMIN.
    pub fn mount(&self, target: &Path) -> Result<(), MountError> {
        let sys = |source: nix::errno::Errno| MountError::Sys {
            op: "mount",
            target: target.to_owned(),
            source: source.into(),
        };
        let ro = self.options.iter().any(|o| o == "ro");
        if self.fstype == "bind" {
            let mut flags = MsFlags::MS_BIND;
            if self.options.iter().any(|o| o == "rbind") {
                flags |= MsFlags::MS_REC;
            }
            mount(
                Some(self.source.as_str()),
                target,
                None::<&str>,
                flags,
                None::<&str>,
            )
            .map_err(sys)?;
            if ro {
                let remount = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
                if let Err(e) = mount(None::<&str>, target, None::<&str>, remount, None::<&str>) {
                    let _ = umount2(target, MntFlags::MNT_DETACH);
                    return Err(sys(e));
                }
            }
            return Ok(());
        }
        let data: Vec<&str> = self
            .options
            .iter()
            .map(String::as_str)
            .filter(|o| *o != "ro" && *o != "rw")
            .collect();
        let data = data.join(",");
        if data.len() > MAX_OPTIONS_LEN {
            return Err(MountError::OptionsTooLong {
                target: target.to_owned(),
                len: data.len(),
                max: MAX_OPTIONS_LEN,
            });
        }
        let flags = if ro {
            MsFlags::MS_RDONLY
        } else {
            MsFlags::empty()
        };
        mount(
            Some(self.source.as_str()),
            target,
            Some(self.fstype.as_str()),
            flags,
            Some(data.as_str()),
        )
        .map_err(sys)
    }
}

/// Unmounts `target` (lazily if it is busy).
pub fn unmount(target: &Path) -> Result<(), MountError> {
    match umount2(target, MntFlags::empty()) {
        Ok(()) => Ok(()),
        Err(nix::errno::Errno::EBUSY) => {
            umount2(target, MntFlags::MNT_DETACH).map_err(|e| MountError::Sys {
                op: "unmount",
                target: target.to_owned(),
                source: e.into(),
            })
        }
        Err(e) => Err(MountError::Sys {
            op: "unmount",
            target: target.to_owned(),
            source: e.into(),
        }),
    }
}
