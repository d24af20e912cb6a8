//! The bpf(2) calls for cgroup device filters: load, query, attach, detach. This is the crate's
//! only module with `unsafe` code; each call passes a `#[repr(C)]` prefix of `union bpf_attr`
//! (the kernel zero-fills the rest) and its size.

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;

use super::devices_bpf::Insn;
use crate::CgroupError;

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_ATTACH: libc::c_long = 8;
const BPF_PROG_DETACH: libc::c_long = 9;
const BPF_PROG_GET_FD_BY_ID: libc::c_long = 13;
const BPF_PROG_QUERY: libc::c_long = 16;
const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
const BPF_CGROUP_DEVICE: u32 = 6;
const BPF_F_ALLOW_MULTI: u32 = 2;
const LOG_SIZE: usize = 64 * 1024;
const MAX_QUERY: usize = 64;

#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

#[repr(C)]
#[derive(Default)]
struct AttachAttr {
    target_fd: u32,
    attach_bpf_fd: u32,
    attach_type: u32,
    attach_flags: u32,
    replace_bpf_fd: u32,
}

#[repr(C)]
#[derive(Default)]
struct QueryAttr {
    target_fd: u32,
    attach_type: u32,
    query_flags: u32,
    attach_flags: u32,
    prog_ids: u64,
    prog_cnt: u32,
    _pad: u32,
}

#[repr(C)]
#[derive(Default)]
struct GetIdAttr {
    prog_id: u32,
    next_id: u32,
    open_flags: u32,
}

/// Calls bpf(cmd, attr, sizeof attr).
fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> io::Result<libc::c_long> {
    // SAFETY: `attr` is a live, exclusively borrowed #[repr(C)] struct laid out as the prefix of
    // `union bpf_attr` for `cmd`, and the size passed is its size; every pointer inside it was set
    // by the caller to buffers that outlive this call.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut T as *mut libc::c_void,
            std::mem::size_of::<T>() as libc::c_uint,
        )
    };
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// Takes ownership of a descriptor the kernel just returned.
fn owned(fd: libc::c_long) -> OwnedFd {
    // SAFETY: `fd` is a new descriptor returned by a successful bpf(2) call; nothing else owns it.
    unsafe { OwnedFd::from_raw_fd(fd as RawFd) }
}

/// Loads the program; on failure returns the error and the verifier log.
fn load(insns: &[Insn]) -> Result<OwnedFd, (io::Error, String)> {
    let license = CString::new("Apache").expect("no NUL in literal");
    let mut log = vec![0u8; LOG_SIZE];
    let mut name = [0u8; 16];
    name[..13].copy_from_slice(b"berth_devices");
    let mut attr = ProgLoadAttr {
        prog_type: BPF_PROG_TYPE_CGROUP_DEVICE,
        insn_cnt: insns.len() as u32,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        prog_name: name,
        expected_attach_type: BPF_CGROUP_DEVICE,
        ..Default::default()
    };
    match bpf(BPF_PROG_LOAD, &mut attr) {
        Ok(fd) => Ok(owned(fd)),
        Err(first) => {
            // Retry with the verifier log on, to say why.
            attr.log_level = 1;
            attr.log_size = LOG_SIZE as u32;
            attr.log_buf = log.as_mut_ptr() as u64;
            match bpf(BPF_PROG_LOAD, &mut attr) {
                Ok(fd) => Ok(owned(fd)),
                Err(_) => {
                    let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
                    Err((
                        first,
                        String::from_utf8_lossy(&log[..end]).trim().to_owned(),
                    ))
                }
            }
        }
    }
}

/// Ids of the device programs attached to the cgroup.
fn query(cgroup: RawFd) -> io::Result<Vec<u32>> {
    let mut ids = [0u32; MAX_QUERY];
    let mut attr = QueryAttr {
        target_fd: cgroup as u32,
        attach_type: BPF_CGROUP_DEVICE,
        prog_ids: ids.as_mut_ptr() as u64,
        prog_cnt: MAX_QUERY as u32,
        ..Default::default()
    };
    bpf(BPF_PROG_QUERY, &mut attr)?;
    Ok(ids[..(attr.prog_cnt as usize).min(MAX_QUERY)].to_vec())
}

fn attach(cgroup: RawFd, prog: RawFd) -> io::Result<()> {
    let mut attr = AttachAttr {
        target_fd: cgroup as u32,
        attach_bpf_fd: prog as u32,
        attach_type: BPF_CGROUP_DEVICE,
        attach_flags: BPF_F_ALLOW_MULTI,
        ..Default::default()
    };
    bpf(BPF_PROG_ATTACH, &mut attr).map(drop)
}

fn detach(cgroup: RawFd, prog: RawFd) -> io::Result<()> {
    let mut attr = AttachAttr {
        target_fd: cgroup as u32,
        attach_bpf_fd: prog as u32,
        attach_type: BPF_CGROUP_DEVICE,
        ..Default::default()
    };
    bpf(BPF_PROG_DETACH, &mut attr).map(drop)
}

fn prog_fd_by_id(id: u32) -> io::Result<OwnedFd> {
    let mut attr = GetIdAttr {
        prog_id: id,
        ..Default::default()
    };
    bpf(BPF_PROG_GET_FD_BY_ID, &mut attr).map(owned)
}

/// Attaches `insns` as the device filter of cgroup2 directory `dir` and detaches the filters
/// that were attached before.
pub(super) fn replace_device_filter(dir: &Path, insns: &[Insn]) -> Result<(), CgroupError> {
    let err = |op: &'static str, source: io::Error, log: String| CgroupError::Bpf {
        op,
        path: dir.to_owned(),
        source,
        log: if log.is_empty() {
            log
        } else {
            format!(": verifier log: {log}")
        },
    };
    let cgroup = File::open(dir).map_err(|source| CgroupError::Read {
        path: dir.to_owned(),
        source,
    })?;
    let cgfd = cgroup.as_raw_fd();
    let old = query(cgfd).map_err(|e| err("prog query", e, String::new()))?;
    let prog = load(insns).map_err(|(e, log)| err("prog load", e, log))?;
    attach(cgfd, prog.as_raw_fd()).map_err(|e| err("prog attach", e, String::new()))?;
    for id in old {
        let result = prog_fd_by_id(id).and_then(|fd| detach(cgfd, fd.as_raw_fd()));
        match result {
            Ok(()) => {}
            // Detached or freed by someone else meanwhile.
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
            Err(e) => return Err(err("prog detach", e, String::new())),
        }
    }
    Ok(())
}

/// Number of device programs attached to the cgroup2 directory `dir` (diagnostics, tests).
pub fn attached_device_programs(dir: &Path) -> Result<usize, CgroupError> {
    let cgroup = File::open(dir).map_err(|source| CgroupError::Read {
        path: dir.to_owned(),
        source,
    })?;
    query(cgroup.as_raw_fd())
        .map(|ids| ids.len())
        .map_err(|source| CgroupError::Bpf {
            op: "prog query",
            path: dir.to_owned(),
            source,
            log: String::new(),
        })
}
