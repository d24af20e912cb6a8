//! host-local IPAM: hands out addresses from configured ranges, one file per allocated address
//! under `<dataDir>/<network>/` (content `<container-id>\r\n<ifname>`, as the reference plugin
//! writes it), with an exclusive `flock` on `<dataDir>/<network>/lock` around every change so
//! concurrent ADDs never hand out the same address.

use std::collections::BTreeSet;
use std::fs;
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use nix::fcntl::{Flock, FlockArg};
use serde::Deserialize;
use serde_json::Value;

use super::ip_range::{candidates, Range, RangeConf};
use super::skel::{Plugin, PluginArgs};
use crate::attachment::AttachmentKey;
use crate::error::CniError;
use crate::result::{CniResult, Dns, IpConfig, Route};

/// The plugin type (binary name) of berth's host-local.
pub const PLUGIN_TYPE: &str = "berth-cni-host-local";

/// Where allocations live when the config names no `dataDir`.
pub const DEFAULT_DATA_DIR: &str = "/var/lib/berth/cni/networks";

/// Most candidate addresses one ADD looks at in one range set.
const MAX_CANDIDATES: usize = 1 << 20;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct NetConf {
    name: String,
    ipam: IpamConf,
    /// The `ips` capability: addresses the runtime asks for (`10.1.2.3/24` or `10.1.2.3`).
    #[serde(default)]
    runtime_config: RuntimeIps,
    #[serde(default, rename = "cni.dev/valid-attachments")]
    valid_attachments: Vec<AttachmentKey>,
}

/// The `ipam` section.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct IpamConf {
    #[serde(default)]
    ranges: Vec<Vec<RangeConf>>,
    /// Old single-range form.
    #[serde(default)]
    subnet: Option<IpNet>,
    #[serde(default)]
    gateway: Option<IpAddr>,
    #[serde(default)]
    routes: Vec<RouteConf>,
    #[serde(default)]
    data_dir: Option<PathBuf>,
    #[serde(default)]
    dns: Dns,
}

