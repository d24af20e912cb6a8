//! containerd set up beside berthd for side-by-side runs (cri-server's containerd_compare test
//! and berth-bench's pods benchmark): its config with only the CRI plugin in use, and the
//! certs.d hosts.toml that lets both daemons pull from a plain-HTTP test registry.

use std::fs;
use std::io;
use std::path::Path;

/// containerd's config (version 2) for a private instance: root, state, the runc root and the
/// CNI conf dir under `dir` (`root`, `state`, `runc`, `net.d`); the CRI plugin with runc through
/// io.containerd.runc.v2 (the cgroupfs driver), overlayfs, the CNI plugins in `cni_bin` and
/// registry hosts from `certs_d`.
#[derive(Debug, Clone)]
pub struct CriConfig<'a> {
    pub dir: &'a Path,
    /// The gRPC socket (ttrpc listens on `<socket>.ttrpc`).
    pub socket: &'a Path,
    pub sandbox_image: &'a str,
    pub runc: &'a Path,
    pub cni_bin: &'a Path,
    pub certs_d: &'a Path,
    /// How often (seconds) the CRI plugin collects container stats (containerd's default: 10).
    pub stats_collect_period: u32,
}

impl CriConfig<'_> {
    /// The config.toml text. `[debug] level` and `max_container_log_line_size` are containerd's
    /// defaults, written out so that what the comparison relies on is in the file.
    pub fn toml(&self) -> String {
        format!(
            r#"version = 2
root = "{root}"
state = "{state}"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]

[grpc]
  address = "{sock}"

[ttrpc]
  address = "{sock}.ttrpc"

[debug]
  level = "info"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{sandbox_image}"
  stats_collect_period = {stats_collect_period}
  # CAP_SYS_RESOURCE is missing on these machines: oom_score_adj cannot go below ours.
  restrict_oom_score_adj = true
  disable_apparmor = true
  max_container_log_line_size = 16384
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        BinaryName = "{runc}"
        Root = "{runc_root}"
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{cni_bin}"
    conf_dir = "{net_d}"
    max_conf_num = 1
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "{certs}"
"#,
            root = self.dir.join("root").display(),
            state = self.dir.join("state").display(),
            sock = self.socket.display(),
            sandbox_image = self.sandbox_image,
            stats_collect_period = self.stats_collect_period,
            runc = self.runc.display(),
            runc_root = self.dir.join("runc").display(),
            cni_bin = self.cni_bin.display(),
            net_d = self.dir.join("net.d").display(),
            certs = self.certs_d.display(),
        )
    }
}

/// Writes `<certs_d>/<host>/hosts.toml` (containerd's hosts layout, which berthd reads too)
/// marking the registry `host` (`host:port`) as plain HTTP.
pub fn write_plain_http_hosts(certs_d: &Path, host: &str) -> io::Result<()> {
    let h = certs_d.join(host);
    fs::create_dir_all(&h)?;
    fs::write(
        h.join("hosts.toml"),
        format!(
            "server = \"http://{host}\"\n\n[host.\"http://{host}\"]\n  capabilities = [\"pull\", \"resolve\"]\n"
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_names_the_dirs_and_the_stats_period() {
        let text = CriConfig {
            dir: Path::new("/d"),
            socket: Path::new("/d/c.sock"),
            sandbox_image: "127.0.0.1:5000/pause:1",
            runc: Path::new("/usr/sbin/runc"),
            cni_bin: Path::new("/usr/lib/cni"),
            certs_d: Path::new("/d/certs.d"),
            stats_collect_period: 1,
        }
        .toml();
        for want in [
            "root = \"/d/root\"",
            "state = \"/d/state\"",
            "address = \"/d/c.sock\"",
            "address = \"/d/c.sock.ttrpc\"",
            "sandbox_image = \"127.0.0.1:5000/pause:1\"",
            "stats_collect_period = 1\n",
            "BinaryName = \"/usr/sbin/runc\"",
            "Root = \"/d/runc\"",
            "bin_dir = \"/usr/lib/cni\"",
            "conf_dir = \"/d/net.d\"",
            "config_path = \"/d/certs.d\"",
        ] {
            assert!(text.contains(want), "{want} in {text}");
        }
    }

    #[test]
    fn hosts_toml_marks_the_registry_plain_http() {
        let dir = tempfile::tempdir().unwrap();
        write_plain_http_hosts(dir.path(), "127.0.0.1:5000").unwrap();
        let text = fs::read_to_string(dir.path().join("127.0.0.1:5000/hosts.toml")).unwrap();
        assert!(
            text.starts_with("server = \"http://127.0.0.1:5000\"\n"),
            "{text}"
        );
        assert!(text.contains("[host.\"http://127.0.0.1:5000\"]"), "{text}");
    }
}
