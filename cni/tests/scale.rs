//! 200 ADD/DEL cycles through a full chain (bridge with ipMasq + host-local, portmap with a
//! port mapping, loopback), with berth's plugins and with Debian's reference ones: afterwards
//! no veth is left on the bridge, no route into the pods' subnet but the bridge's own, no nft
//! rule (berth) or iptables rule naming the network (reference), no IP allocation, no pinned
//! netns and no cache entry. Root only.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use cni::{Attachment, CapabilityArgs, CniClient, NetworkConfigList, PortMapping, Protocol};
use support::{need_reference_plugins, need_root, TestNet, REFERENCE_PLUGINS};

const CYCLES: u32 = 200;

fn berth_bin_dir() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_berth-cni-bridge"))
        .parent()
        .unwrap()
        .to_owned()
}

fn output(args: &[&str]) -> String {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn cycles(slot: u32, berth: bool) {
    let t = TestNet::new(slot);
    let (bridge, ipam, portmap, lo, bin) = if berth {
        let p = (
            "berth-cni-bridge",
            "berth-cni-host-local",
            "berth-cni-portmap",
        );
        (p.0, p.1, p.2, "berth-cni-loopback", berth_bin_dir())
    } else {
        let bin = PathBuf::from(REFERENCE_PLUGINS);
        ("bridge", "host-local", "portmap", "loopback", bin)
    };
    let net = NetworkConfigList::from_value(serde_json::json!({
        "cniVersion": "1.0.0", "name": format!("{}-net", t.id),
        "plugins": [
            { "type": bridge, "bridge": t.bridge, "isGateway": true, "ipMasq": true,
              "hairpinMode": true, "nftTable": t.nft_table(),
              "ipam": { "type": ipam, "ranges": [[{ "subnet": t.subnet() }]],
                        "dataDir": t.ipam_dir() } },
            { "type": portmap, "capabilities": { "portMappings": true },
              "nftTable": t.nft_table() },
            { "type": lo }
        ]
    }))
    .unwrap();
    let c = CniClient::new(vec![bin], t.cache_dir()).with_timeout(Duration::from_secs(60));
    let host_port = 40_000 + u16::try_from(std::process::id() % 10_000).unwrap() + slot as u16;
    for i in 0..CYCLES {
        let name = format!("s{i}");
        let ns = t.netns.create(&name).unwrap();
        let att = Attachment::new(format!("scale-{i}"), ns.path(), "eth0")
            .unwrap()
            .with_capabilities(CapabilityArgs {
                port_mappings: vec![PortMapping {
                    host_port,
                    container_port: 80,
                    protocol: Protocol::Tcp,
                    host_ip: None,
                }],
                ..Default::default()
            });
        let added = c.add(&net, &att);
        let deleted = c.del(&net, &att);
        t.netns.remove(&name).unwrap();
        added.unwrap_or_else(|e| panic!("cycle {i}: ADD: {e}"));
        deleted.unwrap_or_else(|e| panic!("cycle {i}: DEL: {e}"));
    }

    let ports = t.bridge_ports_settled();
    assert!(ports.is_empty(), "veths left on the bridge: {ports:?}");
    assert!(t.allocations().is_empty(), "{:?}", t.allocations());
    let pins: Vec<_> = std::fs::read_dir(t.netns.dir())
        .unwrap()
        .flatten()
        .collect();
    assert!(pins.is_empty(), "{pins:?}");
    assert!(c.cache().list(net.name()).unwrap().is_empty());
    let routes = output(&["ip", "-4", "route", "show"]);
    let ours: Vec<&str> = routes.lines().filter(|l| l.contains(&t.prefix)).collect();
    assert!(
        ours.len() <= 1 && ours.iter().all(|l| l.contains(&t.bridge)),
        "routes left: {ours:?}"
    );
    if berth {
        assert!(!t.nft_table_exists(), "{}", t.nft_rules());
    } else {
        let rules = output(&["iptables-save", "-t", "nat"]);
        let left: Vec<&str> = rules.lines().filter(|l| l.contains(net.name())).collect();
        assert!(left.is_empty(), "iptables rules left: {left:?}");
    }
}

#[test]
fn berth_plugins_200_add_del_cycles_leave_nothing_behind() {
    if need_root("berth_plugins_200_add_del_cycles_leave_nothing_behind") {
        cycles(41, true);
    }
}

#[test]
fn reference_plugins_200_add_del_cycles_leave_nothing_behind() {
    let name = "reference_plugins_200_add_del_cycles_leave_nothing_behind";
    if need_root(name) && need_reference_plugins(name) {
        cycles(42, false);
    }
}
