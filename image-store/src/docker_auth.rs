//! Credentials from docker's `config.json` (`$DOCKER_CONFIG/config.json`, else
//! `~/.docker/config.json`, or a configured path), used when a pull carries none.
//!
//! Each `auths.<host>` entry may hold `auth` (base64 `user:password`), `username` + `password`,
//! `identitytoken` or `registrytoken`. Keys may be written as URLs
//! (`https://index.docker.io/v1/`); docker.io also matches `index.docker.io` and
//! `registry-1.docker.io`. Credential helpers (`credsStore`, `credHelpers`) are not run.

use std::path::{Path, PathBuf};

use base64::Engine;
use serde::Deserialize;
use tracing::{debug, warn};

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
pub fn docker_credentials(
    path: &Path,
    registry: &str,
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
    // An exact key beats a normalised match.
    let entry = cfg
        .auths
        .iter()
        .find(|(k, _)| k.as_str() == registry)
        .or_else(|| cfg.auths.iter().find(|(k, _)| matches(k)));
    let Some((key, e)) = entry else {
        if cfg.cred_helpers.keys().any(|k| matches(k)) || cfg.creds_store.is_some() {
            warn!(registry, config = %path.display(), "docker credential helpers are not supported; pulling anonymously");
        }
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
        assert_eq!(
            with(r#"{"credsStore":"desktop","auths":{"x":{}}}"#, "x").unwrap(),
            None
        );
    }
}
