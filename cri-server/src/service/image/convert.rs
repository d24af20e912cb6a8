//! CRI ↔ image-store: `Image` messages (tags, digests, user from the image config) and
//! `AuthConfig` → [`Credentials`].

use std::collections::{BTreeSet, HashMap};

use base64::Engine;
use cri_api::v1 as cri;
use image_store::{Credentials, Digest, ImageStore};

use super::lookup::CriImage;

/// The CRI `Image` message of `image`.
pub(super) fn to_cri(store: &ImageStore, image: &CriImage) -> cri::Image {
    let mut tags = BTreeSet::new();
    let mut digests = BTreeSet::new();
    for name in image.records.iter().flat_map(|r| &r.names) {
        if name.contains('@') {
            digests.insert(name.clone());
        } else {
            tags.insert(name.clone());
        }
    }
    let (uid, username) = read_config(store, &image.id)
        .as_ref()
        .and_then(|c| c.pointer("/config/User"))
        .and_then(|u| u.as_str())
        .map_or((None, String::new()), user_of);
    cri::Image {
        id: image.id.to_string(),
        repo_tags: tags.into_iter().collect(),
        repo_digests: digests.into_iter().collect(),
        size: image.records.iter().map(|r| r.size).max().unwrap_or(0),
        uid: uid.map(|value| cri::Int64Value { value }),
        username,
        spec: Some(cri::ImageSpec {
            image: image.id.to_string(),
            ..Default::default()
        }),
        pinned: image.records.iter().any(|r| r.pinned),
    }
}

/// ImageStatus' verbose `info`: `{"info": <json>}` with the image config as `imageSpec` and
/// the chain ID, like containerd, plus each stored manifest.
pub(super) fn verbose_info(store: &ImageStore, image: &CriImage) -> HashMap<String, String> {
    let manifests: Vec<_> = image
        .records
        .iter()
        .map(|r| {
            serde_json::json!({
                "digest": r.manifest_digest.to_string(),
                "index": r.index_digest.as_ref().map(ToString::to_string),
                "platform": r.platform.to_string(),
                "layers": r.layers.iter().map(ToString::to_string).collect::<Vec<_>>(),
                "size": r.size,
                "pinned": r.pinned,
                "names": r.names,
            })
        })
        .collect();
    let info = serde_json::json!({
        "id": image.id.to_string(),
        "chainID": image.records[0].chain_id.as_ref().map(ToString::to_string),
        "manifests": manifests,
        "imageSpec": read_config(store, &image.id),
    });
    HashMap::from([("info".to_owned(), info.to_string())])
}

/// The image config blob as JSON; `None` (logged) when it cannot be read.
fn read_config(store: &ImageStore, digest: &Digest) -> Option<serde_json::Value> {
    let bytes = store
        .content()
        .read_blob(digest)
        .map_err(|e| tracing::warn!(image = %digest, error = %e, "cannot read image config"))
        .ok()?;
    serde_json::from_slice(&bytes)
        .map_err(|e| tracing::warn!(image = %digest, error = %e, "image config is not JSON"))
        .ok()
}

/// The config's `User` as the CRI wants it: a numeric user (before any `:group`) is a UID,
/// anything else a user name; empty is neither.
fn user_of(user: &str) -> (Option<i64>, String) {
    let user = user.split(':').next().unwrap_or_default();
    if user.is_empty() {
        return (None, String::new());
    }
    match user.parse::<i64>() {
        Ok(uid) => (Some(uid), String::new()),
        Err(_) => (None, user.to_owned()),
    }
}

