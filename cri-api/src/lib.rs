//! berth's bindings of the Kubernetes CRI v1 API (protobuf package `runtime.v1`): messages,
//! `RuntimeService`/`ImageService` clients and servers, generated with tonic-prost-build from
//! `proto/runtime/v1/api.proto`.
//!
//! The proto is berth's own text; its wire contract (names, numbers, types) follows
//! kubernetes/cri-api at [`UPSTREAM_REVISION`], and `tests/contract.rs` checks it field by field.
//! The Rust item names are those prost and tonic generate, so `use cri_api::v1 as cri` reads as
//! any other CRI binding does.
//!
//! Every message also derives serde's `Serialize`/`Deserialize` with `#[serde(default)]` (berthd
//! keeps CRI configs in JSON records; a field a newer proto adds reads as its default).

use std::fmt;

mod env_value;

/// The CRI v1 messages and services.
pub mod v1 {
    tonic::include_proto!("runtime.v1");
}

/// The kubernetes/cri-api revision whose `api.proto` wire contract berth's proto follows.
pub const UPSTREAM_REVISION: &str =
    "791729b255f0c2d0019d3862ba6ef000c4a30c4d (kubernetes-1.37.0-beta.0-8-g791729b)";

/// protoc's `FileDescriptorSet` of berth's CRI proto (for reflection and the contract test).
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/cri_v1_descriptor.bin"));

const REDACTED: &str = "[redacted]";

fn redact(secret: &str) -> &str {
    if secret.is_empty() {
        ""
    } else {
        REDACTED
    }
}

// The upstream proto marks these secrets `debug_redact`; this keeps them out of logs.
impl fmt::Debug for v1::AuthConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthConfig")
            .field("username", &self.username)
            .field("password", &redact(&self.password))
            .field("auth", &redact(&self.auth))
            .field("server_address", &self.server_address)
            .field("identity_token", &redact(&self.identity_token))
            .field("registry_token", &redact(&self.registry_token))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::v1;

    #[test]
    fn auth_config_debug_hides_secrets() {
        let auth = v1::AuthConfig {
            username: "alice".into(),
            password: "hunter2".into(),
            auth: "YWxpY2U6aHVudGVyMg==".into(),
            server_address: "registry.example".into(),
            identity_token: "idtok".into(),
            registry_token: String::new(),
        };
        let shown = format!("{auth:?}");
        assert!(
            shown.contains("alice") && shown.contains("registry.example"),
            "{shown}"
        );
        for secret in ["hunter2", "YWxpY2U6aHVudGVyMg==", "idtok"] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
        assert!(shown.contains("registry_token: \"\""), "{shown}");
    }
}
