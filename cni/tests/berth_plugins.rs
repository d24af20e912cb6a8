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

fn bridge_net(t: &TestNet, bridge: &str, ipam: &str, lo: &str, gateway: bool) -> NetworkConfigList {
    NetworkConfigList::from_value(serde_json::json!({
        "cniVersion": "1.0.0", "name": format!("{}-net", t.id),
        "plugins": [
            {
                "type": bridge, "bridge": t.bridge, "isGateway": gateway, "ipMasq": false,
                "hairpinMode": true,
                "ipam": { "type": ipam, "ranges": [[{ "subnet": t.subnet() }]],
                          "dataDir": t.ipam_dir() }
            },
            { "type": lo }
        ]
    }))
    .unwrap()
}

/// [`bridge_net`] of berth's own bridge, host-local and loopback.
fn berth_bridge_net(t: &TestNet, gateway: bool) -> NetworkConfigList {
    bridge_net(
        t,
        "berth-cni-bridge",
        "berth-cni-host-local",
        "berth-cni-loopback",
        gateway,
    )
}

/// What must agree between berth's bridge result and the reference one (names and MACs differ).
fn shape(r: &CniResult) -> serde_json::Value {
    serde_json::json!({
        "interfaces": r.interfaces.iter().map(|i| (i.mac.len(), !i.sandbox.is_empty())).collect::<Vec<_>>(),
        "ips": r.ips.iter().map(|i| (i.interface, i.address.prefix_len(), i.gateway.is_some())).collect::<Vec<_>>(),
        "routes": r.routes.len(),
        "first_ip": r.ips[0].address.to_string(),
    })
}

/// Two pods on the test bridge: ADD, talk over TCP, CHECK, DEL, DEL after the netns vanished;
/// returns A's result.
fn two_pods_scenario(t: &mut TestNet, net: &NetworkConfigList, bin: PathBuf) -> CniResult {
    let c = CniClient::new(vec![bin], t.cache_dir()).with_timeout(Duration::from_secs(30));
    let ns_a = t.make_netns("a");
    let ns_b = t.make_netns("b");
    let att_a = Attachment::new("pod-a", ns_a.path(), "eth0").unwrap();
    let att_b = Attachment::new("pod-b", ns_b.path(), "eth0").unwrap();
    let ra = c.add(net, &att_a).unwrap();
    c.check(net, &att_a).unwrap();
    let rb = c.add(net, &att_b).unwrap();
    let ip_a = ra.sandbox_ip().unwrap();
    assert_ne!(ip_a, rb.sandbox_ip().unwrap());
    assert_eq!(t.bridge_ports().len(), 2, "{:?}", t.bridge_ports());
    let echoed = support::tcp_round_trip(
        ns_b.path(),
        ns_a.path(),
        std::net::SocketAddr::new(ip_a, 7201),
    )
    .unwrap();
    assert_eq!(echoed, "hello\n");
    c.del(net, &att_a).unwrap();
    c.del(net, &att_a).unwrap();
    t.netns.remove("b").unwrap();
    c.del(net, &att_b).unwrap();
    let ports = t.bridge_ports_settled();
    assert!(ports.is_empty(), "{ports:?}");
    assert!(t.allocations().is_empty(), "{:?}", t.allocations());
    ra
}

#[test]
fn berth_bridge_connects_two_pods_like_the_reference_bridge() {
    let name = "berth_bridge_connects_two_pods_like_the_reference_bridge";
    if !need_root(name) || !need_reference_plugins(name) {
        return;
    }
    let mut ours_t = TestNet::new(22);
    let ours_net = berth_bridge_net(&ours_t, false);
    let ours = two_pods_scenario(&mut ours_t, &ours_net, berth_bin_dir());
    assert_eq!(ours.interfaces[0].name, ours_t.bridge);
    assert_eq!(ours.interfaces[2].name, "eth0");
    assert!(ours.interfaces[1].name.starts_with("veth"));
    drop(ours_t);

    let mut ref_t = TestNet::new(22);
    let ref_net = bridge_net(&ref_t, "bridge", "host-local", "loopback", false);
    let theirs = two_pods_scenario(&mut ref_t, &ref_net, PathBuf::from(REFERENCE_PLUGINS));
    assert_eq!(shape(&ours), shape(&theirs), "{ours:?}\nvs\n{theirs:?}");
}

