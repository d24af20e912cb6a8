//! serde of the CRI messages, as berthd's JSON records use it: records written when
//! KeyValue.value was a proto string still read, and fields a newer proto adds default.

use cri_api::v1 as cri;

#[test]
fn env_value_json_is_a_string_when_utf8() {
    let kv = cri::KeyValue {
        key: "GREETING".into(),
        value: "hé".as_bytes().to_vec(),
    };
    let json = serde_json::to_string(&kv).expect("serializes");
    assert_eq!(json, r#"{"key":"GREETING","value":"hé"}"#);
    let back: cri::KeyValue = serde_json::from_str(&json).expect("deserializes");
    assert_eq!(back, kv);
}

#[test]
fn env_value_json_keeps_non_utf8_bytes() {
    let kv = cri::KeyValue {
        key: "RAW".into(),
        value: vec![0xff, 0xfe, b'a'],
    };
    let json = serde_json::to_string(&kv).expect("serializes");
    assert_eq!(json, r#"{"key":"RAW","value":[255,254,97]}"#);
    let back: cri::KeyValue = serde_json::from_str(&json).expect("deserializes");
    assert_eq!(back, kv);
}

#[test]
fn env_value_json_refuses_what_is_not_bytes() {
    for bad in [r#"{"key":"K","value":[256]}"#, r#"{"key":"K","value":7}"#] {
        assert!(serde_json::from_str::<cri::KeyValue>(bad).is_err(), "{bad}");
    }
}

#[test]
fn an_older_record_reads_with_new_fields_defaulted() {
    // What a berthd built on the cri-api 0.32 proto wrote: no stop_signal, no image_ref, no
    // image_sub_path, a string env value.
    let old = r#"{
        "metadata": {"name": "app", "attempt": 0},
        "image": {"image": "busybox", "annotations": {}, "user_specified_image": "busybox",
                  "runtime_handler": ""},
        "command": ["sh"], "args": [], "working_dir": "",
        "envs": [{"key": "A", "value": "1"}],
        "mounts": [{"container_path": "/v", "host_path": "/h", "readonly": true,
                    "selinux_relabel": false, "propagation": 0, "uid_mappings": [],
                    "gid_mappings": [], "recursive_read_only": false, "image": null}],
        "devices": [], "labels": {}, "annotations": {}, "log_path": "", "stdin": false,
        "stdin_once": false, "tty": false, "linux": null, "windows": null, "cdi_devices": []
    }"#;
    let config: cri::ContainerConfig = serde_json::from_str(old).expect("an old record reads");
    assert_eq!(config.envs[0].value, b"1");
    assert_eq!(config.stop_signal, cri::Signal::RuntimeDefault as i32);
    assert_eq!(
        config.image.as_ref().map(|i| i.image_ref.as_str()),
        Some("")
    );
    assert_eq!(config.mounts[0].image_sub_path, "");
    assert!(config.mounts[0].mount_options.is_empty());
}
