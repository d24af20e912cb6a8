//! The client against fake plugins (shell scripts that record what they were given): no root
//! needed. Checks the environment, stdin injection, prevResult chaining, capabilities, DEL
//! order and replay from the cache, errors, timeouts, STATUS and GC.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cni::{
    Attachment, AttachmentKey, CapabilityArgs, ClientError, CniClient, NetworkConfigList, PodRef,
    PortMapping, Protocol,
};
use serde_json::Value;

struct Fake {
    _tmp: tempfile::TempDir,
    bin: PathBuf,
    log: PathBuf,
    cache: PathBuf,
}

impl Fake {
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let bin = tmp.path().join("bin");
        let log = tmp.path().join("log");
        fs::create_dir_all(&bin).unwrap();
        fs::create_dir_all(&log).unwrap();
        Fake {
            bin,
            log,
            cache: tmp.path().join("cache"),
            _tmp: tmp,
        }
    }

    /// A plugin that logs its call and stdin, then runs `body` (which may print a result).
    fn plugin(&self, name: &str, body: &str) {
        let script = format!(
            "#!/bin/sh\nLOG={log}\nn=$(ls $LOG | wc -l)\nIN=$LOG/$n-{name}-$CNI_COMMAND\ncat > $IN.stdin\n\
             env | grep '^CNI_' | sort > $IN.env\n{body}\n",
            log = self.log.display()
        );
        let path = self.bin.join(name);
        let tmp = self.bin.join(format!(".{name}.tmp"));
        fs::write(&tmp, script).unwrap();
        fs::set_permissions(&tmp, fs::Permissions::from_mode(0o755)).unwrap();
        fs::rename(&tmp, &path).unwrap();
    }

    /// A plugin that echoes its prevResult with one more interface named after itself.
    fn chaining_plugin(&self, name: &str) {
        self.plugin(
            name,
            &format!(
                r#"case $CNI_COMMAND in ADD) python3 -c '
import json,sys
c=json.load(open(sys.argv[1]))
r=c.get("prevResult") or {{"cniVersion":c["cniVersion"],"interfaces":[],"ips":[]}}
r["interfaces"].append({{"name":"{name}"}})
if "{name}"=="first": r["ips"].append({{"address":"10.9.0.5/24","interface":0}})
print(json.dumps(r))' $IN.stdin;; esac"#
            ),
        );
    }

    fn client(&self) -> CniClient {
        CniClient::new(vec![self.bin.clone()], &self.cache).with_timeout(Duration::from_secs(10))
    }

    /// Calls in order, without the VERSION queries: (plugin, command, stdin json, env).
    fn calls(&self) -> Vec<(String, String, Value, String)> {
        self.all_calls()
            .into_iter()
            .filter(|c| c.1 != "VERSION")
            .collect()
    }

    /// Every call in order, VERSION queries included.
    fn all_calls(&self) -> Vec<(String, String, Value, String)> {
        let mut names: Vec<_> = fs::read_dir(&self.log)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.ends_with(".stdin"))
            .collect();
        names.sort_by_key(|n| n.split('-').next().unwrap().parse::<u32>().unwrap());
        names
            .iter()
            .map(|n| {
                let stem = n.trim_end_matches(".stdin");
                let mut parts = stem.splitn(3, '-');
                parts.next();
                let plugin = parts.next().unwrap().to_owned();
                let cmd = parts.next().unwrap().to_owned();
                let stdin = serde_json::from_slice(&fs::read(self.log.join(n)).unwrap()).unwrap();
                let env = fs::read_to_string(self.log.join(format!("{stem}.env"))).unwrap();
                (plugin, cmd, stdin, env)
            })
            .collect()
    }

    fn clear_log(&self) {
        for e in fs::read_dir(&self.log).unwrap() {
            fs::remove_file(e.unwrap().path()).unwrap();
        }
    }
}

