//! Shared pieces of the root tests: the root gate, unique names and subnets, guards that remove
//! what a test created (pinned netns, bridge, state dirs) even when it fails, and TCP probes
//! run from inside a test's namespaces.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use cni::{netns, NetnsDir, PinnedNetns};

/// Where Debian's containernetworking-plugins live.
pub const REFERENCE_PLUGINS: &str = "/usr/lib/cni";

/// True if the test may go on; prints why not otherwise. With BERTH_REQUIRE_ROOT_TESTS set a
/// missing root fails the test instead.
pub fn need_root(test: &str) -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    if std::env::var_os("BERTH_REQUIRE_ROOT_TESTS").is_some() {
        panic!("{test}: needs root and BERTH_REQUIRE_ROOT_TESTS is set");
    }
    eprintln!("{test}: skipped: needs root");
    false
}

/// True if Debian's reference plugins are installed; prints why not otherwise.
pub fn need_reference_plugins(test: &str) -> bool {
    let ok = ["bridge", "host-local", "loopback", "portmap"]
        .iter()
        .all(|p| Path::new(REFERENCE_PLUGINS).join(p).exists());
    if !ok {
        eprintln!("{test}: skipped: needs containernetworking-plugins in {REFERENCE_PLUGINS} (scripts/install-deps)");
    }
    ok
}

/// Everything one test owns: a state dir (netns pins, IPAM data, CNI cache), a bridge name, a
/// /24 subnet, and the namespaces it made. Dropping it removes them all.
pub struct TestNet {
    pub id: String,
    pub bridge: String,
    /// `10.A.B` of the test's `10.A.B.0/24`.
    pub prefix: String,
    pub dir: tempfile::TempDir,
    pub netns: NetnsDir,
    made: Vec<PathBuf>,
}

impl TestNet {
    /// `slot` (1-99) must be unique among the tests of the whole crate; the process ID keeps
    /// concurrent runs on one machine apart.
    pub fn new(slot: u32) -> Self {
        assert!((1..100).contains(&slot));
        let pid = std::process::id();
        let id = format!("bt{}{slot:02}", pid % 100_000);
        let dir = tempfile::Builder::new()
            .prefix(&format!("berth-cni-{id}-"))
            .tempdir()
            .expect("test state dir");
        let netns = NetnsDir::new(dir.path().join("netns"));
        TestNet {
            bridge: id.clone(),
            prefix: format!("10.{}.{slot}", 200 + pid % 50),
            id,
            dir,
            netns,
            made: Vec::new(),
        }
    }

    pub fn subnet(&self) -> String {
        format!("{}.0/24", self.prefix)
    }

    pub fn ipam_dir(&self) -> PathBuf {
        self.dir.path().join("ipam")
    }

    pub fn cache_dir(&self) -> PathBuf {
        self.dir.path().join("cache")
    }

    /// Creates and pins a namespace owned by this test.
    pub fn make_netns(&mut self, name: &str) -> PinnedNetns {
        let ns = self.netns.create(name).expect("create netns");
        self.made.push(ns.path().to_owned());
        ns
    }

    /// The addresses host-local (either implementation) still holds in its data dir.
    pub fn allocations(&self) -> Vec<IpAddr> {
        let mut out = Vec::new();
        let Ok(nets) = std::fs::read_dir(self.ipam_dir()) else {
            return out;
        };
        for net in nets.flatten() {
            for f in std::fs::read_dir(net.path())
                .into_iter()
                .flatten()
                .flatten()
            {
                if let Ok(ip) = f.file_name().to_string_lossy().parse::<IpAddr>() {
                    out.push(ip);
                }
            }
        }
        out.sort();
        out
    }

    /// Interfaces enslaved to the test bridge.
    pub fn bridge_ports(&self) -> Vec<String> {
        let out = Command::new("ip")
            .args(["-o", "link", "show", "master", &self.bridge])
            .output()
            .expect("run ip");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split(": ").nth(1))
            .map(|s| s.split('@').next().unwrap_or(s).to_owned())
            .collect()
    }

    /// Bridge ports after waiting (bounded) for them to go: a namespace's interfaces are
    /// destroyed asynchronously after its last reference goes.
    pub fn bridge_ports_settled(&self) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let ports = self.bridge_ports();
            if ports.is_empty() || Instant::now() >= deadline {
                return ports;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn bridge_exists(&self) -> bool {
        Path::new("/sys/class/net").join(&self.bridge).exists()
    }
}

impl Drop for TestNet {
    fn drop(&mut self) {
        // Namespaces first: their veth ends die with them.
        for p in &self.made {
            if let Err(e) = netns::remove_pinned(p) {
                eprintln!("cleanup: {e}");
            }
        }
        if self.bridge_exists() {
            let _ = Command::new("ip")
                .args(["link", "del", "dev", &self.bridge])
                .status();
        }
        // The state dir goes with the TempDir.
    }
}

/// Opens a listener on `addr` inside `ns`.
pub fn listen_in(ns: &Path, addr: SocketAddr) -> TcpListener {
    netns::run_in(ns, move || TcpListener::bind(addr))
        .expect("enter netns")
        .unwrap_or_else(|e| panic!("listen on {addr}: {e}"))
}

/// Connects from inside `ns` to `addr` (bounded), sends a line and expects it echoed by
/// `serve_echo_once` on the other side.
pub fn connect_from(ns: &Path, addr: SocketAddr) -> std::io::Result<String> {
    netns::run_in(ns, move || -> std::io::Result<String> {
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(3))?;
        s.set_read_timeout(Some(Duration::from_secs(3)))?;
        s.write_all(b"hello\n")?;
        let mut buf = [0u8; 64];
        let n = s.read(&mut buf)?;
        Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
    })
    .expect("enter netns")
}

/// Accepts one connection (bounded by `limit`) and echoes what it reads, on a thread.
pub fn serve_echo_once(l: TcpListener, limit: Duration) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        l.set_nonblocking(true).unwrap();
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            match l.accept() {
                Ok((mut s, _)) => {
                    s.set_nonblocking(false).unwrap();
                    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
                    let mut buf = [0u8; 64];
                    if let Ok(n) = s.read(&mut buf) {
                        let _ = s.write_all(&buf[..n]);
                    }
                    return;
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(10))
                }
                Err(e) => panic!("accept: {e}"),
            }
        }
    })
}

/// Whether a TCP round trip from `from` to a listener on `addr` in `to` works.
pub fn tcp_round_trip(from: &Path, to: &Path, addr: SocketAddr) -> std::io::Result<String> {
    let server = serve_echo_once(listen_in(to, addr), Duration::from_secs(5));
    let res = connect_from(from, addr);
    server.join().expect("echo server");
    res
}