#[test]
fn berth_bridge_gateway_is_reachable_from_the_pod() {
    let name = "berth_bridge_gateway_is_reachable_from_the_pod";
    if !need_root(name) {
        return;
    }
    let mut t = TestNet::new(23);
    let net = berth_bridge_net(&t, true);
    let c = CniClient::new(vec![berth_bin_dir()], t.cache_dir());
    let ns = t.make_netns("gw");
    let att = Attachment::new("pod-gw", ns.path(), "eth0").unwrap();
    let r = c.add(&net, &att).unwrap();
    let gw = r.ips[0].gateway.unwrap();
    assert_eq!(gw.to_string(), format!("{}.1", t.prefix));
    // A listener on the bridge's gateway address in the host namespace.
    let l = std::net::TcpListener::bind((gw, 0)).unwrap();
    let addr = l.local_addr().unwrap();
    let server = support::serve_echo_once(l, Duration::from_secs(5));
    assert_eq!(support::connect_from(ns.path(), addr).unwrap(), "hello\n");
    server.join().unwrap();
    c.del(&net, &att).unwrap();
    assert!(t.bridge_ports_settled().is_empty());
}

/// berth's bridge runs berth's host-local in its own process (no host-local binary needed on
/// CNI_PATH) and makes the sandbox end of the veth in the netns under its final name; a
/// retried ADD (berthd died before recording the first) replaces the first attachment.
#[test]
fn berth_bridge_runs_its_host_local_in_process_and_a_retried_add_replaces_the_veth() {
    let name = "berth_bridge_runs_its_host_local_in_process_and_a_retried_add_replaces_the_veth";
    if !need_root(name) {
        return;
    }
    let mut t = TestNet::new(25);
    let net = berth_bridge_net(&t, true);
    let bins = tempfile::tempdir().unwrap();
    for plugin in ["berth-cni-bridge", "berth-cni-loopback"] {
        std::os::unix::fs::symlink(berth_bin_dir().join(plugin), bins.path().join(plugin)).unwrap();
    }
    let c = CniClient::new(vec![bins.path().to_owned()], t.cache_dir())
        .with_timeout(Duration::from_secs(30));
    let ns = t.make_netns("inproc");
    let att = Attachment::new("pod-inproc", ns.path(), "eth0").unwrap();
    let first = c.add(&net, &att).unwrap();
    let again = c.add(&net, &att).unwrap();
    assert_eq!(first.sandbox_ip(), again.sandbox_ip());
    assert_eq!(t.bridge_ports().len(), 1, "{:?}", t.bridge_ports());
    assert_eq!(t.allocations().len(), 1, "{:?}", t.allocations());
    let in_ns = support::links_in(ns.path());
    assert!(in_ns.iter().any(|l| l == "eth0"), "{in_ns:?}");
    c.check(&net, &att).unwrap();
    c.del(&net, &att).unwrap();
    assert!(t.bridge_ports_settled().is_empty());
    assert!(t.allocations().is_empty(), "{:?}", t.allocations());
}

#[test]
fn default_conflist_names_berths_own_plugins() {
    let net = NetworkConfigList::from_conflist_bytes(cni::default_conflist().as_bytes()).unwrap();
    for p in net.plugins() {
        let t = p.plugin_type();
        assert!(
            berth_bin_dir().join(t).exists(),
            "{t} is not a binary of this crate"
        );
        if let Some(ipam) = p.raw().get("ipam") {
            let t = ipam["type"].as_str().unwrap();
            assert!(
                berth_bin_dir().join(t).exists(),
                "{t} is not a binary of this crate"
            );
        }
    }
}

