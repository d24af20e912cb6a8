//! Finding the CRI image an ImageSpec names: a name (`busybox`, `host/repo:tag`,
//! `host/repo@sha256:…`), the image ID (config digest, with or without `sha256:`), a manifest
//! or index digest, or an unambiguous prefix of the ID.

use image_store::{Digest, Image, ImageStore, Reference, StoreError};

/// One CRI image: the store records that share a config digest.
#[derive(Debug, Clone)]
pub(super) struct CriImage {
    /// The config digest: the CRI image ID.
    pub id: Digest,
    /// Its store records (one per manifest it was pulled through), never empty.
    pub records: Vec<Image>,
}

/// Every stored image, grouped by config digest, ordered by ID.
pub(super) fn all(store: &ImageStore) -> Result<Vec<CriImage>, StoreError> {
    let mut out: Vec<CriImage> = Vec::new();
    let mut records = store.images()?;
    records.sort_by(|a, b| {
        (&a.config_digest, a.created_unix).cmp(&(&b.config_digest, b.created_unix))
    });
    for rec in records {
        match out.last_mut() {
            Some(last) if last.id == rec.config_digest => last.records.push(rec),
            _ => out.push(CriImage {
                id: rec.config_digest.clone(),
                records: vec![rec],
            }),
        }
    }
    Ok(out)
}

/// The CRI image `spec` names, if any.
pub(super) fn find(store: &ImageStore, spec: &str) -> Result<Option<CriImage>, StoreError> {
    let images = all(store)?;
    let spec = spec.trim();
    if spec.is_empty() {
        return Ok(None);
    }
    let with = |config: &Digest| images.iter().find(|i| &i.id == config).cloned();
    // A full digest: the ID, or a manifest/index digest.
    if let Some(d) = full_digest(spec) {
        if let Some(i) = with(&d) {
            return Ok(Some(i));
        }
        let by_content = images.iter().find(|i| {
            i.records
                .iter()
                .any(|r| r.manifest_digest == d || r.index_digest.as_ref() == Some(&d))
        });
        return Ok(by_content.cloned());
    }
    // A name the store knows (normalised: `busybox` is docker.io/library/busybox:latest).
    if let Some(rec) = store.image(spec)? {
        return Ok(with(&rec.config_digest));
    }
    // `repo@digest` of a digest the image has but was not pulled by.
    if let Ok(r) = spec.parse::<Reference>() {
        if let Some(d) = r.digest() {
            let (tagged, digested) = (format!("{}:", r.name()), format!("{}@", r.name()));
            let found = images.iter().find(|i| {
                i.records.iter().any(|rec| {
                    (rec.manifest_digest == *d || rec.index_digest.as_ref() == Some(d))
                        && rec
                            .names
                            .iter()
                            .any(|n| n.starts_with(&tagged) || n.starts_with(&digested))
                })
            });
            return Ok(found.cloned());
        }
    }
    // A unique prefix of the ID (`crictl inspecti 3f57d9401f8d`).
    let hex = spec.strip_prefix("sha256:").unwrap_or(spec);
    if hex.len() >= 4 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        let mut matches = images.iter().filter(|i| i.id.hex().starts_with(hex));
        if let (Some(one), None) = (matches.next(), matches.next()) {
            return Ok(Some(one.clone()));
        }
    }
    Ok(None)
}

/// `sha256:<64 hex>` or the bare 64 hex digits of a sha256 digest.
fn full_digest(s: &str) -> Option<Digest> {
    if let Ok(d) = s.parse::<Digest>() {
        return Some(d);
    }
    if s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return format!("sha256:{s}").parse().ok();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_digests_with_and_without_algorithm() {
        let hex = "a".repeat(64);
        assert_eq!(
            full_digest(&hex).unwrap().to_string(),
            format!("sha256:{hex}")
        );
        assert!(full_digest(&format!("sha256:{hex}")).is_some());
        assert!(full_digest("busybox").is_none());
        assert!(full_digest(&hex[..12]).is_none());
    }
}
