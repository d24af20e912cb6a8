//! berth's own plugins driven by berth's client: host-local (no root: it touches only its
//! data dir) and loopback (root), compared with Debian's reference plugins on the same config.

mod support;

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use cni::{Attachment, CniClient, CniResult, NetworkConfigList};
use support::{need_reference_plugins, need_root, TestNet, REFERENCE_PLUGINS};

fn berth_bin_dir() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_berth-cni-loopback"))
        .parent()
        .unwrap()
        .to_owned()
}

fn host_local_net(name: &str, plugin: &str, subnet: &str, data_dir: &Path) -> NetworkConfigList {
    NetworkConfigList::from_value(serde_json::json!({
        "cniVersion": "1.0.0", "name": name,
        "plugins": [{
            "type": plugin,
            "ipam": {
                "type": plugin,
                "ranges": [[{ "subnet": subnet }]],
                "routes": [{ "dst": "10.99.0.0/16" }],
                "dataDir": data_dir,
            }
        }]
    }))
    .unwrap()
}

fn ip_of(r: &CniResult) -> IpAddr {
    r.ips[0].address.addr()
}

#[test]
fn host_local_hands_out_distinct_addresses_under_concurrency_and_releases_them() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("ipam");
    let net = host_local_net("hl", "berth-cni-host-local", "10.250.0.0/24", &data);
    let c = CniClient::new(vec![berth_bin_dir()], dir.path().join("cache"))
        .with_timeout(Duration::from_secs(30));
    let atts: Vec<Attachment> = (0..50)
        .map(|i| Attachment::new(format!("c{i}"), "/nonexistent", "eth0").unwrap())
        .collect();
    let results: Vec<CniResult> = std::thread::scope(|s| {
        let hs: Vec<_> = atts.iter().map(|a| s.spawn(|| c.add(&net, a))).collect();
        hs.into_iter().map(|h| h.join().unwrap().unwrap()).collect()
    });
    let mut ips: Vec<IpAddr> = results.iter().map(ip_of).collect();
    ips.sort();
    ips.dedup();
    assert_eq!(ips.len(), 50);
    assert!(
        !ips.contains(&"10.250.0.1".parse().unwrap()),
        "gateway handed out"
    );
    let r = &results[0];
    assert_eq!(r.ips[0].gateway, Some("10.250.0.1".parse().unwrap()));
    assert_eq!(r.ips[0].address.prefix_len(), 24);
    assert_eq!(r.routes[0].dst.to_string(), "10.99.0.0/16");

    // ADD again for the same attachment keeps its address.
    let again = c.add(&net, &atts[7]).unwrap();
    assert_eq!(ip_of(&again), ip_of(&results[7]));

    std::thread::scope(|s| {
        for a in &atts {
            s.spawn(|| c.del(&net, a).unwrap());
        }
    });
    let left: Vec<_> = std::fs::read_dir(data.join("hl"))
        .unwrap()
        .filter_map(|e| e.unwrap().file_name().to_str()?.parse::<IpAddr>().ok())
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn host_local_exhaustion_and_bad_range_are_clear() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("ipam");
    let c = CniClient::new(vec![berth_bin_dir()], dir.path().join("cache"));
    // /30: .1 is the gateway, .2 the only usable address.
    let net = host_local_net("tiny", "berth-cni-host-local", "10.250.1.0/30", &data);
    let a = Attachment::new("a", "/nonexistent", "eth0").unwrap();
    let b = Attachment::new("b", "/nonexistent", "eth0").unwrap();
    assert_eq!(ip_of(&c.add(&net, &a).unwrap()).to_string(), "10.250.1.2");
    let err = c.add(&net, &b).unwrap_err().to_string();
    assert!(
        err.contains(
            "code 11 (try again later): host-local: no free address in range set 10.250.1.0/30"
        ),
        "{err}"
    );
    // Released on DEL, then reused.
    c.del(&net, &a).unwrap();
    assert_eq!(ip_of(&c.add(&net, &b).unwrap()).to_string(), "10.250.1.2");

    let bad = NetworkConfigList::from_value(serde_json::json!({
        "cniVersion": "1.0.0", "name": "bad",
        "plugins": [{ "type": "berth-cni-host-local", "ipam": { "ranges": [[{
            "subnet": "10.250.2.0/24", "rangeStart": "10.250.3.1" }]], "dataDir": data } }]
    }))
    .unwrap();
    let err = c.add(&bad, &a).unwrap_err().to_string();
    assert!(
        err.contains(
            "code 7 (invalid network config): rangeStart 10.250.3.1 is not in subnet 10.250.2.0/24"
        ),
        "{err}"
    );
}

#[test]
fn host_local_result_matches_the_reference_plugin() {
    if !need_reference_plugins("host_local_result_matches_the_reference_plugin") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let run = |plugin: &str, bin: PathBuf| {
        let data = dir.path().join(format!("ipam-{plugin}"));
        let net = host_local_net("cmp", plugin, "10.250.3.0/24", &data);
        let c = CniClient::new(vec![bin], dir.path().join(format!("cache-{plugin}")));
        let a = Attachment::new("same", "/nonexistent", "eth0").unwrap();
        let r = c.add(&net, &a).unwrap();
        c.del(&net, &a).unwrap();
        r
    };
    let ours = run("berth-cni-host-local", berth_bin_dir());
    let theirs = run("host-local", PathBuf::from(REFERENCE_PLUGINS));
    assert_eq!(ours, theirs);
}

#[test]
fn loopback_brings_lo_up_like_the_reference_plugin() {
    if !need_root("loopback_brings_lo_up_like_the_reference_plugin")
        || !need_reference_plugins("loopback_brings_lo_up_like_the_reference_plugin")
    {
        return;
    }
    let mut t = TestNet::new(21);
    let mut results = Vec::new();
    for (plugin, bin) in [
        ("berth-cni-loopback", berth_bin_dir()),
        ("loopback", PathBuf::from(REFERENCE_PLUGINS)),
    ] {
        let ns = t.make_netns(plugin);
        let net = NetworkConfigList::from_value(serde_json::json!({
            "cniVersion": "1.0.0", "name": "lo", "plugins": [{ "type": plugin }]
        }))
        .unwrap();
        let c = CniClient::new(vec![bin], t.cache_dir());
        let a = Attachment::new("lo-test", ns.path(), "lo").unwrap();
        let mut r = c.add(&net, &a).unwrap();
        let lo = std::net::SocketAddr::new("127.0.0.1".parse().unwrap(), 7100);
        assert_eq!(
            support::tcp_round_trip(ns.path(), ns.path(), lo).unwrap(),
            "hello\n",
            "{plugin}"
        );
        c.check(&net, &a).unwrap();
        c.del(&net, &a).unwrap();
        for i in &mut r.interfaces {
            i.sandbox = "<netns>".into();
        }
        results.push(r);
    }
    assert_eq!(results[0], results[1]);
}
