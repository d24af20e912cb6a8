//! Mount options of the runtime spec (`mounts[].options`), split the way runc splits them into
//! mount(2) flags, propagation changes, recursive mount attributes (mount_setattr) and the
//! filesystem-specific data string.

use nix::mount::MsFlags;

/// `MOUNT_ATTR_*` bits of mount_setattr(2).
pub mod attr {
    pub const RDONLY: u64 = 0x0000_0001;
    pub const NOSUID: u64 = 0x0000_0002;
    pub const NODEV: u64 = 0x0000_0004;
    pub const NOEXEC: u64 = 0x0000_0008;
    pub const RELATIME: u64 = 0x0000_0000;
    pub const NOATIME: u64 = 0x0000_0010;
    pub const STRICTATIME: u64 = 0x0000_0020;
    pub const ATIME_MASK: u64 = 0x0000_0070;
    pub const NODIRATIME: u64 = 0x0000_0080;
    pub const IDMAP: u64 = 0x0010_0000;
    pub const NOSYMFOLLOW: u64 = 0x0020_0000;
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountOptions {
    /// Flags to set with mount(2).
    pub flags: MsFlags,
    /// Propagation changes applied after the mount, in order.
    pub propagation: Vec<MsFlags>,
    /// Recursive attributes (`rro`, `rnosuid`, …) to set with mount_setattr(AT_RECURSIVE).
    pub rec_set: u64,
    /// Recursive attributes to clear.
    pub rec_clear: u64,
    /// `idmap` / `ridmap`: make the mount idmapped (with the mount's uid/gid mappings).
    pub idmap: Option<Recursive>,
    /// runc's `tmpcopyup` extension: copy the directory's old content into the new tmpfs.
    pub tmpcopyup: bool,
    /// Everything else: the filesystem's data string.
    pub data: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recursive {
    No,
    Yes,
}

impl MountOptions {
    pub fn is_bind(&self) -> bool {
        self.flags.contains(MsFlags::MS_BIND)
    }

    /// Flags that a bind mount only gets through a second, remounting call.
    pub fn remount_flags(&self) -> MsFlags {
        self.flags & !(MsFlags::MS_BIND | MsFlags::MS_REC | MsFlags::MS_REMOUNT)
    }
}

pub fn parse(options: &[String]) -> MountOptions {
    let mut o = MountOptions {
        flags: MsFlags::empty(),
        propagation: Vec::new(),
        rec_set: 0,
        rec_clear: 0,
        idmap: None,
        tmpcopyup: false,
        data: String::new(),
    };
    for opt in options {
        let set = |o: &mut MountOptions, f: MsFlags| o.flags |= f;
        let clear = |o: &mut MountOptions, f: MsFlags| o.flags &= !f;
        match opt.as_str() {
            "defaults" => {}
            "ro" => set(&mut o, MsFlags::MS_RDONLY),
            "rw" => clear(&mut o, MsFlags::MS_RDONLY),
            "bind" => set(&mut o, MsFlags::MS_BIND),
            "rbind" => set(&mut o, MsFlags::MS_BIND | MsFlags::MS_REC),
            "nosuid" => set(&mut o, MsFlags::MS_NOSUID),
            "suid" => clear(&mut o, MsFlags::MS_NOSUID),
            "nodev" => set(&mut o, MsFlags::MS_NODEV),
            "dev" => clear(&mut o, MsFlags::MS_NODEV),
            "noexec" => set(&mut o, MsFlags::MS_NOEXEC),
            "exec" => clear(&mut o, MsFlags::MS_NOEXEC),
            "sync" => set(&mut o, MsFlags::MS_SYNCHRONOUS),
            "async" => clear(&mut o, MsFlags::MS_SYNCHRONOUS),
            "dirsync" => set(&mut o, MsFlags::MS_DIRSYNC),
            "remount" => set(&mut o, MsFlags::MS_REMOUNT),
            "mand" => set(&mut o, MsFlags::MS_MANDLOCK),
            "nomand" => clear(&mut o, MsFlags::MS_MANDLOCK),
            "atime" => clear(&mut o, MsFlags::MS_NOATIME),
            "noatime" => set(&mut o, MsFlags::MS_NOATIME),
            "diratime" => clear(&mut o, MsFlags::MS_NODIRATIME),
            "nodiratime" => set(&mut o, MsFlags::MS_NODIRATIME),
            "relatime" => set(&mut o, MsFlags::MS_RELATIME),
            "norelatime" => clear(&mut o, MsFlags::MS_RELATIME),
            "strictatime" => set(&mut o, MsFlags::MS_STRICTATIME),
            "nostrictatime" => clear(&mut o, MsFlags::MS_STRICTATIME),
            "iversion" => set(&mut o, MsFlags::MS_I_VERSION),
            "noiversion" => clear(&mut o, MsFlags::MS_I_VERSION),
            "lazytime" => set(&mut o, MsFlags::MS_LAZYTIME),
            "nolazytime" => clear(&mut o, MsFlags::MS_LAZYTIME),
            "silent" => set(&mut o, MsFlags::MS_SILENT),
            "loud" => clear(&mut o, MsFlags::MS_SILENT),
            "private" => o.propagation.push(MsFlags::MS_PRIVATE),
            "rprivate" => o.propagation.push(MsFlags::MS_PRIVATE | MsFlags::MS_REC),
            "shared" => o.propagation.push(MsFlags::MS_SHARED),
            "rshared" => o.propagation.push(MsFlags::MS_SHARED | MsFlags::MS_REC),
            "slave" => o.propagation.push(MsFlags::MS_SLAVE),
            "rslave" => o.propagation.push(MsFlags::MS_SLAVE | MsFlags::MS_REC),
            "unbindable" => o.propagation.push(MsFlags::MS_UNBINDABLE),
            "runbindable" => o.propagation.push(MsFlags::MS_UNBINDABLE | MsFlags::MS_REC),
            "rro" => o.rec_set |= attr::RDONLY,
            "rrw" => o.rec_clear |= attr::RDONLY,
            "rnosuid" => o.rec_set |= attr::NOSUID,
            "rsuid" => o.rec_clear |= attr::NOSUID,
            "rnodev" => o.rec_set |= attr::NODEV,
            "rdev" => o.rec_clear |= attr::NODEV,
            "rnoexec" => o.rec_set |= attr::NOEXEC,
            "rexec" => o.rec_clear |= attr::NOEXEC,
            "rnodiratime" => o.rec_set |= attr::NODIRATIME,
            "rdiratime" => o.rec_clear |= attr::NODIRATIME,
            "rrelatime" => {
                o.rec_clear |= attr::ATIME_MASK;
                o.rec_set |= attr::RELATIME;
            }
            "rnoatime" => {
                o.rec_clear |= attr::ATIME_MASK;
                o.rec_set |= attr::NOATIME;
            }
            "rstrictatime" => {
                o.rec_clear |= attr::ATIME_MASK;
                o.rec_set |= attr::STRICTATIME;
            }
            "rnosymfollow" => o.rec_set |= attr::NOSYMFOLLOW,
            "rsymfollow" => o.rec_clear |= attr::NOSYMFOLLOW,
            "idmap" => o.idmap = Some(Recursive::No),
            "ridmap" => o.idmap = Some(Recursive::Yes),
            "tmpcopyup" => o.tmpcopyup = true,
            other => {
                if !o.data.is_empty() {
                    o.data.push(',');
                }
                o.data.push_str(other);
            }
        }
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(opts: &[&str]) -> MountOptions {
        parse(&opts.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn splits_flags_propagation_and_data() {
        let o = p(&["nosuid", "strictatime", "mode=755", "size=65536k", "rslave"]);
        assert_eq!(o.flags, MsFlags::MS_NOSUID | MsFlags::MS_STRICTATIME);
        assert_eq!(o.data, "mode=755,size=65536k");
        assert_eq!(o.propagation, vec![MsFlags::MS_SLAVE | MsFlags::MS_REC]);
    }

    #[test]
    fn later_options_override_earlier() {
        let o = p(&["ro", "rw", "rbind", "noexec"]);
        assert!(!o.flags.contains(MsFlags::MS_RDONLY));
        assert!(o.is_bind() && o.flags.contains(MsFlags::MS_REC));
        assert_eq!(o.remount_flags(), MsFlags::MS_NOEXEC);
    }

    #[test]
    fn recursive_attrs_and_extensions() {
        let o = p(&["rbind", "rro", "rnosuid", "ridmap", "tmpcopyup"]);
        assert_eq!(o.rec_set, attr::RDONLY | attr::NOSUID);
        assert_eq!(o.idmap, Some(Recursive::Yes));
        assert!(o.tmpcopyup);
        assert!(o.data.is_empty());
    }
}
