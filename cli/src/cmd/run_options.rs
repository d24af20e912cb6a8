//! `run`'s resource and wiring flags as CRI fields: `-p` (the sandbox's port mappings, which
//! berthd hands to CNI's portmap), `-v` (bind mounts), `--memory`, `--cpus`.

use std::path::Path;

use anyhow::{bail, Context, Result};
use cri_api::v1 as cri;

/// CFS period berth uses for `--cpus` (as docker).
const CPU_PERIOD: i64 = 100_000;

/// `-p [HOST_IP:]HOST_PORT:CONTAINER_PORT[/tcp|udp|sctp]`.
pub fn port_mapping(spec: &str) -> Result<cri::PortMapping> {
    let (addr, proto) = match spec.rsplit_once('/') {
        Some((a, p)) => (a, p),
        None => (spec, "tcp"),
    };
    let protocol = match proto.to_ascii_lowercase().as_str() {
        "tcp" => cri::Protocol::Tcp,
        "udp" => cri::Protocol::Udp,
        "sctp" => cri::Protocol::Sctp,
        other => bail!("-p {spec}: unknown protocol {other:?} (tcp, udp or sctp)"),
    };
    // The host IP may be IPv6 in brackets: [::1]:8080:80.
    let (host_ip, rest) = if let Some(r) = addr.strip_prefix('[') {
        let (ip, rest) = r
            .split_once("]:")
            .with_context(|| format!("-p {spec}: expected [IP]:HOST:CONTAINER"))?;
        (ip.to_owned(), rest)
    } else {
        let parts: Vec<&str> = addr.split(':').collect();
        match parts.len() {
            2 => (String::new(), addr),
            3 => (parts[0].to_owned(), &addr[parts[0].len() + 1..]),
            _ => bail!(
                "-p {spec}: expected [HOST_IP:]HOST_PORT:CONTAINER_PORT[/PROTO] \
                 (berth maps a host port you name)"
            ),
        }
    };
    if !host_ip.is_empty() && host_ip.parse::<std::net::IpAddr>().is_err() {
        bail!("-p {spec}: {host_ip:?} is not an IP address");
    }
    let (host, ctr) = rest
        .split_once(':')
        .with_context(|| format!("-p {spec}: expected HOST_PORT:CONTAINER_PORT"))?;
    let port = |p: &str, what: &str| -> Result<i32> {
        match p.parse::<u16>() {
            Ok(n) if n > 0 => Ok(i32::from(n)),
            _ => bail!("-p {spec}: {what} port {p:?} is not a port number (1-65535)"),
        }
    };
    Ok(cri::PortMapping {
        protocol: protocol as i32,
        container_port: port(ctr, "container")?,
        host_port: port(host, "host")?,
        host_ip,
    })
}

/// `-v HOST_PATH:CONTAINER_PATH[:ro|rw]` (a relative host path is taken from the current
/// directory; it must exist).
pub fn mount(spec: &str) -> Result<cri::Mount> {
    let parts: Vec<&str> = spec.split(':').collect();
    let (host, ctr, readonly) = match parts.as_slice() {
        [h, c] => (*h, *c, false),
        [h, c, "ro"] => (*h, *c, true),
        [h, c, "rw"] => (*h, *c, false),
        [_, _, o] => bail!("-v {spec}: unknown option {o:?} (ro or rw)"),
        _ => bail!("-v {spec}: expected HOST_PATH:CONTAINER_PATH[:ro]"),
    };
    if !ctr.starts_with('/') {
        bail!("-v {spec}: the container path must be absolute");
    }
    if host.is_empty() {
        bail!("-v {spec}: the host path is empty (named volumes are not supported)");
    }
    let host = std::path::absolute(Path::new(host))
        .with_context(|| format!("-v {spec}: resolve {host}"))?;
    if !host.exists() {
        bail!("-v {spec}: {} does not exist", host.display());
    }
    Ok(cri::Mount {
        container_path: ctr.to_owned(),
        host_path: host.display().to_string(),
        readonly,
        ..Default::default()
    })
}