#[derive(Debug, Default, Deserialize)]
struct RuntimeIps {
    #[serde(default)]
    ips: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct RouteConf {
    dst: IpNet,
    #[serde(default)]
    gw: Option<IpAddr>,
}

/// The host-local IPAM plugin.
#[derive(Debug, Default)]
pub struct HostLocal;

struct Parsed {
    sets: Vec<Vec<Range>>,
    requested: Vec<IpAddr>,
    store: Store,
    routes: Vec<Route>,
    dns: Dns,
    valid: Vec<AttachmentKey>,
}

fn parse(args: &PluginArgs) -> Result<Parsed, CniError> {
    let conf: NetConf = args.parse()?;
    let mut raw_sets = conf.ipam.ranges;
    if let Some(subnet) = conf.ipam.subnet {
        raw_sets.push(vec![RangeConf {
            subnet,
            range_start: None,
            range_end: None,
            gateway: conf.ipam.gateway,
        }]);
    }
    if raw_sets.is_empty() || raw_sets.iter().any(Vec::is_empty) {
        return Err(CniError::new(
            CniError::INVALID_NETWORK_CONFIG,
            "ipam: no ranges configured",
            "set ipam.ranges to a list of range sets, e.g. [[{\"subnet\":\"10.88.0.0/16\"}]]",
        ));
    }
    let sets = raw_sets
        .iter()
        .map(|set| {
            set.iter()
                .map(Range::from_conf)
                .collect::<Result<Vec<_>, _>>()
        })
        .collect::<Result<Vec<_>, _>>()?;
    for (i, a) in sets.iter().flatten().enumerate() {
        for b in sets.iter().flatten().skip(i + 1) {
            if a.subnet.contains(&b.start) || b.subnet.contains(&a.start) {
                return Err(CniError::new(
                    CniError::INVALID_NETWORK_CONFIG,
                    format!("ipam: ranges {} and {} overlap", a.subnet, b.subnet),
                    "",
                ));
            }
        }
    }
    let data_dir = conf
        .ipam
        .data_dir
        .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
    let mut requested = Vec::new();
    // `ips` capability first, then CNI_ARGS `IP=a,b` (as the reference plugin reads them).
    let from_args = args
        .args
        .iter()
        .filter(|(k, _)| k == "IP")
        .flat_map(|(_, v)| v.split(','))
        .map(str::to_owned);
    for raw in conf.runtime_config.ips.iter().cloned().chain(from_args) {
        let ip = raw
            .split('/')
            .next()
            .and_then(|a| a.trim().parse::<IpAddr>().ok())
            .ok_or_else(|| {
                CniError::new(
                    CniError::INVALID_NETWORK_CONFIG,
                    format!("ipam: requested address {raw:?} is not an IP address"),
                    "",
                )
            })?;
        if !sets.iter().flatten().any(|r| r.subnet.contains(&ip)) {
            return Err(CniError::new(
                CniError::INVALID_NETWORK_CONFIG,
                format!("ipam: requested address {ip} is in none of the configured ranges"),
                "",
            ));
        }
        requested.push(ip);
    }
    Ok(Parsed {
        sets,
        requested,
        store: Store {
            dir: data_dir.join(&conf.name),
        },
        routes: conf
            .ipam
            .routes
            .into_iter()
            .map(|r| Route::new(r.dst, r.gw))
            .collect(),
        dns: conf.ipam.dns,
        valid: conf.valid_attachments,
    })
}

impl Plugin for HostLocal {
    fn add(&self, args: &PluginArgs) -> Result<CniResult, CniError> {
        let p = parse(args)?;
        let owner = owner_line(&args.container_id, &args.ifname);
        let _lock = p.store.lock()?;
        let mut result = CniResult::new(args.conf.cni_version);
        let mut reserved = Vec::new();
        for (idx, set) in p.sets.iter().enumerate() {
            let wanted = p
                .requested
                .iter()
                .copied()
                .find(|ip| set.iter().any(|r| r.subnet.contains(ip)));
            let res = match wanted {
                Some(ip) => p.store.reserve_exact(set, ip, &owner),
                None => p.store.reserve(idx, set, &owner),
            };
            match res {
                Ok(ip) => {
                    reserved.push(ip);
                    let range = set
                        .iter()
                        .find(|r| r.contains(ip))
                        .expect("reserved in set");
                    result.ips.push(IpConfig {
                        version: None,
                        address: range.with_prefix(ip),
                        gateway: Some(range.gateway),
                        interface: None,
                    });
                }
                Err(e) => {
                    for ip in reserved {
                        let _ = p.store.release_ip(ip);
                    }
                    return Err(e);
                }
            }
        }
        result.routes = p.routes;
        result.dns = p.dns;
        Ok(result)
    }

    fn check(&self, args: &PluginArgs) -> Result<(), CniError> {
        let p = parse(args)?;
        let owner = owner_line(&args.container_id, &args.ifname);
        let _lock = p.store.lock()?;
        if p.store.owned_by(&owner)?.is_empty() {
            return Err(CniError::new(
                CniError::UNKNOWN_CONTAINER,
                format!(
                    "host-local: no address allocated to container {} interface {}",
                    args.container_id, args.ifname
                ),
                "",
            ));
        }
        Ok(())
    }

    fn del(&self, args: &PluginArgs) -> Result<(), CniError> {
        let p = parse(args)?;
        let owner = owner_line(&args.container_id, &args.ifname);
        let _lock = p.store.lock()?;
        for ip in p.store.owned_by(&owner)? {
            p.store.release_ip(ip)?;
        }
        Ok(())
    }

