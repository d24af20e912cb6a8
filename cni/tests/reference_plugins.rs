//! berth's client driving Debian's reference plugins (bridge + host-local + portmap +
//! loopback): two namespaces talk over a test-owned bridge, DEL cleans up (also after the netns
//! vanished), errors are clear, concurrent ADDs get distinct addresses. Root only.
//!
//! The bridge has no address and the pods no default route: nothing can leave the test's
//! subnet.

mod support;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use cni::{Attachment, ClientError, CniClient, CniResult, NetworkConfigList};
use support::{need_reference_plugins, need_root, tcp_round_trip, TestNet, REFERENCE_PLUGINS};

fn ready(test: &str) -> bool {
    need_root(test) && need_reference_plugins(test)
}

fn conflist(t: &TestNet) -> NetworkConfigList {
    let doc = serde_json::json!({
        "cniVersion": "1.0.0",
        "name": format!("{}-net", t.id),
        "plugins": [
            {
                "type": "bridge", "bridge": t.bridge, "isGateway": false, "ipMasq": false,
                "hairpinMode": true,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{ "subnet": t.subnet() }]],
                    "dataDir": t.ipam_dir(),
                }
            },
            { "type": "portmap", "capabilities": { "portMappings": true } },
            { "type": "loopback" }
        ]
    });
    NetworkConfigList::from_value(doc).expect("test conflist")
}

fn client(t: &TestNet) -> CniClient {
    CniClient::new(vec![PathBuf::from(REFERENCE_PLUGINS)], t.cache_dir())
        .with_timeout(Duration::from_secs(60))
}

fn sandbox_ip(r: &CniResult) -> IpAddr {
    r.sandbox_ip().expect("result has a sandbox address")
}

#[test]
fn two_pods_talk_over_the_bridge_and_del_cleans_up() {
    if !ready("two_pods_talk_over_the_bridge_and_del_cleans_up") {
        return;
    }
    let mut t = TestNet::new(1);
    let net = conflist(&t);
    let c = client(&t);
    let ns_a = t.make_netns("a");
    let ns_b = t.make_netns("b");
    let att_a = Attachment::new("pod-a", ns_a.path(), "eth0").unwrap();
    let att_b = Attachment::new("pod-b", ns_b.path(), "eth0").unwrap();
    let ra = c.add(&net, &att_a).unwrap();
    // CHECK before B joins: the reference bridge compares the bridge's MAC, which changes as
    // ports are added.
    c.check(&net, &att_a).unwrap();
    let rb = c.add(&net, &att_b).unwrap();

    // Result shape: bridge, host veth, sandbox eth0; one address on eth0; no routes.
    assert_eq!(ra.interfaces.len(), 3, "{ra:?}");
    assert_eq!(ra.interfaces[0].name, t.bridge);
    assert!(ra.interfaces[0].sandbox.is_empty());
    assert_eq!(ra.interfaces[2].name, "eth0");
    assert_eq!(ra.interfaces[2].sandbox, ns_a.path().to_string_lossy());
    assert_eq!(ra.ips.len(), 1);
    assert_eq!(ra.ips[0].interface, Some(2));
    assert_eq!(ra.ips[0].address.prefix_len(), 24);
    assert!(ra.routes.is_empty(), "{:?}", ra.routes);
    let (ip_a, ip_b) = (sandbox_ip(&ra), sandbox_ip(&rb));
    assert_ne!(ip_a, ip_b);
    assert!(
        ip_a.to_string().starts_with(&t.prefix),
        "{ip_a} in {}",
        t.subnet()
    );
    assert_eq!(t.bridge_ports().len(), 2, "{:?}", t.bridge_ports());

    // B → A over the bridge, and A → A over its loopback (set up by the loopback plugin).
    let echoed = tcp_round_trip(ns_b.path(), ns_a.path(), SocketAddr::new(ip_a, 7001)).unwrap();
    assert_eq!(echoed, "hello\n");
    let lo = SocketAddr::new("127.0.0.1".parse().unwrap(), 7002);
    assert_eq!(
        tcp_round_trip(ns_a.path(), ns_a.path(), lo).unwrap(),
        "hello\n"
    );

    c.del(&net, &att_a).unwrap();
    c.del(&net, &att_b).unwrap();
    let ports = t.bridge_ports_settled();
    assert!(ports.is_empty(), "{ports:?}");
    assert!(t.allocations().is_empty(), "{:?}", t.allocations());
    assert!(c.cache().list(net.name()).unwrap().is_empty());
    // DEL again: idempotent.
    c.del(&net, &att_a).unwrap();
    // The address left A's namespace with its eth0.
    let bound = cni::netns::run_in(ns_a.path(), move || {
        std::net::TcpListener::bind(SocketAddr::new(ip_a, 7003)).is_ok()
    })
    .unwrap();
    assert!(!bound, "{ip_a} still assigned in pod A after DEL");
}