/// The credentials an AuthConfig gives for `registry` (containerd's order: username and
/// password, a registry token, an identity token, then `auth` = base64 `user:password`).
/// An AuthConfig for another `server_address` is not sent.
pub(super) fn credentials(
    auth: Option<&cri::AuthConfig>,
    registry: &str,
) -> Result<Credentials, &'static str> {
    let Some(a) = auth else {
        return Ok(Credentials::Anonymous);
    };
    if !a.server_address.is_empty() && !same_registry(&a.server_address, registry) {
        tracing::debug!(
            server = %a.server_address,
            registry,
            "auth config is for another registry; pulling anonymously"
        );
        return Ok(Credentials::Anonymous);
    }
    if !a.username.is_empty() {
        return Ok(Credentials::Basic {
            username: a.username.clone(),
            password: a.password.clone(),
        });
    }
    if !a.registry_token.is_empty() {
        return Ok(Credentials::Bearer(a.registry_token.clone()));
    }
    if !a.identity_token.is_empty() {
        return Ok(Credentials::Bearer(a.identity_token.clone()));
    }
    if !a.auth.is_empty() {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(a.auth.trim())
            .map_err(|_| "`auth` is not base64")?;
        let text = String::from_utf8(decoded).map_err(|_| "`auth` is not UTF-8")?;
        let (username, password) = text
            .split_once(':')
            .ok_or("`auth` is not base64 of user:password")?;
        return Ok(Credentials::Basic {
            username: username.to_owned(),
            password: password.trim_end_matches('\0').to_owned(),
        });
    }
    Ok(Credentials::Anonymous)
}

/// Whether an AuthConfig's `server_address` (`https://index.docker.io/v1/`, `host:port`) is
/// the registry host `registry`.
fn same_registry(server: &str, registry: &str) -> bool {
    let host = server
        .strip_prefix("https://")
        .or_else(|| server.strip_prefix("http://"))
        .unwrap_or(server);
    let host = host.split('/').next().unwrap_or(host);
    let canon = |h: &str| match h {
        "index.docker.io" | "registry-1.docker.io" => "docker.io".to_owned(),
        h => h.to_ascii_lowercase(),
    };
    canon(host) == canon(registry)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_become_uid_or_username() {
        assert_eq!(user_of(""), (None, String::new()));
        assert_eq!(user_of("1000"), (Some(1000), String::new()));
        assert_eq!(user_of("0:0"), (Some(0), String::new()));
        assert_eq!(user_of("nobody:nogroup"), (None, "nobody".to_owned()));
        assert_eq!(user_of(":100"), (None, String::new()));
    }

    fn auth(f: impl FnOnce(&mut cri::AuthConfig)) -> cri::AuthConfig {
        let mut a = cri::AuthConfig::default();
        f(&mut a);
        a
    }

    #[test]
    fn auth_configs_become_credentials() {
        let r = "127.0.0.1:5000";
        assert_eq!(credentials(None, r), Ok(Credentials::Anonymous));
        let basic = Credentials::Basic {
            username: "u".into(),
            password: "p:q".into(),
        };
        let a = auth(|a| {
            a.username = "u".into();
            a.password = "p:q".into();
        });
        assert_eq!(credentials(Some(&a), r), Ok(basic.clone()));
        // base64("u:p:q\0")
        let a = auth(|a| a.auth = "dTpwOnEA".into());
        assert_eq!(credentials(Some(&a), r), Ok(basic.clone()));
        let a = auth(|a| a.auth = "not base64!".into());
        assert!(credentials(Some(&a), r).is_err());
        let a = auth(|a| a.auth = "bm9jb2xvbg==".into()); // "nocolon"
        assert!(credentials(Some(&a), r).is_err());
        let a = auth(|a| a.identity_token = "id".into());
        assert_eq!(
            credentials(Some(&a), r),
            Ok(Credentials::Bearer("id".into()))
        );
        let a = auth(|a| {
            a.identity_token = "id".into();
            a.registry_token = "rt".into();
        });
        assert_eq!(
            credentials(Some(&a), r),
            Ok(Credentials::Bearer("rt".into()))
        );
        assert_eq!(
            credentials(Some(&cri::AuthConfig::default()), r),
            Ok(Credentials::Anonymous)
        );
    }

    #[test]
    fn auth_for_another_server_is_not_sent() {
        let a = auth(|a| {
            a.username = "u".into();
            a.server_address = "https://other.example:5000/v2/".into();
        });
        assert_eq!(
            credentials(Some(&a), "127.0.0.1:5000"),
            Ok(Credentials::Anonymous)
        );
        let a = auth(|a| {
            a.username = "u".into();
            a.server_address = "https://index.docker.io/v1/".into();
        });
        assert!(matches!(
            credentials(Some(&a), "docker.io"),
            Ok(Credentials::Basic { .. })
        ));
        assert!(same_registry("127.0.0.1:5000", "127.0.0.1:5000"));
        assert!(same_registry("http://127.0.0.1:5000", "127.0.0.1:5000"));
        assert!(!same_registry("127.0.0.1:5001", "127.0.0.1:5000"));
    }
}
