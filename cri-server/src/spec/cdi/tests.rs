//! CDI injection, end to end through `container_spec`, with spec files written into temp dirs.

use std::path::{Path, PathBuf};

use cri_api::v1 as cri;
use oci_spec::runtime::{LinuxDeviceType, Mount, Spec};

use super::*;
use crate::spec::container_spec;
use crate::spec::test_support::{container_input, idmap};

/// A spec dir holding `files` (name, text).
fn spec_dir(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in files {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    dir
}

/// A container asking for `devices` by field and `annotated` by one annotation, with `dirs` as
/// the spec dirs.
fn input(
    sandbox_dir: &Path,
    dirs: &[&Path],
    devices: &[&str],
    annotated: &[&str],
) -> crate::spec::ContainerSpecInput {
    let mut input = container_input(sandbox_dir);
    input.host.cdi_spec_dirs = dirs.iter().map(|d| d.to_path_buf()).collect();
    input.config.cdi_devices = devices
        .iter()
        .map(|d| cri::CdiDevice {
            name: d.to_string(),
        })
        .collect();
    if !annotated.is_empty() {
        input
            .config
            .annotations
            .insert("cdi.k8s.io/test".into(), annotated.join(","));
    }
    input
}

/// The spec of a container asking for `devices` from `dirs`, or the error's text.
fn inject(dirs: &[&Path], devices: &[&str], annotated: &[&str]) -> Result<Spec, String> {
    let sandbox = tempfile::tempdir().unwrap();
    container_spec(&input(sandbox.path(), dirs, devices, annotated)).map_err(|e| {
        assert!(matches!(e, SpecError::Invalid { .. }), "{e:?}");
        e.to_string()
    })
}

fn env(spec: &Spec) -> Vec<String> {
    spec.process().as_ref().unwrap().env().clone().unwrap()
}

fn mount<'a>(spec: &'a Spec, dest: &str) -> Option<&'a Mount> {
    spec.mounts()
        .iter()
        .flatten()
        .find(|m| m.destination() == Path::new(dest))
}

fn json_spec(mount_source: &Path) -> String {
    serde_json::json!({
        "cdiVersion": "0.7.0",
        "kind": "vendor.example/null",
        "containerEdits": {
            "env": ["CDI_SPEC=1", "MODE=cdi"],
            "mounts": [{
                "hostPath": mount_source,
                "containerPath": "/opt/vendor",
                "options": ["rbind", "ro", "nosuid"]
            }],
            "hooks": [{
                "hookName": "createContainer",
                "path": "/bin/true",
                "args": ["true", "create"],
                "env": ["HOOK=1"],
                "timeout": 5
            }]
        },
        "devices": [
            {
                "name": "null0",
                "containerEdits": {
                    "deviceNodes": [{"path": "/dev/vendor-null", "hostPath": "/dev/null"}],
                    "env": ["DEVICE=null0"],
                    "additionalGids": [44, 0]
                }
            },
            {
                "name": "zero",
                "containerEdits": {
                    "deviceNodes": [{"path": "/dev/zero", "permissions": "r"}],
                    "hooks": [{"hookName": "poststop", "path": "/bin/true"}]
                }
            }
        ]
    })
    .to_string()
}