#[test]
fn default_style_chain_with_portmap_attaches_and_detaches() {
    let name = "default_style_chain_with_portmap_attaches_and_detaches";
    if !need_root(name) {
        return;
    }
    let mut t = TestNet::new(24);
    let net = NetworkConfigList::from_value(serde_json::json!({
        "cniVersion": "1.0.0", "name": format!("{}-net", t.id),
        "plugins": [
            { "type": "berth-cni-bridge", "bridge": t.bridge, "hairpinMode": true,
              "ipam": { "type": "berth-cni-host-local", "ranges": [[{ "subnet": t.subnet() }]],
                        "dataDir": t.ipam_dir() } },
            { "type": "berth-cni-portmap", "capabilities": { "portMappings": true },
              "nftTable": t.nft_table() },
            { "type": "berth-cni-loopback" }
        ]
    }))
    .unwrap();
    let c = CniClient::new(vec![berth_bin_dir()], t.cache_dir());
    let ns = t.make_netns("pm");
    let att = Attachment::new("pod-pm", ns.path(), "eth0").unwrap();
    let r = c.add(&net, &att).unwrap();
    assert_eq!(r.interfaces.len(), 3, "{r:?}");
    c.check(&net, &att).unwrap();
    // No port mappings: portmap touched no nft table.
    assert!(!t.nft_table_exists());
    c.del(&net, &att).unwrap();
    assert!(t.bridge_ports_settled().is_empty());
    assert!(t.allocations().is_empty(), "{:?}", t.allocations());
}

#[test]
fn host_local_ips_capability_hands_out_the_requested_address_like_the_reference() {
    let name = "host_local_ips_capability_hands_out_the_requested_address_like_the_reference";
    let dir = tempfile::tempdir().unwrap();
    let mut plugins = vec![("berth-cni-host-local", berth_bin_dir())];
    if need_reference_plugins(name) {
        plugins.push(("host-local", PathBuf::from(REFERENCE_PLUGINS)));
    }
    let mut results = Vec::new();
    for (plugin, bin) in plugins {
        let data = dir.path().join(format!("ipam-{plugin}"));
        let net = NetworkConfigList::from_value(serde_json::json!({
            "cniVersion": "1.0.0", "name": "ips",
            "plugins": [{
                "type": plugin, "capabilities": { "ips": true },
                "ipam": { "type": plugin, "ranges": [[{ "subnet": "10.250.4.0/24" }]],
                          "dataDir": data }
            }]
        }))
        .unwrap();
        let c = CniClient::new(vec![bin], dir.path().join(format!("cache-{plugin}")));
        let want = |id: &str, ip: &str| {
            Attachment::new(id, "/nonexistent", "eth0")
                .unwrap()
                .with_capabilities(cni::CapabilityArgs {
                    ips: vec![ip.to_owned()],
                    ..Default::default()
                })
        };
        let a = want("a", "10.250.4.7/24");
        let r = c.add(&net, &a).unwrap();
        assert_eq!(r.ips[0].address.to_string(), "10.250.4.7/24", "{plugin}");
        // Taken: a second attachment asking for it fails; one outside the ranges too.
        let err = c
            .add(&net, &want("b", "10.250.4.7"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("10.250.4.7"), "{plugin}: {err}");
        if plugin.starts_with("berth") {
            assert!(
                err.contains("requested address 10.250.4.7 is already allocated"),
                "{err}"
            );
            let err = c.add(&net, &want("c", "10.9.9.9")).unwrap_err().to_string();
            assert!(
                err.contains("requested address 10.9.9.9 is in none of the configured ranges"),
                "{err}"
            );
        }
        c.del(&net, &a).unwrap();
        results.push(r);
    }
    if results.len() == 2 {
        assert_eq!(results[0], results[1]);
    }
}