fn net(version: &str, plugins: &str) -> NetworkConfigList {
    NetworkConfigList::from_conflist_bytes(
        format!(r#"{{"cniVersion":"{version}","name":"fakenet","plugins":[{plugins}]}}"#)
            .as_bytes(),
    )
    .unwrap()
}

fn attachment() -> Attachment {
    Attachment::new("sandbox1", "/run/berth/netns/sandbox1", "eth0")
        .unwrap()
        .with_pod(PodRef {
            namespace: "ns".into(),
            name: "pod".into(),
            uid: "uid-1".into(),
        })
        .with_capabilities(CapabilityArgs {
            port_mappings: vec![PortMapping {
                host_port: 8080,
                container_port: 80,
                protocol: Protocol::Tcp,
                host_ip: None,
            }],
            ..Default::default()
        })
}

fn has_python() -> bool {
    Path::new("/usr/bin/python3").exists()
}

#[test]
fn add_chains_results_and_del_replays_the_cache_in_reverse() {
    if !has_python() {
        eprintln!("skipped: needs python3 for the fake plugins");
        return;
    }
    let f = Fake::new();
    f.chaining_plugin("first");
    f.chaining_plugin("second");
    let n = net(
        "1.0.0",
        r#"{"type":"first","foo":1},{"type":"second","capabilities":{"portMappings":true}}"#,
    );
    let att = attachment();
    let client = f.client();
    let res = client.add(&n, &att).unwrap();
    let names: Vec<_> = res.interfaces.iter().map(|i| i.name.as_str()).collect();
    assert_eq!(names, ["first", "second"]);
    assert_eq!(res.sandbox_ip(), Some("10.9.0.5".parse().unwrap()));

    let calls = f.calls();
    assert_eq!(calls.len(), 2);
    let (p, cmd, stdin, env) = &calls[0];
    assert_eq!((p.as_str(), cmd.as_str()), ("first", "ADD"));
    assert_eq!(stdin["name"], "fakenet");
    assert_eq!(stdin["cniVersion"], "1.0.0");
    assert_eq!(stdin["foo"], 1);
    assert!(stdin.get("prevResult").is_none());
    assert!(
        stdin.get("runtimeConfig").is_none(),
        "first declared no capability"
    );
    for want in [
        "CNI_COMMAND=ADD",
        "CNI_CONTAINERID=sandbox1",
        "CNI_NETNS=/run/berth/netns/sandbox1",
        "CNI_IFNAME=eth0",
        "CNI_ARGS=IgnoreUnknown=1;K8S_POD_NAMESPACE=ns;K8S_POD_NAME=pod;K8S_POD_INFRA_CONTAINER_ID=sandbox1;K8S_POD_UID=uid-1",
        &format!("CNI_PATH={}", f.bin.display()),
    ] {
        assert!(env.lines().any(|l| l == want), "missing {want} in\n{env}");
    }
    let (_, _, stdin, _) = &calls[1];
    assert_eq!(stdin["prevResult"]["interfaces"][0]["name"], "first");
    assert_eq!(stdin["runtimeConfig"]["portMappings"][0]["hostPort"], 8080);

    // CHECK gets the cached result.
    f.clear_log();
    client.check(&n, &att).unwrap();
    let calls = f.calls();
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[0].2["prevResult"]["interfaces"][1]["name"], "second");

    // DEL with a *different* config (and no capabilities given) still replays the cached one.
    f.clear_log();
    let changed = net("1.0.0", r#"{"type":"other"}"#);
    let bare = Attachment::new("sandbox1", "/run/berth/netns/sandbox1", "eth0").unwrap();
    client.del(&changed, &bare).unwrap();
    let calls = f.calls();
    let order: Vec<_> = calls.iter().map(|c| (c.0.as_str(), c.1.as_str())).collect();
    assert_eq!(order, [("second", "DEL"), ("first", "DEL")]);
    assert_eq!(calls[0].2["prevResult"]["interfaces"][1]["name"], "second");
    assert_eq!(
        calls[0].2["runtimeConfig"]["portMappings"][0]["containerPort"],
        80
    );
    assert!(
        calls[0].3.contains("K8S_POD_NAME=pod"),
        "cached CNI_ARGS: {}",
        calls[0].3
    );
    assert!(client.cache().find(&att.key()).unwrap().is_none());

    // A second DEL runs the given chain without prevResult and succeeds.
    f.clear_log();
    client.del(&n, &att).unwrap();
    let calls = f.calls();
    assert_eq!(calls.len(), 2);
    assert!(calls.iter().all(|c| c.2.get("prevResult").is_none()));

    // CHECK after DEL: a clear error.
    let err = client.check(&n, &att).unwrap_err().to_string();
    assert!(
        err.contains("no attachment of container \"sandbox1\""),
        "{err}"
    );
}

#[test]
fn plugin_error_object_is_surfaced_and_add_is_rolled_back() {
    if !has_python() {
        eprintln!("skipped: needs python3 for the fake plugins");
        return;
    }
    let f = Fake::new();
    f.chaining_plugin("first");
    f.plugin(
        "broken",
        r#"case $CNI_COMMAND in ADD) echo '{"cniVersion":"1.0.0","code":7,"msg":"no subnet","details":"ipam.ranges is empty"}'; exit 1;; esac"#,
    );
    let n = net("1.0.0", r#"{"type":"first"},{"type":"broken"}"#);
    let client = f.client();
    let err = client.add(&n, &attachment()).unwrap_err();
    let cni = err.cni_error().expect("plugin error object");
    assert_eq!(cni.code, 7);
    assert_eq!(
        err.to_string(),
        "CNI plugin \"broken\" (ADD) failed: code 7 (invalid network config): no subnet; ipam.ranges is empty"
    );
    let order: Vec<_> = f
        .calls()
        .into_iter()
        .map(|c| format!("{}:{}", c.0, c.1))
        .collect();
    assert_eq!(
        order,
        ["first:ADD", "broken:ADD", "broken:DEL", "first:DEL"]
    );
    assert!(client.cache().find(&attachment().key()).unwrap().is_none());
}

#[test]
fn failure_without_error_object_carries_stderr() {
    let f = Fake::new();
    f.plugin("crashy", "echo 'panic: boom' >&2; exit 2");
    let err = f
        .client()
        .add(&net("1.0.0", r#"{"type":"crashy"}"#), &attachment())
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("CNI plugin \"crashy\" (ADD) exited with exit status: 2: panic: boom"),
        "{err}"
    );
}

#[test]
fn bad_result_and_missing_plugin_are_clear() {
    let f = Fake::new();
    f.plugin("liar", "echo 'not json'");
    let err = f
        .client()
        .add(&net("1.0.0", r#"{"type":"liar"}"#), &attachment())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("\"liar\" (ADD) printed an invalid result"),
        "{err}"
    );
    let err = f
        .client()
        .add(&net("1.0.0", r#"{"type":"nowhere"}"#), &attachment())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(&format!("\"nowhere\" not found in {}", f.bin.display())),
        "{err}"
    );
}

#[test]
fn slow_plugin_is_killed_at_the_timeout() {
    let f = Fake::new();
    f.plugin("slow", "exec sleep 30");
    let client = f.client().with_timeout(Duration::from_millis(300));
    let started = Instant::now();
    let err = client
        .status(&net("1.1.0", r#"{"type":"slow"}"#))
        .unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert!(matches!(err, ClientError::Timeout { .. }), "{err}");
    assert!(err.to_string().contains("timed out after 300ms"), "{err}");
}

#[test]
fn status_and_gc_for_1_1_networks() {
    if !has_python() {
        eprintln!("skipped: needs python3 for the fake plugins");
        return;
    }
    let f = Fake::new();
    f.chaining_plugin("first");
    let n = net("1.1.0", r#"{"type":"first"}"#);
    let client = f.client();
    client.status(&n).unwrap();
    let calls = f.calls();
    assert_eq!(calls[0].1, "STATUS");
    assert!(!calls[0].3.contains("CNI_CONTAINERID"), "{}", calls[0].3);

    let keep = attachment();
    let stale = Attachment::new("sandbox2", "/run/x/sandbox2", "eth0").unwrap();
    client.add(&n, &keep).unwrap();
    client.add(&n, &stale).unwrap();
    f.clear_log();
    client.gc(&n, &[keep.key()]).unwrap();
    let calls = f.calls();
    let order: Vec<_> = calls.iter().map(|c| c.1.as_str()).collect();
    assert_eq!(order, ["DEL", "GC"]);
    assert!(calls[0].3.contains("CNI_CONTAINERID=sandbox2"));
    assert_eq!(
        calls[1].2["cni.dev/valid-attachments"],
        serde_json::json!([{"containerID":"sandbox1","ifname":"eth0"}])
    );
    let left: Vec<AttachmentKey> = client
        .cache()
        .list("fakenet")
        .unwrap()
        .iter()
        .map(|e| e.key())
        .collect();
    assert_eq!(left, [keep.key()]);

    // 1.0 networks: STATUS only checks the binaries exist, GC only cleans the cache.
    f.clear_log();
    client.status(&net("1.0.0", r#"{"type":"first"}"#)).unwrap();
    assert!(f.calls().is_empty());
    let err = client
        .status(&net("1.0.0", r#"{"type":"absent"}"#))
        .unwrap_err();
    assert!(matches!(err, ClientError::PluginNotFound { .. }), "{err}");
}

#[test]
fn old_versions_skip_check_and_prev_result_on_del() {
    if !has_python() {
        eprintln!("skipped: needs python3 for the fake plugins");
        return;
    }
    let f = Fake::new();
    f.chaining_plugin("first");
    let n = net("0.3.1", r#"{"type":"first"}"#);
    let client = f.client();
    client.add(&n, &attachment()).unwrap();
    f.clear_log();
    client.check(&n, &attachment()).unwrap();
    assert!(f.calls().is_empty());
    client.del(&n, &attachment()).unwrap();
    let calls = f.calls();
    assert_eq!(calls.len(), 1);
    assert!(calls[0].2.get("prevResult").is_none());
}

#[test]
fn add_asks_version_once_and_refuses_a_plugin_without_the_networks_version() {
    let f = Fake::new();
    f.plugin(
        "old",
        r#"case $CNI_COMMAND in
VERSION) echo '{"cniVersion":"0.4.0","supportedVersions":["0.3.0","0.3.1","0.4.0"]}';;
ADD) echo '{"cniVersion":"0.4.0","interfaces":[],"ips":[]}';;
esac"#,
    );
    let c = f.client();
    let err = c
        .add(&net("1.0.0", r#"{"type":"old"}"#), &attachment())
        .unwrap_err();
    assert!(
        matches!(err, ClientError::IncompatibleVersion { .. }),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "CNI plugin \"old\" does not support cniVersion 1.0.0 of network \"fakenet\" (it supports 0.3.0, 0.3.1, 0.4.0)"
    );
    // No ADD was attempted (only the rollback DEL ran).
    let cmds: Vec<String> = f.all_calls().into_iter().map(|c| c.1).collect();
    assert_eq!(cmds, ["VERSION", "DEL"]);

    // A version it speaks: ADD goes ahead; VERSION is not asked again (the answer is kept
    // while the binary is unchanged).
    f.clear_log();
    let old = net("0.4.0", r#"{"type":"old"}"#);
    c.add(&old, &attachment()).unwrap();
    c.add(&old, &attachment()).unwrap();
    let cmds: Vec<String> = f.all_calls().into_iter().map(|c| c.1).collect();
    assert_eq!(cmds, ["ADD", "ADD"]);
}
