//! What a person types for a container, pod or image (a full ID, a unique ID prefix, a name
//! or an image reference) turned into the one ID it means.

use anyhow::{bail, Result};

/// Something that can be named: its ID and its names (a container's or pod's name; an
/// image's repo tags).
#[derive(Debug, Clone)]
pub struct Named {
    pub id: String,
    pub names: Vec<String>,
}

/// Resolves `query` among `items`: an exact ID, then an exact name, then a unique ID prefix
/// (`sha256:` optional). `kind` names the items in errors ("container", "pod", "image").
pub fn resolve(kind: &str, query: &str, items: &[Named]) -> Result<String> {
    if query.is_empty() {
        bail!("an empty {kind} ID or name");
    }
    let bare = |id: &str| id.trim_start_matches("sha256:").to_owned();
    if let Some(i) = items.iter().find(|i| i.id == query) {
        return Ok(i.id.clone());
    }
    let by_name: Vec<&Named> = items
        .iter()
        .filter(|i| i.names.iter().any(|n| n == query))
        .collect();
    match by_name.as_slice() {
        [one] => return Ok(one.id.clone()),
        [] => {}
        many => bail!(
            "{kind} name {query:?} is ambiguous: it names {}; use an ID",
            ids(many)
        ),
    }
    let q = bare(query);
    let by_prefix: Vec<&Named> = items
        .iter()
        .filter(|i| bare(&i.id).starts_with(&q))
        .collect();
    match by_prefix.as_slice() {
        [one] => Ok(one.id.clone()),
        [] => bail!("no such {kind}: {query}"),
        many => bail!(
            "{kind} ID prefix {query:?} is ambiguous: it matches {}; type more of the ID",
            ids(many)
        ),
    }
}

fn ids(items: &[&Named]) -> String {
    items
        .iter()
        .map(|i| {
            i.id.trim_start_matches("sha256:")
                .chars()
                .take(13)
                .collect::<String>()
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// An image reference in its full form, as berthd stores repo tags: `busybox` →
/// `docker.io/library/busybox:latest`, `reg:5000/x` → `reg:5000/x:latest`.
pub fn normalize_image(reference: &str) -> String {
    let (name, suffix) = match reference.find('@') {
        Some(at) => (&reference[..at], &reference[at..]),
        None => {
            let last = reference.rsplit('/').next().unwrap_or(reference);
            if last.contains(':') {
                let colon = reference.rfind(':').unwrap_or(reference.len());
                (&reference[..colon], &reference[colon..])
            } else {
                (reference, ":latest")
            }
        }
    };
    let first = name.split('/').next().unwrap_or(name);
    let has_host =
        name.contains('/') && (first.contains('.') || first.contains(':') || first == "localhost");
    let full = if has_host {
        name.to_owned()
    } else if name.contains('/') {
        format!("docker.io/{name}")
    } else {
        format!("docker.io/library/{name}")
    };
    format!("{full}{suffix}")
}

/// Splits a repo tag into repository and tag (`<none>` without one).
pub fn split_tag(repo_tag: &str) -> (String, String) {
    let last_slash = repo_tag.rfind('/').map_or(0, |i| i + 1);
    match repo_tag[last_slash..].rfind(':') {
        Some(c) => (
            repo_tag[..last_slash + c].to_owned(),
            repo_tag[last_slash + c + 1..].to_owned(),
        ),
        None => (repo_tag.to_owned(), "<none>".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn items() -> Vec<Named> {
        vec![
            Named {
                id: "abc123".into(),
                names: vec!["web".into()],
            },
            Named {
                id: "abd456".into(),
                names: vec!["db".into()],
            },
            Named {
                id: "sha256:ffee00".into(),
                names: vec!["docker.io/library/busybox:latest".into()],
            },
        ]
    }

    #[test]
    fn exact_id_name_and_prefix() {
        let items = items();
        assert_eq!(resolve("container", "abc123", &items).unwrap(), "abc123");
        assert_eq!(resolve("container", "db", &items).unwrap(), "abd456");
        assert_eq!(resolve("container", "abc", &items).unwrap(), "abc123");
        assert_eq!(resolve("image", "ffe", &items).unwrap(), "sha256:ffee00");
        assert_eq!(
            resolve("image", "sha256:ffe", &items).unwrap(),
            "sha256:ffee00"
        );
    }

    #[test]
    fn ambiguous_and_missing() {
        let items = items();
        let e = resolve("container", "ab", &items).unwrap_err().to_string();
        assert!(
            e.contains("ambiguous") && e.contains("abc123") && e.contains("abd456"),
            "{e}"
        );
        let e = resolve("container", "zz", &items).unwrap_err().to_string();
        assert_eq!(e, "no such container: zz");
        assert!(resolve("container", "", &items).is_err());
    }

    #[test]
    fn a_name_wins_over_a_prefix() {
        let items = vec![
            Named {
                id: "dbf000".into(),
                names: vec!["x".into()],
            },
            Named {
                id: "111".into(),
                names: vec!["dbf".into()],
            },
        ];
        assert_eq!(resolve("container", "dbf", &items).unwrap(), "111");
    }

    #[test]
    fn image_references() {
        assert_eq!(
            normalize_image("busybox"),
            "docker.io/library/busybox:latest"
        );
        assert_eq!(
            normalize_image("busybox:1.36"),
            "docker.io/library/busybox:1.36"
        );
        assert_eq!(normalize_image("me/app"), "docker.io/me/app:latest");
        assert_eq!(
            normalize_image("127.0.0.1:5000/bb:v1"),
            "127.0.0.1:5000/bb:v1"
        );
        assert_eq!(
            normalize_image("127.0.0.1:5000/bb"),
            "127.0.0.1:5000/bb:latest"
        );
        assert_eq!(normalize_image("localhost/x"), "localhost/x:latest");
        assert_eq!(
            normalize_image("quay.io/a/b@sha256:00"),
            "quay.io/a/b@sha256:00"
        );
    }

    #[test]
    fn tags_split() {
        assert_eq!(
            split_tag("127.0.0.1:5000/bb:v1"),
            ("127.0.0.1:5000/bb".into(), "v1".into())
        );
        assert_eq!(
            split_tag("127.0.0.1:5000/bb"),
            ("127.0.0.1:5000/bb".into(), "<none>".into())
        );
    }
}