#[test]
fn a_json_spec_injects_device_nodes_env_mounts_hooks_and_gids() {
    let source = tempfile::tempdir().unwrap();
    let dir = spec_dir(&[("vendor.json", &json_spec(source.path()))]);
    let spec = inject(
        &[dir.path()],
        &["vendor.example/null=null0", "vendor.example/null=zero"],
        &[],
    )
    .unwrap();

    // Env: appended in order; a key already set (the config's MODE) replaced.
    let env = env(&spec);
    assert!(env.contains(&"CDI_SPEC=1".to_string()), "{env:?}");
    assert!(env.contains(&"DEVICE=null0".to_string()), "{env:?}");
    assert!(env.contains(&"MODE=cdi".to_string()), "{env:?}");
    assert!(!env.contains(&"MODE=test".to_string()), "{env:?}");

    // Device nodes: type, numbers and mode from the host node; allowed in the device cgroup.
    let linux = spec.linux().as_ref().unwrap();
    let devices = linux.devices().clone().unwrap();
    let null = devices
        .iter()
        .find(|d| d.path() == Path::new("/dev/vendor-null"))
        .unwrap();
    assert_eq!(
        (null.typ(), null.major(), null.minor(), null.file_mode()),
        (LinuxDeviceType::C, 1, 3, Some(0o666))
    );
    let zero = devices
        .iter()
        .find(|d| d.path() == Path::new("/dev/zero"))
        .unwrap();
    assert_eq!(
        (zero.typ(), zero.major(), zero.minor()),
        (LinuxDeviceType::C, 1, 5)
    );
    let rules = linux
        .resources()
        .as_ref()
        .unwrap()
        .devices()
        .clone()
        .unwrap();
    let rule = |minor| {
        rules
            .iter()
            .find(|r| r.allow() && r.major() == Some(1) && r.minor() == Some(minor))
            .and_then(|r| r.access().clone())
    };
    assert_eq!(rule(3).as_deref(), Some("rwm"));
    assert_eq!(rule(5).as_deref(), Some("r"));

    // The mount: a bind, its options as given, ordered after its parent.
    let m = mount(&spec, "/opt/vendor").unwrap();
    assert_eq!(m.typ().as_deref(), Some("bind"));
    assert_eq!(m.source().as_deref(), Some(source.path()));
    assert_eq!(m.options().clone().unwrap(), ["rbind", "ro", "nosuid"]);
    let depths: Vec<usize> = spec
        .mounts()
        .iter()
        .flatten()
        .map(|m| m.destination().components().count())
        .collect();
    assert!(depths.windows(2).all(|w| w[0] <= w[1]), "{depths:?}");

    // Hooks: the spec's once, the device's, each in its list.
    let hooks = spec.hooks().as_ref().unwrap();
    let create = hooks.create_container().clone().unwrap();
    assert_eq!(create.len(), 1);
    assert_eq!(create[0].path(), Path::new("/bin/true"));
    assert_eq!(create[0].args().clone().unwrap(), ["true", "create"]);
    assert_eq!(create[0].env().clone().unwrap(), ["HOOK=1"]);
    assert_eq!(create[0].timeout(), Some(5));
    assert_eq!(hooks.poststop().clone().unwrap().len(), 1);

    // Additional GIDs: added (the user's own, 0 here, once); a 0 is ignored.
    let gids = spec
        .process()
        .as_ref()
        .unwrap()
        .user()
        .additional_gids()
        .clone()
        .unwrap();
    assert_eq!(gids, [0, 44]);
}

#[test]
fn a_yaml_spec_requested_by_annotation() {
    let yaml = "\
cdiVersion: 1.0.0
kind: vendor.example/gpu
containerEdits:
  env:
  - GPU_SPEC=1
devices:
- name: '0'
  containerEdits:
    env: [GPU0=yes]
    deviceNodes:
    - path: /dev/gpu0
      hostPath: /dev/null
      permissions: rw
- name: '1'
  containerEdits:
    env: [GPU1=yes]
";
    let dir = spec_dir(&[("gpu.yaml", yaml), ("ignored.txt", "not a spec")]);
    let spec = inject(
        &[dir.path()],
        &[],
        &["vendor.example/gpu=0", "vendor.example/gpu=1"],
    )
    .unwrap();
    let env = env(&spec);
    assert_eq!(env.iter().filter(|e| *e == "GPU_SPEC=1").count(), 1);
    assert!(env.contains(&"GPU0=yes".into()) && env.contains(&"GPU1=yes".into()));
    let linux = spec.linux().as_ref().unwrap();
    assert!(linux
        .devices()
        .iter()
        .flatten()
        .any(|d| d.path() == Path::new("/dev/gpu0") && d.minor() == 3));
}