    fn gc(&self, args: &PluginArgs) -> Result<(), CniError> {
        let p = parse(args)?;
        let keep: BTreeSet<String> = p
            .valid
            .iter()
            .map(|k| owner_line(&k.container_id, &k.ifname))
            .collect();
        let _lock = p.store.lock()?;
        for (ip, owner) in p.store.allocations()? {
            if !keep.contains(&owner) {
                p.store.release_ip(ip)?;
            }
        }
        Ok(())
    }
}

fn owner_line(container_id: &str, ifname: &str) -> String {
    format!("{container_id}\r\n{ifname}")
}

fn io_err(what: String) -> impl FnOnce(std::io::Error) -> CniError {
    move |e| {
        CniError::new(
            CniError::IO_FAILURE,
            format!("host-local: {what}"),
            e.to_string(),
        )
    }
}

/// One network's allocation directory.
///
/// Reservations are written but not fsynced, as the reference plugin's are: each guards the
/// address of a veth in a live network namespace, and none of those outlives the machine. After
/// a crash of the machine a reservation may be missing (its address was in use by no pod that
/// survived) or stale (released by the DEL or GC the runtime runs for its dead pods); a crash of
/// the runtime alone loses nothing, the page cache keeps it. Syncing cost an fsync on the pod
/// start's critical path.
struct Store {
    dir: PathBuf,
}

impl Store {
    fn lock(&self) -> Result<Flock<fs::File>, CniError> {
        fs::create_dir_all(&self.dir).map_err(io_err(format!("create {}", self.dir.display())))?;
        let path = self.dir.join("lock");
        let f = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io_err(format!("open {}", path.display())))?;
        Flock::lock(f, FlockArg::LockExclusive).map_err(|(_, e)| {
            CniError::new(
                CniError::IO_FAILURE,
                format!("host-local: lock {}", path.display()),
                e.to_string(),
            )
        })
    }

    fn ip_path(&self, ip: IpAddr) -> PathBuf {
        self.dir.join(ip.to_string())
    }

    fn last_reserved_path(&self, idx: usize) -> PathBuf {
        self.dir.join(format!("last_reserved_ip.{idx}"))
    }

    /// Every allocation: address and owner line.
    fn allocations(&self) -> Result<Vec<(IpAddr, String)>, CniError> {
        let mut out = Vec::new();
        let entries =
            fs::read_dir(&self.dir).map_err(io_err(format!("list {}", self.dir.display())))?;
        for e in entries.flatten() {
            let Some(ip) = e
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<IpAddr>().ok())
            else {
                continue;
            };
            let owner = fs::read_to_string(e.path()).unwrap_or_default();
            out.push((ip, owner.trim().to_owned()));
        }
        Ok(out)
    }

    fn owned_by(&self, owner: &str) -> Result<Vec<IpAddr>, CniError> {
        // Files written by old reference plugins hold only the container ID.
        let id = owner.split("\r\n").next().unwrap_or(owner);
        Ok(self
            .allocations()?
            .into_iter()
            .filter(|(_, o)| o == owner || o == id)
            .map(|(ip, _)| ip)
            .collect())
    }

    /// Reserves an address of range set `idx` for `owner` (the one it already has, if any).
    fn reserve(&self, idx: usize, set: &[Range], owner: &str) -> Result<IpAddr, CniError> {
        if let Some(ip) = self
            .owned_by(owner)?
            .into_iter()
            .find(|ip| set.iter().any(|r| r.contains(*ip)))
        {
            return Ok(ip);
        }
        let last = fs::read_to_string(self.last_reserved_path(idx))
            .ok()
            .and_then(|s| s.trim().parse::<IpAddr>().ok());
        for ip in candidates(set, last, MAX_CANDIDATES) {
            if !set.iter().any(|r| r.usable(ip)) {
                continue;
            }
            let path = self.ip_path(ip);
            match fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
            {
                Ok(mut f) => {
                    // Not synced, as the reference plugin's: see `Store`.
                    f.write_all(owner.as_bytes())
                        .map_err(io_err(format!("write {}", path.display())))?;
                    // Only a hint for where to start next time: losing it is harmless.
                    let _ = fs::write(self.last_reserved_path(idx), ip.to_string());
                    return Ok(ip);
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(io_err(format!("create {}", path.display()))(e)),
            }
        }
        let subnets: Vec<String> = set.iter().map(|r| r.subnet.to_string()).collect();
        Err(CniError::new(
            CniError::TRY_AGAIN_LATER,
            format!(
                "host-local: no free address in range set {}",
                subnets.join(", ")
            ),
            format!("allocations in {}", self.dir.display()),
        ))
    }

    /// Reserves exactly `ip` for `owner`: free, or already theirs.
    fn reserve_exact(&self, set: &[Range], ip: IpAddr, owner: &str) -> Result<IpAddr, CniError> {
        if !set.iter().any(|r| r.usable(ip)) {
            return Err(CniError::new(
                CniError::INVALID_NETWORK_CONFIG,
                format!("host-local: requested address {ip} is not usable (outside the range, gateway, network or broadcast)"),
                "",
            ));
        }
        if self.owned_by(owner)?.contains(&ip) {
            return Ok(ip);
        }
        let path = self.ip_path(ip);
        match fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
        {
            Ok(mut f) => {
                // Not synced, as the reference plugin's: see `Store`.
                f.write_all(owner.as_bytes())
                    .map_err(io_err(format!("write {}", path.display())))?;
                Ok(ip)
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Err(CniError::new(
                CniError::INVALID_NETWORK_CONFIG,
                format!("host-local: requested address {ip} is already allocated"),
                format!("{}", path.display()),
            )),
            Err(e) => Err(io_err(format!("create {}", path.display()))(e)),
        }
    }

    fn release_ip(&self, ip: IpAddr) -> Result<(), CniError> {
        let path = self.ip_path(ip);
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err(format!("remove {}", path.display()))(e)),
        }
    }
}

