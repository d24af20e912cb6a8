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
    links: Vec<String>,
    tables: Vec<String>,
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
            links: Vec::new(),
            tables: Vec::new(),
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

    /// The test's own nft table for berth's plugins (config key `nftTable`).
    pub fn nft_table(&self) -> String {
        format!("berth-{}", self.id)
    }

    /// A ULA /64 of the test: `fd00:2xx:slot::/64`.
    pub fn subnet6(&self) -> String {
        let (a, slot) = self.v6_parts();
        format!("fd00:{a}:{slot}::/64")
    }

    fn v6_parts(&self) -> (String, String) {
        let mut parts = self.prefix.split('.').skip(1);
        (
            parts.next().unwrap_or("0").to_owned(),
            parts.next().unwrap_or("0").to_owned(),
        )
    }

    /// The rules of the test's nft table, as `nft list` prints them (empty if it is gone).
    pub fn nft_rules(&self) -> String {
        let out = Command::new("nft")
            .args(["list", "table", "inet", &self.nft_table()])
            .output()
            .expect("run nft");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn nft_table_exists(&self) -> bool {
        Command::new("nft")
            .args(["list", "table", "inet", &self.nft_table()])
            .output()
            .is_ok_and(|o| o.status.success())
    }

    /// Records an interface of the host the test created, deleted when the test ends.
    pub fn own_link(&mut self, name: &str) {
        self.links.push(name.to_owned());
    }

    /// Records an nft table the test created, deleted when the test ends.
    pub fn own_nft_table(&mut self, name: &str) {
        self.tables.push(name.to_owned());
    }
}

/// Deletes an attachment when dropped (also when the test panics); errors are printed.
pub struct Detach<'a>(
    pub &'a cni::CniClient,
    pub &'a cni::NetworkConfigList,
    pub cni::Attachment,
);

impl Drop for Detach<'_> {
    fn drop(&mut self) {
        if let Err(e) = self.0.del(self.1, &self.2) {
            eprintln!("cleanup: DEL {}: {e}", self.2.container_id());
        }
    }
}

/// Whether IPv6 works on this host; prints why not otherwise.
pub fn need_ipv6(test: &str) -> bool {
    let ok = std::fs::read_to_string("/proc/sys/net/ipv6/conf/all/disable_ipv6")
        .is_ok_and(|s| s.trim() == "0");
    if !ok {
        eprintln!(
            "{test}: skipped: IPv6 is disabled on this host (net.ipv6.conf.all.disable_ipv6)"
        );
    }
    ok
}

/// Runs `ip` (or any command) inside the netns at `ns` via nsenter; panics on failure.
pub fn run_in_ns(ns: &Path, args: &[&str]) {
    let out = Command::new("nsenter")
        .arg(format!("--net={}", ns.display()))
        .args(args)
        .output()
        .expect("run nsenter");
    assert!(
        out.status.success(),
        "{args:?} in {}: {}",
        ns.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Names of the links in the netns at `ns`.
pub fn links_in(ns: &Path) -> Vec<String> {
    let out = Command::new("nsenter")
        .arg(format!("--net={}", ns.display()))
        .args(["ip", "-o", "link", "show"])
        .output()
        .expect("run nsenter");
    assert!(out.status.success(), "ip link in {}", ns.display());
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap_or(n).to_owned())
        .collect()
}

/// Runs a host command; panics on failure.
pub fn run_host(args: &[&str]) {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .expect("run command");
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Drop for TestNet {
    fn drop(&mut self) {
        // Namespaces first: their veth ends die with them.
        for p in &self.made {
            if let Err(e) = netns::remove_pinned(p) {
                eprintln!("cleanup: {e}");
            }
        }
        for l in self.links.iter().chain(std::iter::once(&self.bridge)) {
            if Path::new("/sys/class/net").join(l).exists() {
                let _ = Command::new("ip").args(["link", "del", "dev", l]).status();
            }
        }
        for t in self.tables.iter().chain(std::iter::once(&self.nft_table())) {
            let _ = Command::new("nft")
                .args(["delete", "table", "inet", t])
                .stderr(std::process::Stdio::null())
                .status();
            let _ = std::fs::remove_file(format!("/run/berth/cni/nft-{t}.lock"));
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

/// Binds a UDP socket on `addr` inside `ns` and echoes one datagram (bounded), on a thread.
pub fn udp_echo_once_in(ns: &Path, addr: SocketAddr) -> std::thread::JoinHandle<()> {
    let sock = netns::run_in(ns, move || std::net::UdpSocket::bind(addr))
        .expect("enter netns")
        .unwrap_or_else(|e| panic!("bind udp {addr}: {e}"));
    std::thread::spawn(move || {
        sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 64];
        if let Ok((n, peer)) = sock.recv_from(&mut buf) {
            let _ = sock.send_to(&buf[..n], peer);
        }
    })
}

/// Sends one datagram to `addr` from the calling thread's namespace and waits (bounded) for
/// the echo.
pub fn udp_round_trip(addr: SocketAddr) -> std::io::Result<String> {
    let bind: SocketAddr = if addr.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    }
    .parse()
    .unwrap();
    let s = std::net::UdpSocket::bind(bind)?;
    s.set_read_timeout(Some(Duration::from_secs(3)))?;
    s.send_to(b"ping\n", addr)?;
    let mut buf = [0u8; 64];
    let (n, _) = s.recv_from(&mut buf)?;
    Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
}

/// Connects from the calling thread's namespace to `addr` (bounded) and returns the echo.
pub fn connect_here(addr: SocketAddr) -> std::io::Result<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(3))?;
    s.set_read_timeout(Some(Duration::from_secs(3)))?;
    s.write_all(b"hello\n")?;
    let mut buf = [0u8; 64];
    let n = s.read(&mut buf)?;
    Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
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