#[test]
fn requests_come_from_the_field_then_the_annotations_each_once() {
    let mut config = cri::ContainerConfig {
        cdi_devices: vec![cri::CdiDevice {
            name: "vendor.example/gpu=1".into(),
        }],
        ..Default::default()
    };
    for (k, v) in [
        ("cdi.k8s.io/b", "vendor.example/gpu=1,vendor.example/nic=0"),
        ("cdi.k8s.io/a", "vendor.example/gpu=2"),
        ("other.io/x", "not-a-device"),
    ] {
        config.annotations.insert(k.into(), v.into());
    }
    let names: Vec<String> = requests(&config)
        .unwrap()
        .iter()
        .map(|r| r.to_string())
        .collect();
    assert_eq!(
        names,
        [
            "CDI device \"vendor.example/gpu=1\"",
            "CDI device \"vendor.example/gpu=2\" (annotation cdi.k8s.io/a)",
            "CDI device \"vendor.example/nic=0\" (annotation cdi.k8s.io/b)",
        ]
    );
    assert!(requests(&cri::ContainerConfig::default())
        .unwrap()
        .is_empty());
}

fn env_count(spec: &Spec, entry: &str) -> usize {
    env(spec).iter().filter(|e| *e == entry).count()
}

fn simple(kind: &str, device: &str, env: &str) -> String {
    serde_json::json!({
        "cdiVersion": "0.6.0",
        "kind": kind,
        "devices": [{"name": device, "containerEdits": {"env": [env]}}]
    })
    .to_string()
}

#[test]
fn later_dirs_override_and_duplicates_in_one_dir_are_refused() {
    let a = spec_dir(&[("a.json", &simple("vendor.example/x", "d", "FROM=etc"))]);
    let b = spec_dir(&[("b.yml", &simple("vendor.example/x", "d", "FROM=run"))]);
    let spec = inject(&[a.path(), b.path()], &["vendor.example/x=d"], &[]).unwrap();
    assert_eq!(env_count(&spec, "FROM=run"), 1);
    assert_eq!(env_count(&spec, "FROM=etc"), 0);

    let dup = spec_dir(&[
        ("one.json", &simple("vendor.example/x", "d", "A=1")),
        ("two.yaml", &simple("vendor.example/x", "d", "A=2")),
    ]);
    let err = inject(&[dup.path()], &["vendor.example/x=d"], &[]).unwrap_err();
    assert!(err.contains("vendor.example/x=d"), "{err}");
    assert!(
        err.contains("one.json") && err.contains("two.yaml"),
        "{err}"
    );
    // A later directory settles the conflict of an earlier one.
    let spec = inject(&[dup.path(), b.path()], &["vendor.example/x=d"], &[]).unwrap();
    assert_eq!(env_count(&spec, "FROM=run"), 1);
}

#[test]
fn unknown_and_malformed_devices_are_refused_naming_them() {
    let dir = spec_dir(&[("x.json", &simple("vendor.example/x", "d", "A=1"))]);
    let err = inject(&[dir.path()], &["vendor.example/x=nope"], &[]).unwrap_err();
    assert!(err.starts_with("CDI_devices:"), "{err}");
    assert!(err.contains("\"vendor.example/x=nope\""), "{err}");
    assert!(
        err.contains("unknown CDI device") && err.contains("define d"),
        "{err}"
    );
    let err = inject(&[dir.path()], &[], &["vendor.example/y=0"]).unwrap_err();
    assert!(
        err.contains("\"vendor.example/y=0\" (annotation cdi.k8s.io/test)"),
        "{err}"
    );
    assert!(
        err.contains("no CDI spec of kind vendor.example/y"),
        "{err}"
    );
    for bad in [
        "gpu0",
        "vendor.example=0",
        "vendor.example/gpu",
        "vendor.example/g/x=0",
        "-v/c=0",
    ] {
        let err = inject(&[dir.path()], &[bad], &[]).unwrap_err();
        assert!(err.contains(&format!("{bad:?}")), "{bad}: {err}");
    }
}

#[test]
fn a_broken_spec_of_a_requested_kind_is_refused_others_are_not_read() {
    let dir = spec_dir(&[
        ("good.json", &simple("vendor.example/x", "d", "A=1")),
        (
            "other.json",
            "{\"kind\": \"other.example/y\", \"devices\": 7}",
        ),
    ]);
    // A file of another kind that does not parse is no concern of this container.
    inject(&[dir.path()], &["vendor.example/x=d"], &[]).unwrap();

    let broken = "{\"cdiVersion\": \"0.6.0\", \"kind\": \"vendor.example/x\", \"devicez\": []}";
    let dir = spec_dir(&[("broken.json", broken)]);
    let err = inject(&[dir.path()], &["vendor.example/x=d"], &[]).unwrap_err();
    assert!(
        err.contains("vendor.example/x=d") && err.contains("broken.json"),
        "{err}"
    );
    assert!(err.contains("devicez"), "{err}");

    // A file whose kind cannot be read is named when the device is not found.
    let dir = spec_dir(&[("garbage.yaml", "{{{")]);
    let err = inject(&[dir.path()], &["vendor.example/x=d"], &[]).unwrap_err();
    assert!(err.contains("garbage.yaml could not be read"), "{err}");
}