/// Runs the IPAM plugin named in a config's `ipam.type` (found in CNI_PATH) with this call's
/// environment and config, as a main plugin delegates to its IPAM.
pub fn exec_ipam(
    args: &PluginArgs,
    command: crate::exec::Command,
) -> Result<Option<CniResult>, CniError> {
    let conf: Value = args.parse()?;
    let ipam_type = conf
        .pointer("/ipam/type")
        .and_then(Value::as_str)
        .ok_or_else(|| CniError::new(CniError::INVALID_NETWORK_CONFIG, "missing ipam.type", ""))?;
    if ipam_type == PLUGIN_TYPE {
        // berth's own host-local: the code of its binary, run here instead of exec'd — one
        // process start less on every ADD and DEL, on the pod start's critical path.
        return run_in_process(args, command);
    }
    let path = crate::exec::find_plugin(ipam_type, &args.path).map_err(|e| {
        CniError::new(
            CniError::INVALID_NETWORK_CONFIG,
            format!("ipam plugin {ipam_type:?}"),
            e.to_string(),
        )
    })?;
    run_delegate(&path, ipam_type, command, &args.stdin)
}

fn run_in_process(
    args: &PluginArgs,
    command: crate::exec::Command,
) -> Result<Option<CniResult>, CniError> {
    use crate::exec::Command;
    let args = PluginArgs {
        command,
        ..args.clone()
    };
    match command {
        Command::Add => HostLocal.add(&args).map(Some),
        Command::Check => HostLocal.check(&args).map(|()| None),
        Command::Del => HostLocal.del(&args).map(|()| None),
        Command::Status => HostLocal.status(&args).map(|()| None),
        Command::Gc => HostLocal.gc(&args).map(|()| None),
        Command::Version => Ok(None),
    }
}

fn run_delegate(
    path: &Path,
    name: &str,
    command: crate::exec::Command,
    stdin: &[u8],
) -> Result<Option<CniResult>, CniError> {
    use std::process::{Command, Stdio};
    let mut child = Command::new(path)
        .env("CNI_COMMAND", command.as_str())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(io_err(format!("run ipam plugin {name}")))?;
    if let Some(mut w) = child.stdin.take() {
        let _ = w.write_all(stdin);
    }
    let out = child
        .wait_with_output()
        .map_err(io_err(format!("run ipam plugin {name}")))?;
    if !out.status.success() {
        return Err(
            serde_json::from_slice::<CniError>(&out.stdout).unwrap_or_else(|_| {
                CniError::new(
                    CniError::IO_FAILURE,
                    format!("ipam plugin {name} exited with {}", out.status),
                    String::from_utf8_lossy(&out.stderr).trim().to_owned(),
                )
            }),
        );
    }
    if command != crate::exec::Command::Add {
        return Ok(None);
    }
    serde_json::from_slice(&out.stdout).map(Some).map_err(|e| {
        CniError::new(
            CniError::DECODING_FAILURE,
            format!("ipam plugin {name} printed an invalid result"),
            e.to_string(),
        )
    })
}
