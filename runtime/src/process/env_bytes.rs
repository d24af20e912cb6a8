//! Env values that are not UTF-8, from the `run.berth.env-bytes` annotation
//! ([`ANNOTATION_ENV_BYTES`]): a JSON object `{"KEY": "<base64 of the raw bytes>"}`. Each listed
//! KEY's entry of `process.env` (a lossy stand-in, since JSON strings cannot carry the bytes) is
//! replaced at the init's execve by `KEY=<raw bytes>`. Checked by `create` before anything is
//! set up: bad JSON or base64, a NUL byte in a value, or a key absent from `process.env` fail it
//! naming the annotation. `exec` gives a process the same bytes for each entry it carries
//! exactly as the container's `process.env` has it (the caller copied the container's env, as
//! containerd does for CRI exec, which carries no env of its own); an entry it sets otherwise
//! is its own and stays as given.

use std::collections::BTreeMap;
use std::ffi::CString;

use base64::Engine;
use oci_spec::runtime::Spec;

use crate::error::{Result, RuntimeError};
pub use crate::features::ANNOTATION_ENV_BYTES;

/// The raw values by key.
pub type EnvBytes = BTreeMap<String, Vec<u8>>;

fn invalid(reason: String) -> RuntimeError {
    RuntimeError::InvalidSpec {
        field: "annotations",
        reason: format!("{ANNOTATION_ENV_BYTES}: {reason}"),
    }
}

fn key_of(entry: &str) -> &str {
    entry.split('=').next().unwrap_or_default()
}

/// Parses the annotation's value against `env` (process.env).
pub fn parse(value: &str, env: &[String]) -> Result<EnvBytes> {
    let map: BTreeMap<String, String> = serde_json::from_str(value).map_err(|e| {
        invalid(format!(
            "not a JSON object of base64 strings by env key: {e}"
        ))
    })?;
    let mut out = EnvBytes::new();
    for (key, encoded) in map {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(encoded.as_bytes())
            .map_err(|e| invalid(format!("{key:?}: not base64: {e}")))?;
        if bytes.contains(&0) {
            return Err(invalid(format!("{key:?}: a NUL byte in the value")));
        }
        if key.is_empty() || key.contains('=') || key.contains('\0') {
            return Err(invalid(format!("{key:?}: not an env key")));
        }
        if !env.iter().any(|e| key_of(e) == key) {
            return Err(invalid(format!("{key:?}: not in process.env")));
        }
        out.insert(key, bytes);
    }
    Ok(out)
}

/// The spec's annotation parsed, if it has one.
pub fn from_spec(spec: &Spec) -> Result<Option<EnvBytes>> {
    let Some(value) = spec
        .annotations()
        .as_ref()
        .and_then(|a| a.get(ANNOTATION_ENV_BYTES))
    else {
        return Ok(None);
    };
    let env = spec
        .process()
        .as_ref()
        .and_then(|p| p.env().clone())
        .unwrap_or_default();
    parse(value, &env).map(Some)
}

/// The bytes an exec'd process with `env` gets: the container's, for each listed key whose
/// entry in `env` is the container's own (its lossy stand-in, unchanged). The container's
/// annotation was checked by create; should it no longer parse, the exec gets none.
pub fn for_exec(container: &Spec, env: &[String]) -> Option<EnvBytes> {
    let all = from_spec(container).ok().flatten()?;
    let theirs = container
        .process()
        .as_ref()
        .and_then(|p| p.env().clone())
        .unwrap_or_default();
    let kept: EnvBytes = all
        .into_iter()
        .filter(|(key, _)| {
            let of = |list: &[String]| list.iter().find(|e| key_of(e) == key).cloned();
            of(&theirs).is_some_and(|entry| of(env) == Some(entry))
        })
        .collect();
    (!kept.is_empty()).then_some(kept)
}