#[test]
fn versions_are_checked_naming_the_file() {
    let with = |version: &str, extra: serde_json::Value| {
        let mut spec = serde_json::json!({
            "cdiVersion": version,
            "kind": "vendor.example/v",
            "devices": [{"name": "d", "containerEdits": {"env": ["A=1"]}}]
        });
        if let serde_json::Value::Object(extra) = extra {
            spec["devices"][0]["containerEdits"]
                .as_object_mut()
                .unwrap()
                .extend(extra);
        }
        let dir = spec_dir(&[("v.json", &spec.to_string())]);
        inject(&[dir.path()], &["vendor.example/v=d"], &[])
    };
    for ok in ["0.3.0", "0.8.0", "1.0.0", "1.0.1", "1.1.0"] {
        with(ok, serde_json::json!({})).unwrap_or_else(|e| panic!("{ok}: {e}"));
    }
    let err = with("2.0.0", serde_json::json!({})).unwrap_err();
    assert!(
        err.contains("v.json") && err.contains("unknown major version 2"),
        "{err}"
    );
    let err = with("0.2.0", serde_json::json!({})).unwrap_err();
    assert!(err.contains("older than 0.3.0"), "{err}");
    let err = with("one", serde_json::json!({})).unwrap_err();
    assert!(err.contains("not a version"), "{err}");
    // A field newer than the version the file claims.
    let err = with("0.6.0", serde_json::json!({"additionalGids": [5]})).unwrap_err();
    assert!(err.contains("additionalGids needs at least 0.7.0"), "{err}");
}

#[test]
fn edits_berth_does_not_apply_are_refused() {
    let with = |edits: serde_json::Value| {
        let spec = serde_json::json!({
            "cdiVersion": "1.1.0",
            "kind": "vendor.example/r",
            "devices": [{"name": "d", "containerEdits": edits}]
        });
        let dir = spec_dir(&[("r.json", &spec.to_string())]);
        inject(&[dir.path()], &["vendor.example/r=d"], &[]).unwrap_err()
    };
    let err = with(serde_json::json!({"intelRdt": {"closID": "gold"}}));
    assert!(
        err.contains("vendor.example/r=d") && err.contains("intelRdt"),
        "{err}"
    );
    let err =
        with(serde_json::json!({"netDevices": [{"hostInterfaceName": "eth1", "name": "net1"}]}));
    assert!(err.contains("netDevices") && err.contains("eth1"), "{err}");
    let err = with(serde_json::json!({"env": ["A=1"], "sysctls": {"a": "b"}}));
    assert!(err.contains("unknown field `sysctls`"), "{err}");
    let err = with(serde_json::json!({"hooks": [{"hookName": "preStart", "path": "/bin/true"}]}));
    assert!(err.contains("hook name \"preStart\""), "{err}");
    let err = with(
        serde_json::json!({"mounts": [{"hostPath": "/nonexistent/berth", "containerPath": "/x"}]}),
    );
    assert!(err.contains("/nonexistent/berth"), "{err}");
}

