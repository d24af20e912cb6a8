//! docker's `config.json` (`$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`):
//! `berth login` stores `auths.<registry>.auth` (base64 `user:password`) there, as docker and
//! nerdctl do, and `berth pull`/`run` pass the matching entry to berthd as the CRI AuthConfig.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use base64::Engine;
use cri_api::v1 as cri;
use serde_json::{json, Value};

/// docker's key for Docker Hub.
const DOCKER_HUB_KEY: &str = "https://index.docker.io/v1/";

pub fn config_path() -> Result<PathBuf> {
    if let Some(d) = std::env::var_os("DOCKER_CONFIG").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(d).join("config.json"));
    }
    let home = std::env::var_os("HOME").context("neither DOCKER_CONFIG nor HOME is set")?;
    Ok(PathBuf::from(home).join(".docker/config.json"))
}

/// The registry host of an image reference (`busybox` → docker.io).
pub fn registry_of(image: &str) -> String {
    match image.split_once('/') {
        Some((first, _)) if first.contains(['.', ':']) || first == "localhost" => first.to_owned(),
        _ => "docker.io".to_owned(),
    }
}

/// The `auths` key of a registry, as docker writes it.
fn key(server: &str) -> String {
    let host = server
        .trim_start_matches("https://")
        .trim_start_matches("http://")
        .trim_end_matches('/');
    match host {
        "" | "docker.io" | "index.docker.io" | "registry-1.docker.io" | "index.docker.io/v1" => {
            DOCKER_HUB_KEY.to_owned()
        }
        h => h.to_owned(),
    }
}

fn read() -> Result<(PathBuf, Value)> {
    let path = config_path()?;
    let doc = match std::fs::read(&path) {
        Ok(b) => {
            serde_json::from_slice(&b).with_context(|| format!("{}: not JSON", path.display()))?
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => json!({}),
        Err(e) => return Err(e).with_context(|| format!("read {}", path.display())),
    };
    Ok((path, doc))
}

fn write(path: &std::path::Path, doc: &Value) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;
    let dir = path.parent().context("config path has no directory")?;
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".config.json")
        .tempfile_in(dir)?;
    tmp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(0o600))?;
    tmp.write_all(serde_json::to_string_pretty(doc)?.as_bytes())?;
    tmp.as_file().sync_all()?;
    tmp.persist(path)
        .with_context(|| format!("write {}", path.display()))?;
    Ok(())
}

/// Stores credentials for `server`; the file written.
pub fn store(server: &str, user: &str, password: &str) -> Result<PathBuf> {
    if user.is_empty() || password.is_empty() {
        bail!("login: a user name and a password are needed");
    }
    let (path, mut doc) = read()?;
    let Some(obj) = doc.as_object_mut() else {
        bail!("{}: not a JSON object", path.display());
    };
    let auths = obj.entry("auths").or_insert_with(|| json!({}));
    let Some(auths) = auths.as_object_mut() else {
        bail!("{}: auths is not an object", path.display());
    };
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    auths.insert(key(server), json!({ "auth": auth }));
    write(&path, &doc)?;
    Ok(path)
}

/// Removes the credentials of `server`; whether there were any.
pub fn remove(server: &str) -> Result<bool> {
    let (path, mut doc) = read()?;
    let removed = doc
        .get_mut("auths")
        .and_then(Value::as_object_mut)
        .and_then(|a| a.remove(&key(server)))
        .is_some();
    if removed {
        write(&path, &doc)?;
    }
    Ok(removed)
}

/// The stored credentials for the registry of `image`, as a CRI AuthConfig.
pub fn auth_for(image: &str) -> Option<cri::AuthConfig> {
    let (_, doc) = read().ok()?;
    let auths = doc.get("auths")?.as_object()?;
    let want = key(&registry_of(image));
    let entry = auths.iter().find(|(k, _)| key(k) == want)?.1;
    let mut a = cri::AuthConfig::default();
    if let Some(auth) = entry.get("auth").and_then(Value::as_str) {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(auth)
            .ok()?;
        let (u, p) = std::str::from_utf8(&decoded).ok()?.split_once(':')?;
        a.username = u.to_owned();
        a.password = p.to_owned();
    }
    if let Some(u) = entry.get("username").and_then(Value::as_str) {
        a.username = u.to_owned();
    }
    if let Some(p) = entry.get("password").and_then(Value::as_str) {
        a.password = p.to_owned();
    }
    if let Some(t) = entry.get("identitytoken").and_then(Value::as_str) {
        a.identity_token = t.to_owned();
    }
    if let Some(t) = entry.get("registrytoken").and_then(Value::as_str) {
        a.registry_token = t.to_owned();
    }
    a.server_address = want;
    (!a.username.is_empty() || !a.identity_token.is_empty() || !a.registry_token.is_empty())
        .then_some(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registries_and_keys() {
        assert_eq!(registry_of("busybox"), "docker.io");
        assert_eq!(registry_of("library/busybox:1"), "docker.io");
        assert_eq!(registry_of("127.0.0.1:5000/app:v1"), "127.0.0.1:5000");
        assert_eq!(registry_of("localhost/app"), "localhost");
        assert_eq!(registry_of("ghcr.io/o/app"), "ghcr.io");
        assert_eq!(key("docker.io"), DOCKER_HUB_KEY);
        assert_eq!(key("https://ghcr.io/"), "ghcr.io");
    }
}
