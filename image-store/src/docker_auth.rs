//! Credentials from docker's `config.json` (`$DOCKER_CONFIG/config.json`, else
//! `~/.docker/config.json`, or a configured path), used when a pull carries none.
//!
//! Each `auths.<host>` entry may hold `auth` (base64 `user:password`), `username` + `password`,
//! `identitytoken` or `registrytoken`. Keys may be written as URLs
//! (`https://index.docker.io/v1/`); docker.io also matches `index.docker.io` and
//! `registry-1.docker.io`.
//!
//! Credential helpers are run as docker runs them: `credHelpers.<host>` for that registry,
//! else `credsStore` for every registry, else the inline `auths` entry. A helper that has no
//! credentials for the registry leaves the inline entry (if any) to answer.

use std::path::{Path, PathBuf};

use base64::Engine;
use serde::Deserialize;
use tracing::debug;

use crate::cred_helper::{helper_get, search_dirs, HelperError};
use crate::registry::Credentials;

/// Errors of reading docker's config.json.
#[derive(Debug, thiserror::Error)]
pub enum DockerConfigError {
    /// The file exists but cannot be read.
    #[error("docker config {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file is not the JSON docker writes.
    #[error("docker config {path}: {source}")]
    Json {
        /// The file.
        path: PathBuf,
        /// The parser's error.
        source: serde_json::Error,
    },
    /// An `auth` value that is not base64 of `user:password`.
    #[error("docker config {path}: auths.{host}.auth: {reason}")]
    BadAuth {
        /// The file.
        path: PathBuf,
        /// The entry's key.
        host: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// A configured credential helper failed.
    #[error("docker config {path}: {source}")]
    Helper {
        /// The file naming the helper.
        path: PathBuf,
        /// What went wrong running it.
        source: HelperError,
    },
}

#[derive(Deserialize, Default)]
struct ConfigFile {
    #[serde(default)]
    auths: std::collections::BTreeMap<String, AuthEntry>,
    #[serde(default, rename = "credHelpers")]
    cred_helpers: std::collections::BTreeMap<String, String>,
    #[serde(default, rename = "credsStore")]
    creds_store: Option<String>,
}

#[derive(Deserialize, Default)]
struct AuthEntry {
    #[serde(default)]
    auth: String,
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    identitytoken: String,
    #[serde(default)]
    registrytoken: String,
}

/// Where docker keeps its config: `$DOCKER_CONFIG/config.json`, else `$HOME/.docker/config.json`.
pub fn default_docker_config() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("DOCKER_CONFIG").filter(|d| !d.is_empty()) {
        return Some(Path::new(&d).join("config.json"));
    }
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(|h| Path::new(&h).join(".docker/config.json"))
}

/// The host part of an `auths` key (`https://index.docker.io/v1/` → `index.docker.io`).
fn key_host(key: &str) -> &str {
    let k = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    k.split('/').next().unwrap_or(k)
}

fn is_docker_hub(host: &str) -> bool {
    matches!(
        host,
        "docker.io" | "index.docker.io" | "registry-1.docker.io"
    )
}

/// The credentials `path` holds for `registry`; `None` when the file or the entry is absent.
/// Credential helpers are looked up on `$PATH`.
pub fn docker_credentials(
    path: &Path,
    registry: &str,
) -> Result<Option<Credentials>, DockerConfigError> {
    docker_credentials_with(path, registry, None)
}

/// The server URL docker hands a credential helper for `registry`.
fn helper_server(registry: &str) -> String {
    if is_docker_hub(registry) {
        "https://index.docker.io/v1/".to_owned()
    } else {
        registry.to_owned()
    }
}

