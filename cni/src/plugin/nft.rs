//! nftables for berth's plugins (bridge's ipMasq, portmap), driven through the `nft` binary
//! as Kubernetes' knftables does: one `inet` table of berth's own (default `berth-cni`), NAT
//! base chains created idempotently, and rules tagged with a comment naming the attachment
//! they belong to. Every change is one atomic `nft -f -` transaction made under an exclusive
//! `flock`, so concurrent ADDs and DELs never lose each other's rules; the table is deleted
//! when its last tagged rule goes.

use std::fs;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use nix::fcntl::{Flock, FlockArg};
use serde_json::Value;

use crate::error::CniError;

/// The table berth's plugins use unless a config names another (`nftTable`).
pub const DEFAULT_TABLE: &str = "berth-cni";

/// Where the lock files live.
const LOCK_DIR: &str = "/run/berth/cni";

/// A NAT base chain of the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BaseChain {
    pub name: &'static str,
    pub hook: &'static str,
    pub priority: i32,
}

/// `prerouting`, dstnat.
pub(crate) const PREROUTING: BaseChain = BaseChain {
    name: "prerouting",
    hook: "prerouting",
    priority: -100,
};
/// `output`, dstnat (locally generated traffic, e.g. to 127.0.0.1:hostPort).
pub(crate) const OUTPUT: BaseChain = BaseChain {
    name: "output",
    hook: "output",
    priority: -100,
};
/// `postrouting`, srcnat.
pub(crate) const POSTROUTING: BaseChain = BaseChain {
    name: "postrouting",
    hook: "postrouting",
    priority: 100,
};

/// A rule to add: its base chain and its body (without the comment).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Rule {
    pub chain: BaseChain,
    pub body: String,
}

/// A tagged rule found in the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Found {
    pub chain: String,
    pub handle: u64,
    pub tag: String,
}

/// One `inet` table of berth's.
#[derive(Debug, Clone)]
pub(crate) struct Table {
    name: String,
}

fn nft_err(what: impl Into<String>, details: impl Into<String>) -> CniError {
    CniError::new(CniError::IO_FAILURE, what, details)
}

/// Whether `s` may appear inside a quoted nft comment or as a table name part.
fn plain(s: &str) -> bool {
    s.chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '=' | ':' | '/' | ' '))
}

/// FNV-1a, 64 bits: a hash that stays the same across builds (tags must survive upgrades).
pub(crate) fn fnv64(parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for b in p.bytes().chain(std::iter::once(0)) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h
}

/// The prefix of every tag of one plugin kind (`masq`, `hostport`) in one network.
pub(crate) fn network_tag(kind: &str, network: &str) -> String {
    format!("{kind} n={:08x} ", fnv64(&[network]) as u32)
}

/// The tag of one attachment's rules: readable when the IDs are plain and short, else hashed.
pub(crate) fn attachment_tag(
    kind: &str,
    network: &str,
    container_id: &str,
    ifname: &str,
) -> String {
    let prefix = network_tag(kind, network);
    let readable = format!("{prefix}c={container_id} i={ifname}");
    if readable.len() <= 120 && plain(&readable) {
        readable
    } else {
        format!("{prefix}h={:016x}", fnv64(&[container_id, ifname]))
    }
}

impl Table {
    /// The table named `name` (letters, digits, `_`, `-`; at most 64).
    pub fn new(name: &str) -> Result<Self, CniError> {
        let ok = !name.is_empty()
            && name.len() <= 64
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if !ok {
            return Err(CniError::new(
                CniError::INVALID_NETWORK_CONFIG,
                format!("nftTable {name:?} is not a valid table name"),
                "letters, digits, '_' and '-', at most 64",
            ));
        }
        Ok(Table {
            name: name.to_owned(),
        })
    }