/// The environment for execve: `env` with each entry whose key `bytes` lists made
/// `KEY=<raw bytes>`.
pub fn environ(env: Vec<String>, bytes: Option<&EnvBytes>) -> Result<Vec<CString>> {
    env.into_iter()
        .map(|entry| {
            let raw = match bytes.and_then(|b| b.get(key_of(&entry)).map(|v| (key_of(&entry), v))) {
                Some((key, value)) => {
                    let mut raw = Vec::with_capacity(key.len() + 1 + value.len());
                    raw.extend_from_slice(key.as_bytes());
                    raw.push(b'=');
                    raw.extend_from_slice(value);
                    raw
                }
                None => entry.into_bytes(),
            };
            CString::new(raw).map_err(|_| RuntimeError::InvalidSpec {
                field: "process",
                reason: "NUL byte in args or env".into(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn replaces_listed_keys_with_their_bytes() {
        let e = env(&["PATH=/bin", "SECRET=\u{fffd}\u{fffd}ok\u{fffd}", "A=1"]);
        // b"\xff\xfeok\x80"
        let bytes = parse(r#"{"SECRET":"//5va4A="}"#, &e).unwrap();
        assert_eq!(bytes["SECRET"], b"\xff\xfeok\x80");
        let out = environ(e.clone(), Some(&bytes)).unwrap();
        assert_eq!(out[0].as_bytes(), b"PATH=/bin");
        assert_eq!(out[1].as_bytes(), b"SECRET=\xff\xfeok\x80");
        assert_eq!(out[2].as_bytes(), b"A=1");
        let unchanged = environ(e, None).unwrap();
        assert_eq!(
            unchanged[1].as_bytes(),
            "SECRET=\u{fffd}\u{fffd}ok\u{fffd}".as_bytes()
        );
    }

    #[test]
    fn malformed_annotations_are_refused_by_name() {
        let e = env(&["SECRET=x", "A=1"]);
        for (value, says) in [
            ("not json", "JSON"),
            (r#"{"SECRET": 3}"#, "JSON"),
            (r#"{"SECRET":"***"}"#, "base64"),
            (r#"{"MISSING":"YQ=="}"#, "not in process.env"),
            (r#"{"SECRET":"YQBi"}"#, "NUL"),
            (r#"{"A=B":"YQ=="}"#, "not an env key"),
        ] {
            let err = parse(value, &e).expect_err(value).to_string();
            assert!(
                err.contains(ANNOTATION_ENV_BYTES) && err.contains(says),
                "{value}: {err}"
            );
        }
        assert!(parse("{}", &e).unwrap().is_empty());
    }

    #[test]
    fn exec_gets_the_bytes_of_entries_copied_from_the_container() {
        let mut spec = Spec::default();
        let mut process = spec.process().clone().unwrap_or_default();
        process.set_env(Some(env(&["K=\u{fffd}", "L=\u{fffd}x", "PATH=/bin"])));
        spec.set_process(Some(process));
        assert!(
            for_exec(&spec, &env(&["K=\u{fffd}"])).is_none(),
            "no annotation"
        );
        spec.set_annotations(Some(
            [(
                ANNOTATION_ENV_BYTES.to_string(),
                r#"{"K":"/w==","L":"/3g="}"#.to_string(),
            )]
            .into(),
        ));
        // K copied from the container: its bytes; L set by the exec itself: left alone.
        let got = for_exec(&spec, &env(&["PATH=/bin", "K=\u{fffd}", "L=mine"])).unwrap();
        assert_eq!(got.keys().collect::<Vec<_>>(), ["K"]);
        assert_eq!(got["K"], [0xff]);
        assert!(for_exec(&spec, &env(&["PATH=/bin"])).is_none());
    }

    #[test]
    fn from_a_spec() {
        let mut spec = Spec::default();
        assert!(from_spec(&spec).unwrap().is_none());
        let mut process = spec.process().clone().unwrap_or_default();
        process.set_env(Some(env(&["K=\u{fffd}"])));
        spec.set_process(Some(process));
        spec.set_annotations(Some(
            [(
                ANNOTATION_ENV_BYTES.to_string(),
                r#"{"K":"/w=="}"#.to_string(),
            )]
            .into(),
        ));
        assert_eq!(from_spec(&spec).unwrap().unwrap()["K"], [0xff]);
    }
}
