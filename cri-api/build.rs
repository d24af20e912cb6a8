//! Generates the CRI v1 messages, clients and servers from `proto/runtime/v1/api.proto`, and
//! keeps protoc's descriptor of it (the contract test reads it; `FILE_DESCRIPTOR_SET`).

use std::path::PathBuf;

const PROTO: &str = "proto/runtime/v1/api.proto";

fn main() {
    println!("cargo:rerun-if-changed={PROTO}");
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    tonic_prost_build::configure()
        .file_descriptor_set_path(out.join("cri_v1_descriptor.bin"))
        // Records in berthd's store hold CRI messages as JSON; a field added by a newer proto
        // must read as its default from a record an older berthd wrote.
        .type_attribute(".", "#[derive(serde::Serialize, serde::Deserialize)]")
        .message_attribute(".", "#[serde(default)]")
        // bytes since cri-api 0.34; stored records hold it as a JSON string when it is UTF-8.
        .field_attribute(
            ".runtime.v1.KeyValue.value",
            "#[serde(with = \"crate::env_value\")]",
        )
        // Credentials: Debug is written by hand and redacts the secrets.
        .skip_debug([".runtime.v1.AuthConfig"])
        .compile_protos(&[PROTO], &["proto"])
        .expect("compile proto/runtime/v1/api.proto (is protoc installed? scripts/install-deps)");
}