/// `--memory 512m`: bytes (suffixes b, k, m, g, t; powers of 1024).
pub fn memory_bytes(spec: &str) -> Result<i64> {
    let s = spec.trim().to_ascii_lowercase();
    let s = s.strip_suffix('b').filter(|r| !r.is_empty()).unwrap_or(&s);
    let (num, mult) = match s.chars().last() {
        Some('k') => (&s[..s.len() - 1], 1i64 << 10),
        Some('m') => (&s[..s.len() - 1], 1 << 20),
        Some('g') => (&s[..s.len() - 1], 1 << 30),
        Some('t') => (&s[..s.len() - 1], 1 << 40),
        _ => (s, 1),
    };
    let n: f64 = num
        .parse()
        .ok()
        .filter(|n: &f64| n.is_finite() && *n > 0.0)
        .with_context(|| format!("--memory {spec}: expected a size such as 512m or 1g"))?;
    let bytes = n * mult as f64;
    if bytes < 6.0 * 1024.0 * 1024.0 {
        bail!("--memory {spec}: the minimum is 6m");
    }
    Ok(bytes as i64)
}

/// `--cpus 1.5`: (CFS period, quota).
pub fn cpu_quota(spec: &str) -> Result<(i64, i64)> {
    let n: f64 = spec
        .parse()
        .ok()
        .filter(|n: &f64| n.is_finite() && *n > 0.0)
        .with_context(|| format!("--cpus {spec}: expected a positive number such as 0.5"))?;
    let quota = (n * CPU_PERIOD as f64).round() as i64;
    if quota < 1000 {
        bail!("--cpus {spec}: the minimum is 0.01");
    }
    Ok((CPU_PERIOD, quota))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports() {
        let p = port_mapping("8080:80").unwrap();
        assert_eq!((p.host_port, p.container_port), (8080, 80));
        assert_eq!(p.protocol, cri::Protocol::Tcp as i32);
        assert!(p.host_ip.is_empty());
        let p = port_mapping("127.0.0.1:53:5353/udp").unwrap();
        assert_eq!(p.host_ip, "127.0.0.1");
        assert_eq!((p.host_port, p.container_port), (53, 5353));
        assert_eq!(p.protocol, cri::Protocol::Udp as i32);
        let p = port_mapping("[::1]:8443:443").unwrap();
        assert_eq!(p.host_ip, "::1");
        assert_eq!(p.host_port, 8443);
        for bad in [
            "80",
            "x:80",
            "8080:0",
            "1:2:3:4",
            "8080:80/icmp",
            "nope:1:2",
        ] {
            assert!(port_mapping(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn mounts() {
        let m = mount("/tmp:/data:ro").unwrap();
        assert_eq!(
            (m.host_path.as_str(), m.container_path.as_str()),
            ("/tmp", "/data")
        );
        assert!(m.readonly);
        assert!(!mount("/tmp:/data").unwrap().readonly);
        assert!(mount("/tmp:data").is_err());
        assert!(mount("/tmp:/d:zz").is_err());
        assert!(mount("/nonexistent-berth:/d").is_err());
        assert!(mount("vol").is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(memory_bytes("512m").unwrap(), 512 << 20);
        assert_eq!(memory_bytes("1g").unwrap(), 1 << 30);
        assert_eq!(memory_bytes("1.5GB").unwrap(), 3 << 29);
        assert_eq!(memory_bytes("10485760").unwrap(), 10 << 20);
        assert!(memory_bytes("1k").is_err());
        assert!(memory_bytes("lots").is_err());
        assert_eq!(cpu_quota("1.5").unwrap(), (100_000, 150_000));
        assert!(cpu_quota("0").is_err());
        assert!(cpu_quota("x").is_err());
    }
}
