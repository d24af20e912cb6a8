//! berth's bridge beyond the basics: ipMasq (traffic leaving the pod subnet is masqueraded,
//! traffic within it is not; rules per attachment, table gone with the last), IPv6 through
//! the bridge (two pods on a ULA /64, the gateway), hairpin mode, CHECK that notices a missing
//! address, and GC of an attachment the runtime forgot. Root only.
//!
//! The masquerade test routes pods to a test-made "outside" namespace only: a forward-chain
//! guard of the test drops anything else leaving the pod subnet.

mod support;

use std::io::Write;
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cni::{Attachment, CniClient, NetworkConfigList};
use support::{
    connect_from, listen_in, need_ipv6, need_root, run_host, run_in_ns, serve_echo_once,
    tcp_round_trip, Detach, TestNet,
};

fn berth_bin_dir() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_berth-cni-bridge"))
        .parent()
        .unwrap()
        .to_owned()
}

fn client(t: &TestNet) -> CniClient {
    CniClient::new(vec![berth_bin_dir()], t.cache_dir()).with_timeout(Duration::from_secs(30))
}

/// Accepts one connection (bounded) on a thread and answers with the peer's address.
fn serve_peer_once(l: TcpListener) -> std::thread::JoinHandle<Option<IpAddr>> {
    std::thread::spawn(move || {
        l.set_nonblocking(true).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok((mut s, peer)) = l.accept() {
                let _ = s.write_all(b"hello\n");
                return Some(peer.ip());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    })
}

fn peer_seen(from: &Path, to: &Path, addr: SocketAddr) -> Option<IpAddr> {
    let server = serve_peer_once(listen_in(to, addr));
    let _ = connect_from(from, addr);
    server.join().unwrap()
}

#[test]
fn ip_masq_masquerades_only_traffic_leaving_the_pod_subnet() {
    if !need_root("ip_masq_masquerades_only_traffic_leaving_the_pod_subnet") {
        return;
    }
    let mut t = TestNet::new(33);
    let outside_prefix = t.prefix.replace(".33", ".83");
    let net = NetworkConfigList::from_value(serde_json::json!({
        "cniVersion": "1.1.0", "name": format!("{}-net", t.id),
        "plugins": [{
            "type": "berth-cni-bridge", "bridge": t.bridge, "isGateway": true, "ipMasq": true,
            "nftTable": t.nft_table(),
            "ipam": { "type": "berth-cni-host-local", "ranges": [[{ "subnet": t.subnet() }]],
                      "routes": [{ "dst": "0.0.0.0/0" }], "dataDir": t.ipam_dir() }
        }]
    }))
    .unwrap();
    // Guard: nothing from the pod subnet is forwarded anywhere but the outside namespace.
    let guard = format!("berth-guard-{}", t.id);
    t.own_nft_table(&guard);
    run_host(&[
        "nft",
        &format!(
            "add table inet {guard}; add chain inet {guard} guard {{ type filter hook forward priority 0; }}; \
             add rule inet {guard} guard ip saddr {} ip daddr != {{ {}, {outside_prefix}.0/24 }} drop",
            t.subnet(),
            t.subnet()
        ),
    ]);
    // The outside: a namespace behind a host veth, with no route back to the pods.
    let out = t.make_netns("out");
    let host_if = format!("o{}", t.id);
    t.own_link(&host_if);
    run_in_ns(
        out.path(),
        &[
            "ip",
            "link",
            "add",
            "eth0",
            "type",
            "veth",
            "peer",
            "name",
            &host_if,
            "netns",
            &std::process::id().to_string(),
        ],
    );
    run_in_ns(
        out.path(),
        &[
            "ip",
            "addr",
            "add",
            &format!("{outside_prefix}.2/24"),
            "dev",
            "eth0",
        ],
    );
    run_in_ns(out.path(), &["ip", "link", "set", "eth0", "up"]);
    run_host(&[
        "ip",
        "addr",
        "add",
        &format!("{outside_prefix}.1/24"),
        "dev",
        &host_if,
    ]);
    run_host(&["ip", "link", "set", &host_if, "up"]);

    let c = client(&t);
    let ns_a = t.make_netns("a");
    let ns_b = t.make_netns("b");
    let att_a = Attachment::new("pod-a", ns_a.path(), "eth0").unwrap();
    let att_b = Attachment::new("pod-b", ns_b.path(), "eth0").unwrap();
    let ra = c.add(&net, &att_a).unwrap();
    let _da = Detach(&c, &net, att_a.clone());
    let rb = c.add(&net, &att_b).unwrap();
    let _db = Detach(&c, &net, att_b.clone());
    c.check(&net, &att_a).unwrap();
    let (ip_a, ip_b) = (ra.sandbox_ip().unwrap(), rb.sandbox_ip().unwrap());
    let rules = t.nft_rules();
    assert_eq!(rules.matches("masquerade").count(), 2, "{rules}");
    assert!(
        rules.contains(&format!("ip saddr {ip_a} ip daddr != {}", t.subnet())),
        "{rules}"
    );

    // Within the subnet: B's own address.
    assert_eq!(
        peer_seen(ns_b.path(), ns_a.path(), SocketAddr::new(ip_a, 7301)),
        Some(ip_b)
    );
    // Leaving it: the host's address on the way out.
    let outside: IpAddr = format!("{outside_prefix}.2").parse().unwrap();
    let host_out: IpAddr = format!("{outside_prefix}.1").parse().unwrap();
    assert_eq!(
        peer_seen(ns_a.path(), out.path(), SocketAddr::new(outside, 7302)),
        Some(host_out)
    );

    // DEL of A keeps B's rule; DEL of the last one removes the table.
    c.del(&net, &att_a).unwrap();
    let rules = t.nft_rules();
    assert_eq!(rules.matches("masquerade").count(), 1, "{rules}");
    assert!(rules.contains(&ip_b.to_string()), "{rules}");

    // GC of an attachment the runtime forgot (cache entry lost): rule, veth and address go.
    c.cache().remove(net.name(), &att_b.key()).unwrap();
    c.gc(&net, &[]).unwrap();
    assert!(!t.nft_table_exists(), "{}", t.nft_rules());
    assert!(
        t.bridge_ports_settled().is_empty(),
        "{:?}",
        t.bridge_ports()
    );
    assert!(t.allocations().is_empty(), "{:?}", t.allocations());
}

#[test]
fn two_pods_talk_over_ipv6_on_a_ula_64_with_hairpin_and_check() {
    let name = "two_pods_talk_over_ipv6_on_a_ula_64_with_hairpin_and_check";
    if !need_root(name) || !need_ipv6(name) {
        return;
    }
    let mut t = TestNet::new(34);
    let net = NetworkConfigList::from_value(serde_json::json!({
        "cniVersion": "1.0.0", "name": format!("{}-net", t.id),
        "plugins": [{
            "type": "berth-cni-bridge", "bridge": t.bridge, "isGateway": true, "hairpinMode": true,
            "ipam": { "type": "berth-cni-host-local",
                      "ranges": [[{ "subnet": t.subnet() }], [{ "subnet": t.subnet6() }]],
                      "dataDir": t.ipam_dir() }
        }]
    }))
    .unwrap();
    let c = client(&t);
    let ns_a = t.make_netns("a");
    let ns_b = t.make_netns("b");
    let att_a = Attachment::new("pod-a", ns_a.path(), "eth0").unwrap();
    let att_b = Attachment::new("pod-b", ns_b.path(), "eth0").unwrap();
    let ra = c.add(&net, &att_a).unwrap();
    let _da = Detach(&c, &net, att_a.clone());
    let rb = c.add(&net, &att_b).unwrap();
    let _db = Detach(&c, &net, att_b.clone());
    let v6 = |r: &cni::CniResult| {
        r.ips
            .iter()
            .find(|i| i.address.addr().is_ipv6())
            .cloned()
            .unwrap()
    };
    let (a6, b6) = (v6(&ra), v6(&rb));
    assert_eq!(a6.address.prefix_len(), 64);
    assert_eq!(a6.interface, Some(2));
    let gw6 = a6.gateway.unwrap();
    assert_eq!(gw6.to_string(), t.subnet6().replace("::/64", "::1"));
    assert_ne!(a6.address.addr(), b6.address.addr());

    // B → A over IPv6, and A → the bridge's IPv6 gateway address on the host.
    let addr_a = SocketAddr::new(a6.address.addr(), 7401);
    assert_eq!(
        tcp_round_trip(ns_b.path(), ns_a.path(), addr_a).unwrap(),
        "hello\n"
    );
    let l = TcpListener::bind((gw6, 0)).unwrap();
    let gw_addr = l.local_addr().unwrap();
    let server = serve_echo_once(l, Duration::from_secs(5));
    assert_eq!(connect_from(ns_a.path(), gw_addr).unwrap(), "hello\n");
    server.join().unwrap();

    // Hairpin mode on the host end of the veth.
    let host_veth = &ra.interfaces[1].name;
    let hairpin =
        std::fs::read_to_string(format!("/sys/class/net/{host_veth}/brport/hairpin_mode")).unwrap();
    assert_eq!(hairpin.trim(), "1");

    // CHECK passes, and notices an address that went away.
    c.check(&net, &att_a).unwrap();
    run_in_ns(
        ns_a.path(),
        &[
            "ip",
            "-6",
            "addr",
            "del",
            &a6.address.to_string(),
            "dev",
            "eth0",
        ],
    );
    let err = c.check(&net, &att_a).unwrap_err().to_string();
    assert!(
        err.contains(&format!("bridge: address {} missing on eth0", a6.address)),
        "{err}"
    );

    c.del(&net, &att_a).unwrap();
    c.del(&net, &att_b).unwrap();
    assert!(t.bridge_ports_settled().is_empty());
    assert!(t.allocations().is_empty(), "{:?}", t.allocations());
}
