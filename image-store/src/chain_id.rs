//! Layer chain IDs: the identity of a stack of layers (OCI image spec, "ChainID").

use std::fmt;

use crate::digest::Digest;

/// `ChainID(L0) = DiffID(L0)`, `ChainID(Ln) = sha256(ChainID(Ln-1) + " " + DiffID(Ln))`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct ChainId(Digest);

impl ChainId {
    /// The chain ID of a single base layer.
    pub fn base(diff_id: &Digest) -> ChainId {
        ChainId(diff_id.clone())
    }

    /// The chain ID of `diff_id` stacked on `self`.
    pub fn child(&self, diff_id: &Digest) -> ChainId {
        ChainId(Digest::sha256_of(
            format!("{} {}", self.0, diff_id).as_bytes(),
        ))
    }

    /// The chain IDs of every prefix of `diff_ids`, bottom first.
    pub fn chain(diff_ids: &[Digest]) -> Vec<ChainId> {
        let mut out: Vec<ChainId> = Vec::with_capacity(diff_ids.len());
        for d in diff_ids {
            let next = match out.last() {
                None => ChainId::base(d),
                Some(parent) => parent.child(d),
            };
            out.push(next);
        }
        out
    }

    /// The digest value.
    pub fn digest(&self) -> &Digest {
        &self.0
    }
}

impl fmt::Display for ChainId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl fmt::Debug for ChainId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ChainId({})", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_matches_spec_definition() {
        let a = Digest::sha256_of(b"a");
        let b = Digest::sha256_of(b"b");
        let c = Digest::sha256_of(b"c");
        let chain = ChainId::chain(&[a.clone(), b.clone(), c.clone()]);
        assert_eq!(chain.len(), 3);
        assert_eq!(chain[0].digest(), &a);
        let ab = Digest::sha256_of(format!("{a} {b}").as_bytes());
        assert_eq!(chain[1].digest(), &ab);
        let abc = Digest::sha256_of(format!("{ab} {c}").as_bytes());
        assert_eq!(chain[2].digest(), &abc);
        assert!(ChainId::chain(&[]).is_empty());
    }
}
