//! portmap over a test bridge, berth's plugins and the reference ones: a TCP and a UDP server
//! in a test-made netns are reachable from the host at 127.0.0.1:hostPort and at the bridge's
//! address, hostIP limits a mapping, a pod reaches itself through its host port (hairpin), and
//! DEL removes the forwarding (berth: its nft table is gone). Root only.
//!
//! The pods have no default route and the bridge routes nothing out of its /24.

mod support;

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use cni::{Attachment, CapabilityArgs, CniClient, NetworkConfigList, PortMapping, Protocol};
use support::{
    connect_from, connect_here, listen_in, need_reference_plugins, need_root, serve_echo_once,
    udp_echo_once_in, udp_round_trip, TestNet, REFERENCE_PLUGINS,
};

fn berth_bin_dir() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_berth-cni-portmap"))
        .parent()
        .unwrap()
        .to_owned()
}

/// Host ports of one test: unique per process and slot.
fn host_port(slot: u32, n: u16) -> u16 {
    let base = 20_000 + (std::process::id() % 390) * 100 + slot * 3;
    u16::try_from(base).unwrap() + n
}

fn conflist(t: &TestNet, berth: bool) -> NetworkConfigList {
    let (bridge, ipam, portmap, lo) = if berth {
        (
            "berth-cni-bridge",
            "berth-cni-host-local",
            "berth-cni-portmap",
            "berth-cni-loopback",
        )
    } else {
        ("bridge", "host-local", "portmap", "loopback")
    };
    NetworkConfigList::from_value(serde_json::json!({
        "cniVersion": "1.0.0", "name": format!("{}-net", t.id),
        "plugins": [
            { "type": bridge, "bridge": t.bridge, "isGateway": true, "ipMasq": false,
              "hairpinMode": true,
              "ipam": { "type": ipam, "ranges": [[{ "subnet": t.subnet() }]],
                        "dataDir": t.ipam_dir() } },
            { "type": portmap, "capabilities": { "portMappings": true },
              "nftTable": t.nft_table() },
            { "type": lo }
        ]
    }))
    .unwrap()
}

fn mapping(host: u16, container: u16, protocol: Protocol, host_ip: Option<&str>) -> PortMapping {
    PortMapping {
        host_port: host,
        container_port: container,
        protocol,
        host_ip: host_ip.map(|h| h.parse().unwrap()),
    }
}

fn scenario(slot: u32, berth: bool) {
    let mut t = TestNet::new(slot);
    let net = conflist(&t, berth);
    let bin = if berth {
        berth_bin_dir()
    } else {
        PathBuf::from(REFERENCE_PLUGINS)
    };
    let c = CniClient::new(vec![bin], t.cache_dir()).with_timeout(Duration::from_secs(60));
    let ns = t.make_netns("pm");
    let (hp_all, hp_lo) = (host_port(slot, 0), host_port(slot, 1));
    let att = Attachment::new("pod-pm", ns.path(), "eth0")
        .unwrap()
        .with_capabilities(CapabilityArgs {
            port_mappings: vec![
                mapping(hp_all, 8080, Protocol::Tcp, None),
                mapping(hp_all, 8053, Protocol::Udp, None),
                mapping(hp_lo, 8081, Protocol::Tcp, Some("127.0.0.1")),
            ],
            ..Default::default()
        });
    let r = c.add(&net, &att).unwrap();
    // Whatever happens next, the attachment is deleted (the reference plugin's iptables
    // chains are not in anything TestNet removes).
    let _detach = support::Detach(&c, &net, att.clone());
    if berth {
        // Debian's portmap 1.1 fails CHECK on a pod without IPv6 ("could not check ipv6
        // dnat: chain CNI-DN-… not found"), so only berth's is checked.
        c.check(&net, &att).unwrap();
    }
    let pod = r.sandbox_ip().unwrap();
    let gw = r.ips[0].gateway.unwrap();
    let loopback: IpAddr = "127.0.0.1".parse().unwrap();
    if berth {
        let rules = t.nft_rules();
        assert!(
            rules.contains(&format!("dport {hp_all} dnat ip to {pod}:8080")),
            "{rules}"
        );
    }

    let tcp = |host: IpAddr, port: u16, container: u16| {
        let server = serve_echo_once(
            listen_in(ns.path(), SocketAddr::new(pod, container)),
            Duration::from_secs(5),
        );
        let res = connect_here(SocketAddr::new(host, port));
        if res.is_err() {
            // Unblock the server: connect to it directly from inside the pod.
            let _ = connect_from(ns.path(), SocketAddr::new(pod, container));
        }
        server.join().unwrap();
        res
    };
    for host in [loopback, gw] {
        assert_eq!(
            tcp(host, hp_all, 8080).unwrap(),
            "hello\n",
            "TCP {host}:{hp_all}"
        );
        let server = udp_echo_once_in(ns.path(), SocketAddr::new(pod, 8053));
        assert_eq!(
            udp_round_trip(SocketAddr::new(host, hp_all)).unwrap(),
            "ping\n",
            "UDP {host}:{hp_all}"
        );
        server.join().unwrap();
    }
    // hostIP 127.0.0.1: forwarded there, not at the bridge address.
    assert_eq!(tcp(loopback, hp_lo, 8081).unwrap(), "hello\n");
    assert!(
        tcp(gw, hp_lo, 8081).is_err(),
        "hostIP mapping answered on {gw}"
    );
    // Hairpin: the pod reaches itself through the host port.
    let server = serve_echo_once(
        listen_in(ns.path(), SocketAddr::new(pod, 8080)),
        Duration::from_secs(5),
    );
    assert_eq!(
        connect_from(ns.path(), SocketAddr::new(gw, hp_all)).unwrap(),
        "hello\n"
    );
    server.join().unwrap();

    c.del(&net, &att).unwrap();
    c.del(&net, &att).unwrap();
    if berth {
        assert!(!t.nft_table_exists(), "{}", t.nft_rules());
    }
    assert!(
        connect_here(SocketAddr::new(loopback, hp_all)).is_err(),
        "still forwarded after DEL"
    );
    assert!(t.bridge_ports_settled().is_empty());
    assert!(t.allocations().is_empty(), "{:?}", t.allocations());
}

#[test]
fn berth_portmap_forwards_tcp_and_udp_from_localhost_and_the_bridge_address() {
    if need_root("berth_portmap_forwards_tcp_and_udp_from_localhost_and_the_bridge_address") {
        scenario(31, true);
    }
}

#[test]
fn reference_portmap_forwards_tcp_and_udp_from_localhost_and_the_bridge_address() {
    let name = "reference_portmap_forwards_tcp_and_udp_from_localhost_and_the_bridge_address";
    if need_root(name) && need_reference_plugins(name) {
        scenario(32, false);
    }
}
