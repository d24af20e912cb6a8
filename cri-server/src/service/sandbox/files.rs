//! The files berthd makes for a pod under `<state>/sandboxes/<id>/`: `hostname`, `hosts`,
//! `resolv.conf`, and `shm`, a tmpfs for the pod's /dev/shm (unless it shares the host's IPC).

use std::fs;
use std::net::IpAddr;
use std::path::Path;

use cri_api::v1 as cri;
use nix::mount::{mount, umount2, MntFlags, MsFlags};

use super::error::{io, Result, SandboxError};
use crate::store::sandbox::PodFiles;

/// Size of the pod's /dev/shm (Docker's and containerd's default).
const SHM_SIZE: &str = "size=65536k";
const HOST_RESOLV_CONF: &str = "/etc/resolv.conf";
const HOST_HOSTS: &str = "/etc/hosts";

/// What the files are made from.
pub struct FileInputs<'a> {
    pub config: &'a cri::PodSandboxConfig,
    pub host_network: bool,
    pub host_ipc: bool,
    pub ips: &'a [IpAddr],
}

/// The hostname of the pod: the kubelet's, or the node's when the config leaves it empty (the
/// CRI allows that for every pod, and containerd gives such a pod the node's hostname).
pub fn hostname(config: &cri::PodSandboxConfig) -> Result<String> {
    if !config.hostname.is_empty() {
        return Ok(config.hostname.clone());
    }
    nix::unistd::gethostname()
        .map(|h| h.to_string_lossy().into_owned())
        .map_err(|source| SandboxError::Sys {
            op: "gethostname",
            path: "/proc/sys/kernel/hostname".into(),
            source,
        })
}

/// Writes hostname, hosts and resolv.conf into `dir` (which must exist), and mounts the shm
/// tmpfs unless `host_ipc`. On error, what was made stays for [`remove`] to clean up.
pub fn make(dir: &Path, input: &FileInputs<'_>, files: &mut PodFiles) -> Result<()> {
    let name = hostname(input.config)?;
    let path = dir.join("hostname");
    fs::write(&path, format!("{name}\n")).map_err(io("write", &path))?;
    files.hostname = Some(path);

    let path = dir.join("hosts");
    let hosts = if input.host_network {
        fs::read_to_string(HOST_HOSTS).unwrap_or_else(|_| hosts_file(&name, &[]))
    } else {
        hosts_file(&name, input.ips)
    };
    fs::write(&path, hosts).map_err(io("write", &path))?;
    files.hosts = Some(path);

    let path = dir.join("resolv.conf");
    let resolv = match &input.config.dns_config {
        Some(dns)
            if !(dns.servers.is_empty() && dns.searches.is_empty() && dns.options.is_empty()) =>
        {
            resolv_conf(dns)
        }
        _ => fs::read_to_string(HOST_RESOLV_CONF).map_err(io("read", HOST_RESOLV_CONF))?,
    };
    fs::write(&path, resolv).map_err(io("write", &path))?;
    files.resolv_conf = Some(path);

    if !input.host_ipc {
        let path = dir.join("shm");
        fs::create_dir_all(&path).map_err(io("create", &path))?;
        files.shm = Some(path.clone());
        mount(
            Some("shm"),
            &path,
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
            Some(format!("mode=1777,{SHM_SIZE}").as_str()),
        )
        .map_err(|source| SandboxError::Sys {
            op: "mount tmpfs on",
            path,
            source,
        })?;
    }
    Ok(())
}

/// Rewrites the pod's `hosts` file with `input.ips`, in place: the pause (created while CNI ADD
/// ran) binds the file already, and a bind mount keeps the inode. No-op with host network.
pub fn write_hosts(dir: &Path, input: &FileInputs<'_>) -> Result<()> {
    if input.host_network {
        return Ok(());
    }
    let name = hostname(input.config)?;
    let path = dir.join("hosts");
    fs::write(&path, hosts_file(&name, input.ips)).map_err(io("write", &path))
}

/// Unmounts the shm tmpfs (if mounted). Idempotent.
pub fn unmount_shm(files: &PodFiles) -> Result<()> {
    let Some(path) = &files.shm else {
        return Ok(());
    };
    // Unmount every layer (a retried start may have stacked two); EINVAL: not a mount point.
    for _ in 0..8 {
        match umount2(path, MntFlags::MNT_DETACH) {
            Ok(()) => continue,
            Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => return Ok(()),
            Err(source) => {
                return Err(SandboxError::Sys {
                    op: "unmount",
                    path: path.clone(),
                    source,
                })
            }
        }
    }
    Ok(())
}

/// Removes the pod's state dir (after [`unmount_shm`]). Idempotent.
pub fn remove_dir(dir: &Path) -> Result<()> {
    match fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io("remove", dir)(e)),
    }
}

fn hosts_file(hostname: &str, ips: &[IpAddr]) -> String {
    let mut s = String::from(
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n\
         fe00::0\tip6-localnet\nfe00::0\tip6-mcastprefix\nfe00::1\tip6-allnodes\nfe00::2\tip6-allrouters\n",
    );
    for ip in ips {
        s.push_str(&format!("{ip}\t{hostname}\n"));
    }
    s
}

/// resolv.conf from the kubelet's DNS config.
pub fn resolv_conf(dns: &cri::DnsConfig) -> String {
    let mut s = String::new();
    if !dns.searches.is_empty() {
        s.push_str(&format!("search {}\n", dns.searches.join(" ")));
    }
    for server in &dns.servers {
        s.push_str(&format!("nameserver {server}\n"));
    }
    if !dns.options.is_empty() {
        s.push_str(&format!("options {}\n", dns.options.join(" ")));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf_and_hosts() {
        let dns = cri::DnsConfig {
            servers: vec!["10.96.0.10".into(), "10.96.0.11".into()],
            searches: vec![
                "default.svc.cluster.local".into(),
                "svc.cluster.local".into(),
            ],
            options: vec!["ndots:5".into()],
        };
        assert_eq!(
            resolv_conf(&dns),
            "search default.svc.cluster.local svc.cluster.local\n\
             nameserver 10.96.0.10\nnameserver 10.96.0.11\noptions ndots:5\n"
        );
        let hosts = hosts_file("web-0", &["10.88.0.5".parse().unwrap()]);
        assert!(hosts.starts_with("127.0.0.1\tlocalhost\n"));
        assert!(hosts.ends_with("10.88.0.5\tweb-0\n"));
    }

    #[test]
    fn hostname_rules() {
        let mut c = cri::PodSandboxConfig::default();
        // No hostname (critest's pods, a minimal pod.json): the node's, with or without host
        // network, as containerd does.
        let node = nix::unistd::gethostname().unwrap().into_string().unwrap();
        assert_eq!(hostname(&c).unwrap(), node);
        c.hostname = "pod-a".into();
        assert_eq!(hostname(&c).unwrap(), "pod-a");
    }
}