    fn lock(&self) -> Result<Flock<fs::File>, CniError> {
        fs::create_dir_all(LOCK_DIR)
            .map_err(|e| nft_err(format!("create {LOCK_DIR}"), e.to_string()))?;
        let path = PathBuf::from(LOCK_DIR).join(format!("nft-{}.lock", self.name));
        let f = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| nft_err(format!("open {}", path.display()), e.to_string()))?;
        Flock::lock(f, FlockArg::LockExclusive)
            .map_err(|(_, e)| nft_err(format!("lock {}", path.display()), e.to_string()))
    }

    /// Every tagged rule of the table (none if the table does not exist).
    pub fn list(&self) -> Result<Vec<Found>, CniError> {
        let out = Command::new("nft")
            .args(["-j", "list", "table", "inet", &self.name])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| nft_err("run nft (is nftables installed?)", e.to_string()))?;
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            if err.contains("No such file or directory") {
                return Ok(Vec::new());
            }
            return Err(nft_err(
                format!("nft list table inet {}", self.name),
                err.trim(),
            ));
        }
        let doc: Value = serde_json::from_slice(&out.stdout)
            .map_err(|e| nft_err("nft printed invalid JSON", e.to_string()))?;
        Ok(doc["nftables"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|o| o.get("rule"))
            .filter_map(|r| {
                Some(Found {
                    chain: r["chain"].as_str()?.to_owned(),
                    handle: r["handle"].as_u64()?,
                    tag: r["comment"].as_str()?.to_owned(),
                })
            })
            .collect())
    }

    fn run(&self, script: &str) -> Result<(), CniError> {
        tracing::debug!(table = %self.name, %script, "nft transaction");
        let mut child = Command::new("nft")
            .args(["-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| nft_err("run nft (is nftables installed?)", e.to_string()))?;
        if let Some(mut w) = child.stdin.take() {
            w.write_all(script.as_bytes())
                .map_err(|e| nft_err("write to nft", e.to_string()))?;
        }
        let out = child
            .wait_with_output()
            .map_err(|e| nft_err("wait for nft", e.to_string()))?;
        if !out.status.success() {
            return Err(nft_err(
                format!("nft table inet {}: transaction failed", self.name),
                String::from_utf8_lossy(&out.stderr).trim().to_owned(),
            ));
        }
        Ok(())
    }

    fn skeleton(&self, chains: &[BaseChain]) -> String {
        let mut s = format!("add table inet {}\n", self.name);
        for c in chains {
            s += &format!(
                "add chain inet {} {} {{ type nat hook {} priority {}; policy accept; }}\n",
                self.name, c.name, c.hook, c.priority
            );
        }
        s
    }

    /// Makes `rules` the only rules tagged `tag` (an ADD retried is not doubled).
    pub fn replace(&self, tag: &str, rules: &[Rule]) -> Result<(), CniError> {
        let _lock = self.lock()?;
        let mut chains: Vec<BaseChain> = Vec::new();
        for r in rules {
            if !chains.contains(&r.chain) {
                chains.push(r.chain);
            }
        }
        let mut script = self.skeleton(&chains);
        for f in self.list()?.iter().filter(|f| f.tag == tag) {
            script += &format!(
                "delete rule inet {} {} handle {}\n",
                self.name, f.chain, f.handle
            );
        }
        for r in rules {
            script += &format!(
                "add rule inet {} {} {} comment \"{tag}\"\n",
                self.name, r.chain.name, r.body
            );
        }
        self.run(&script)
    }

    /// Removes the rules whose tag `doomed` selects; deletes the table when no tagged rule is
    /// left. Nothing to do (or no table) is fine. Returns how many rules went.
    pub fn remove_where(&self, doomed: impl Fn(&str) -> bool) -> Result<usize, CniError> {
        let _lock = self.lock()?;
        let found = self.list()?;
        let (gone, kept): (Vec<&Found>, Vec<&Found>) = found.iter().partition(|f| doomed(&f.tag));
        if gone.is_empty() && !kept.is_empty() {
            return Ok(0);
        }
        let script = if kept.is_empty() {
            if !self.exists()? {
                return Ok(0);
            }
            format!("delete table inet {}\n", self.name)
        } else {
            gone.iter()
                .map(|f| {
                    format!(
                        "delete rule inet {} {} handle {}\n",
                        self.name, f.chain, f.handle
                    )
                })
                .collect()
        };
        self.run(&script)?;
        Ok(gone.len())
    }

    /// Removes the rules tagged `tag`.
    pub fn remove(&self, tag: &str) -> Result<usize, CniError> {
        self.remove_where(|t| t == tag)
    }

    fn exists(&self) -> Result<bool, CniError> {
        let out = Command::new("nft")
            .args(["list", "table", "inet", &self.name])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map_err(|e| nft_err("run nft (is nftables installed?)", e.to_string()))?;
        Ok(out.success())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_are_stable_and_safe() {
        let t = attachment_tag("masq", "net", "abc123", "eth0");
        assert_eq!(
            t,
            format!("masq n={:08x} c=abc123 i=eth0", fnv64(&["net"]) as u32)
        );
        assert!(t.starts_with(&network_tag("masq", "net")));
        let weird = attachment_tag("masq", "net", "a\"b", "eth0");
        assert!(weird.contains(" h="), "{weird}");
        assert!(plain(&weird));
        // FNV-1a of the empty input is the offset basis xor 0 times the prime.
        assert_eq!(fnv64(&[]), 0xcbf2_9ce4_8422_2325);
        assert!(Table::new("berth-cni").is_ok());
        assert!(Table::new("bad name").is_err());
    }
}