/// [`docker_credentials`], with credential helpers looked up in `helper_dirs` (none → `$PATH`).
pub fn docker_credentials_with(
    path: &Path,
    registry: &str,
    helper_dirs: Option<&[PathBuf]>,
) -> Result<Option<Credentials>, DockerConfigError> {
    let text = match std::fs::read(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(DockerConfigError::Io {
                path: path.to_owned(),
                source,
            })
        }
    };
    let cfg: ConfigFile =
        serde_json::from_slice(&text).map_err(|source| DockerConfigError::Json {
            path: path.to_owned(),
            source,
        })?;
    let matches = |k: &str| {
        let h = key_host(k);
        h == registry || (is_docker_hub(registry) && is_docker_hub(h))
    };
    let helper = cfg
        .cred_helpers
        .iter()
        .find(|(k, _)| k.as_str() == registry)
        .or_else(|| cfg.cred_helpers.iter().find(|(k, _)| matches(k)))
        .map(|(_, v)| v.as_str())
        .or(cfg.creds_store.as_deref())
        .filter(|h| !h.is_empty());
    if let Some(helper) = helper {
        let dirs = search_dirs(helper_dirs);
        let got = helper_get(helper, &helper_server(registry), &dirs).map_err(|source| {
            DockerConfigError::Helper {
                path: path.to_owned(),
                source,
            }
        })?;
        if let Some(c) = got {
            debug!(registry, config = %path.display(), helper, "credentials from credential helper");
            return Ok(Some(c));
        }
    }
    // An exact key beats a normalised match.
    let entry = cfg
        .auths
        .iter()
        .find(|(k, _)| k.as_str() == registry)
        .or_else(|| cfg.auths.iter().find(|(k, _)| matches(k)));
    let Some((key, e)) = entry else {
        return Ok(None);
    };
    let bad = |reason| DockerConfigError::BadAuth {
        path: path.to_owned(),
        host: key.clone(),
        reason,
    };
    let creds = if !e.registrytoken.is_empty() {
        Credentials::Bearer(e.registrytoken.clone())
    } else if !e.identitytoken.is_empty() {
        Credentials::Bearer(e.identitytoken.clone())
    } else if !e.auth.is_empty() {
        let raw = base64::engine::general_purpose::STANDARD
            .decode(e.auth.trim())
            .map_err(|_| bad("not base64"))?;
        let s = String::from_utf8(raw).map_err(|_| bad("not UTF-8"))?;
        let (u, p) = s.split_once(':').ok_or_else(|| bad("not user:password"))?;
        Credentials::Basic {
            username: u.to_owned(),
            password: p.to_owned(),
        }
    } else if !e.username.is_empty() {
        Credentials::Basic {
            username: e.username.clone(),
            password: e.password.clone(),
        }
    } else {
        return Ok(None);
    };
    debug!(registry, config = %path.display(), entry = %key, "credentials from docker config");
    Ok(Some(creds))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(json: &str, registry: &str) -> Result<Option<Credentials>, DockerConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("config.json");
        std::fs::write(&p, json).unwrap();
        docker_credentials(&p, registry)
    }

    fn basic(u: &str, p: &str) -> Option<Credentials> {
        Some(Credentials::Basic {
            username: u.into(),
            password: p.into(),
        })
    }

    #[test]
    fn auth_forms() {
        // "berth:s3:cret" — a password may hold colons.
        let j = r#"{"auths":{"127.0.0.1:5000":{"auth":"YmVydGg6czM6Y3JldA=="},
            "https://r.example/v2/":{"username":"u","password":"p"},
            "tok.example":{"identitytoken":"idt"},
            "https://index.docker.io/v1/":{"auth":"aHViOnB3"}}}"#;
        assert_eq!(
            with(j, "127.0.0.1:5000").unwrap(),
            basic("berth", "s3:cret")
        );
        assert_eq!(with(j, "r.example").unwrap(), basic("u", "p"));
        assert_eq!(
            with(j, "tok.example").unwrap(),
            Some(Credentials::Bearer("idt".into()))
        );
        assert_eq!(with(j, "docker.io").unwrap(), basic("hub", "pw"));
        assert_eq!(with(j, "other:1").unwrap(), None);
    }

    #[test]
    fn missing_file_and_bad_entries() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            docker_credentials(&dir.path().join("none.json"), "x").unwrap(),
            None
        );
        let e = with(r#"{"auths":{"x":{"auth":"!!"}}}"#, "x").unwrap_err();
        assert!(e.to_string().ends_with("auths.x.auth: not base64"), "{e}");
        let e = with(r#"{"auths":{"x":{"auth":"bm9jb2xvbg=="}}}"#, "x").unwrap_err();
        assert!(e.to_string().contains("not user:password"), "{e}");
        let e = with("{not json", "x").unwrap_err();
        assert!(matches!(e, DockerConfigError::Json { .. }), "{e}");
    }

    fn helper(dir: &Path, name: &str, user: &str) {
        use std::os::unix::fs::PermissionsExt;
        let p = dir.join(format!("docker-credential-{name}"));
        let script = format!(
            "#!/bin/sh\nread s\ncase \"$s\" in\n  *nothing*) echo credentials not found in native keychain; exit 1;;\nesac\nprintf '{{\"Username\":\"{user}@%s\",\"Secret\":\"s\"}}' \"$s\"\n"
        );
        std::fs::write(&p, script).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    #[test]
    fn credential_helpers() {
        let bin = tempfile::tempdir().unwrap();
        helper(bin.path(), "store", "store");
        helper(bin.path(), "per", "per");
        let dirs = vec![bin.path().to_owned()];
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("config.json");
        let get = |json: &str, registry: &str| {
            std::fs::write(&p, json).unwrap();
            docker_credentials_with(&p, registry, Some(&dirs))
        };
        let j = r#"{"credsStore":"store","credHelpers":{"r.example":"per","https://nothing.example":"per"},
            "auths":{"inline.example":{"auth":"aTpwdw=="},"nothing.example":{"auth":"aTpwdw=="}}}"#;
        // credHelpers for its registry, credsStore for the others, before inline entries.
        assert_eq!(get(j, "r.example").unwrap(), basic("per@r.example", "s"));
        assert_eq!(
            get(j, "inline.example").unwrap(),
            basic("store@inline.example", "s")
        );
        assert_eq!(
            get(j, "docker.io").unwrap(),
            basic("store@https://index.docker.io/v1/", "s")
        );
        // The helper knows nothing: the inline entry answers.
        assert_eq!(get(j, "nothing.example").unwrap(), basic("i", "pw"));
        // Only credHelpers, and another registry: inline or none.
        let j =
            r#"{"credHelpers":{"r.example":"per"},"auths":{"inline.example":{"auth":"aTpwdw=="}}}"#;
        assert_eq!(get(j, "inline.example").unwrap(), basic("i", "pw"));
        assert_eq!(get(j, "other.example").unwrap(), None);
        // A helper that is not installed is an error naming it.
        let e = get(r#"{"credsStore":"desktop","auths":{"x":{}}}"#, "x").unwrap_err();
        assert!(
            e.to_string()
                .contains("docker-credential-desktop: not found"),
            "{e}"
        );
    }
}