#[test]
fn del_succeeds_after_the_netns_vanished() {
    if !ready("del_succeeds_after_the_netns_vanished") {
        return;
    }
    let mut t = TestNet::new(2);
    let net = conflist(&t);
    let c = client(&t);
    let ns = t.make_netns("gone");
    let att = Attachment::new("pod-gone", ns.path(), "eth0").unwrap();
    let r = c.add(&net, &att).unwrap();
    assert_eq!(t.allocations(), vec![sandbox_ip(&r)]);
    t.netns.remove("gone").unwrap();
    c.del(&net, &att).unwrap();
    assert!(t.allocations().is_empty(), "{:?}", t.allocations());
    assert!(t.bridge_ports_settled().is_empty());
    c.del(&net, &att).unwrap();
}

#[test]
fn plugin_config_errors_name_the_plugin_and_cause() {
    if !ready("plugin_config_errors_name_the_plugin_and_cause") {
        return;
    }
    let mut t = TestNet::new(3);
    let doc = serde_json::json!({
        "cniVersion": "1.0.0", "name": format!("{}-bad", t.id),
        "plugins": [{
            "type": "bridge", "bridge": t.bridge,
            "ipam": { "type": "host-local", "ranges": [[{ "subnet": "10.300.0.0/24" }]],
                      "dataDir": t.ipam_dir() }
        }]
    });
    let net = NetworkConfigList::from_value(doc).unwrap();
    let ns = t.make_netns("bad");
    let att = Attachment::new("pod-bad", ns.path(), "eth0").unwrap();
    let err = client(&t).add(&net, &att).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, ClientError::Plugin { .. }), "{msg}");
    assert!(
        msg.starts_with("CNI plugin \"bridge\" (ADD) failed: code "),
        "{msg}"
    );
    assert!(msg.contains("10.300.0.0/24"), "{msg}");
    // The teardown after the failed ADD fails the same way (host-local cannot parse the range
    // on DEL either), so the attachment stays cached and DEL keeps saying why.
    let del = client(&t).del(&net, &att).unwrap_err().to_string();
    assert!(
        del.starts_with("CNI plugin \"bridge\" (DEL) failed: code "),
        "{del}"
    );
    assert!(client(&t).cache().find(&att.key()).unwrap().is_some());

    // An invalid conflist file: the error names the file and the cause.
    let dir = t.dir.path().join("net.d");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("10-bad.conflist"),
        r#"{"cniVersion":"1.0.0","name":"x","plugins":[{"type":"bridge"},{"ipam":{}}]}"#,
    )
    .unwrap();
    let msg = NetworkConfigList::load_dir(&dir).unwrap_err().to_string();
    assert!(
        msg.contains("10-bad.conflist") && msg.contains("plugin 1 has an invalid type \"\""),
        "{msg}"
    );
}

#[test]
fn fifty_concurrent_adds_get_fifty_distinct_addresses() {
    if !ready("fifty_concurrent_adds_get_fifty_distinct_addresses") {
        return;
    }
    const N: usize = 50;
    let mut t = TestNet::new(4);
    let net = conflist(&t);
    let c = client(&t);
    let atts: Vec<Attachment> = (0..N)
        .map(|i| {
            let ns = t.make_netns(&format!("p{i}"));
            Attachment::new(format!("pod-{i}"), ns.path(), "eth0").unwrap()
        })
        .collect();
    let ips: Vec<IpAddr> = std::thread::scope(|s| {
        let handles: Vec<_> = atts.iter().map(|a| s.spawn(|| c.add(&net, a))).collect();
        handles
            .into_iter()
            .map(|h| sandbox_ip(&h.join().unwrap().unwrap()))
            .collect()
    });
    let mut distinct = ips.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), N, "{ips:?}");
    assert_eq!(t.allocations(), distinct);
    std::thread::scope(|s| {
        for a in &atts {
            s.spawn(|| c.del(&net, a).unwrap());
        }
    });
    assert!(t.allocations().is_empty(), "{:?}", t.allocations());
    let ports = t.bridge_ports_settled();
    assert!(ports.is_empty(), "{ports:?}");
}