#[test]
fn device_nodes_given_in_full_mismatched_or_owned_by_the_user() {
    let spec = serde_json::json!({
        "cdiVersion": "0.5.0",
        "kind": "vendor.example/n",
        "devices": [
            {"name": "given", "containerEdits": {"deviceNodes": [
                {"path": "/dev/absent", "hostPath": "/nonexistent/dev", "type": "c", "major": 240, "minor": 7, "permissions": "none"}
            ]}},
            {"name": "mismatch", "containerEdits": {"deviceNodes": [
                {"path": "/dev/x", "hostPath": "/dev/null", "type": "b"}
            ]}},
            {"name": "missing", "containerEdits": {"deviceNodes": [{"path": "/nonexistent/dev"}]}},
            {"name": "null", "containerEdits": {"deviceNodes": [{"path": "/dev/null"}]}}
        ]
    });
    let dir = spec_dir(&[("n.json", &spec.to_string())]);
    // Fully given: taken as given, no host node needed; `none`: no cgroup rule.
    let s = inject(&[dir.path()], &["vendor.example/n=given"], &[]).unwrap();
    let linux = s.linux().as_ref().unwrap();
    let d = linux
        .devices()
        .iter()
        .flatten()
        .find(|d| d.path() == Path::new("/dev/absent"))
        .unwrap();
    assert_eq!((d.major(), d.minor(), d.file_mode()), (240, 7, None));
    let rules = linux.resources().as_ref().unwrap().devices().clone();
    assert!(!rules.iter().flatten().any(|r| r.major() == Some(240)));

    let err = inject(&[dir.path()], &["vendor.example/n=mismatch"], &[]).unwrap_err();
    assert!(err.contains("type \"b\"") && err.contains("\"c\""), "{err}");
    let err = inject(&[dir.path()], &["vendor.example/n=missing"], &[]).unwrap_err();
    assert!(
        err.contains("vendor.example/n=missing") && err.contains("/nonexistent/dev"),
        "{err}"
    );

    // A node the edit gives no owner belongs to the process's user (not root).
    let sandbox = tempfile::tempdir().unwrap();
    let mut i = input(
        sandbox.path(),
        &[dir.path()],
        &["vendor.example/n=null"],
        &[],
    );
    i.config.linux.as_mut().unwrap().security_context = Some(cri::LinuxContainerSecurityContext {
        run_as_user: Some(cri::Int64Value { value: 1000 }),
        run_as_group: Some(cri::Int64Value { value: 1001 }),
        ..Default::default()
    });
    let s = container_spec(&i).unwrap();
    let d = s
        .linux()
        .as_ref()
        .unwrap()
        .devices()
        .iter()
        .flatten()
        .find(|d| d.path() == Path::new("/dev/null"))
        .cloned()
        .unwrap();
    assert_eq!((d.uid(), d.gid()), (Some(1000), Some(1001)));
}

#[test]
fn a_bind_is_idmapped_in_a_pod_user_namespace() {
    let source = tempfile::tempdir().unwrap();
    let dir = spec_dir(&[("vendor.json", &json_spec(source.path()))]);
    let sandbox = tempfile::tempdir().unwrap();
    let mut i = input(
        sandbox.path(),
        &[dir.path()],
        &["vendor.example/null=null0"],
        &[],
    );
    i.sandbox_config
        .linux
        .get_or_insert_with(Default::default)
        .security_context
        .get_or_insert_with(Default::default)
        .namespace_options = Some(cri::NamespaceOption {
        userns_options: Some(cri::UserNamespace {
            mode: cri::NamespaceMode::Pod as i32,
            uids: vec![idmap(0, 100000, 65536)],
            gids: vec![idmap(0, 100000, 65536)],
        }),
        ..Default::default()
    });
    let spec = container_spec(&i).unwrap();
    let m = mount(&spec, "/opt/vendor").unwrap();
    assert_eq!(m.uid_mappings().clone().unwrap()[0].host_id(), 100000);
    assert_eq!(m.gid_mappings().clone().unwrap()[0].host_id(), 100000);
}

#[test]
fn nothing_requested_reads_nothing() {
    // A "directory" that cannot be listed: only a request reads it.
    let file = tempfile::NamedTempFile::new().unwrap();
    let not_a_dir: PathBuf = file.path().to_path_buf();
    inject(&[&not_a_dir], &[], &[]).unwrap();
    let err = inject(&[&not_a_dir], &["vendor.example/x=d"], &[]).unwrap_err();
    assert!(err.contains("CDI spec directory"), "{err}");
    // Missing directories are skipped (the defaults on a node without CDI).
    let err = inject(
        &[Path::new("/nonexistent/cdi")],
        &["vendor.example/x=d"],
        &[],
    )
    .unwrap_err();
    assert!(
        err.contains("no CDI spec of kind vendor.example/x"),
        "{err}"
    );
}
