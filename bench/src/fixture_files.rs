//! The file trees inside the pull benchmarks' fixture images, generated deterministically (the
//! same bytes every run, from a fixed seed):
//!
//! - [`large_files_layer`]: a few MB-sized files, half random bytes (incompressible) and half
//!   word text, plus ~10% of the bytes in small files (`berth-bench pull`'s fixture, and the
//!   `large-files` and `big` shapes of `pull-cri`);
//! - [`UsrTree`]: a tree shaped like a Debian `/usr` (the `small-files` shape): most files a few
//!   KiB, a tail up to a few MiB, executables and shared libraries (half-compressible, like ELF),
//!   text (scripts, modules, headers, docs), already-compressed files (man pages, `.gz` docs),
//!   packages' directories a few levels deep, and `.so` / alternatives symlinks.

use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use anyhow::Result;

/// A deterministic xorshift generator: the same fixture every run.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn fill(&mut self, buf: &mut [u8]) {
        for c in buf.chunks_mut(8) {
            let v = self.next().to_le_bytes();
            c.copy_from_slice(&v[..c.len()]);
        }
    }

    /// A uniform float in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Log-uniform in [lo, hi).
    fn log_uniform(&mut self, lo: u64, hi: u64) -> u64 {
        let (l, h) = ((lo as f64).ln(), (hi as f64).ln());
        (l + (h - l) * self.unit()).exp() as u64
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

const WORDS: &[&str] = &[
    "container",
    "runtime",
    "layer",
    "snapshot",
    "overlay",
    "digest",
    "manifest",
    "registry",
    "kubelet",
    "sandbox",
    "network",
    "namespace",
    "cgroup",
    "mount",
    "image",
    "config",
    "the",
    "a",
    "of",
    "and",
    "to",
    "in",
    "is",
    "for",
    "with",
    "on",
    "by",
    "node",
    "pod",
];

/// Writes `bytes` of random data or of text made of words.
fn write_file(path: &Path, bytes: u64, text: bool, rng: &mut Rng) -> Result<()> {
    let mut f = BufWriter::with_capacity(1 << 20, File::create(path)?);
    let mut buf = vec![0u8; 1 << 16];
    let mut left = bytes;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        if text {
            let mut i = 0;
            while i < n {
                let w = WORDS[(rng.next() % WORDS.len() as u64) as usize].as_bytes();
                for &b in w.iter().chain(b" ") {
                    if i < n {
                        buf[i] = b;
                        i += 1;
                    }
                }
            }
        } else {
            rng.fill(&mut buf[..n]);
        }
        f.write_all(&buf[..n])?;
        left -= n as u64;
    }
    f.flush()?;
    Ok(())
}

/// One layer of the large-files shape: ~45% random, ~45% text in files of 1–8 MB, ~10% small
/// files.
pub fn large_files_layer(dir: &Path, bytes: u64, rng: &mut Rng) -> Result<()> {
    let big = bytes * 9 / 10;
    let mut written = 0;
    let mut i = 0;
    while written < big {
        let size = (1 << 20) + rng.next() % (7 << 20);
        let size = size.min(big - written).max(1);
        let text = i % 2 == 1;
        let name = if text { "text" } else { "blob" };
        write_file(&dir.join(format!("{name}-{i}.dat")), size, text, rng)?;
        written += size;
        i += 1;
    }
    let small_dir = dir.join("small");
    let mut j = 0;
    while written < bytes {
        let sub = small_dir.join(format!("d{}", j / 64));
        fs::create_dir_all(&sub)?;
        let size = 512 + rng.next() % (16 << 10);
        write_file(&sub.join(format!("f{j}")), size, j % 3 != 0, rng)?;
        written += size;
        j += 1;
    }
    Ok(())
}

/// What a file of the /usr-like tree holds, which decides its place, mode and content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// `usr/bin/…`, 0755, ELF-like content.
    Executable,
    /// `usr/lib/x86_64-linux-gnu/<pkg>/lib….so.1`, ELF-like, with a `.so` symlink half the time.
    Library,
    /// `usr/lib/python3/dist-packages/<pkg>/<sub>/….py`, text.
    Module,
    /// `usr/include/<pkg>/….h`, text.
    Header,
    /// `usr/share/doc/<pkg>/…`, text.
    Doc,
    /// `usr/share/man/man1/….1.gz` or `usr/share/doc/<pkg>/changelog….gz`: incompressible.
    Compressed,
    /// `usr/share/locale/<lang>/LC_MESSAGES/<pkg>.mo`, ELF-like (tables of strings and offsets).
    Locale,
    /// `usr/share/<pkg>/data/…`, ELF-like.
    Data,
}

impl Kind {
    fn is_text(self) -> bool {
        matches!(self, Kind::Module | Kind::Header | Kind::Doc)
    }
}

/// Counts of what a tree holds.
#[derive(Debug, Clone, Copy, Default)]
pub struct TreeStats {
    pub files: u64,
    pub bytes: u64,
    pub text_files: u64,
    pub symlinks: u64,
    pub dirs: u64,
    /// The deepest directory below the layer's root.
    pub max_depth: usize,
}

impl TreeStats {
    pub fn add(&mut self, o: &TreeStats) {
        self.files += o.files;
        self.bytes += o.bytes;
        self.text_files += o.text_files;
        self.symlinks += o.symlinks;
        self.dirs += o.dirs;
        self.max_depth = self.max_depth.max(o.max_depth);
    }
}

/// A /usr-like image's files, planned up front (sizes, kinds, which layer) so that the whole
/// image totals the asked size; each layer's tree is then written by [`UsrTree::write_layer`].
pub struct UsrTree {
    /// Per layer: the files' (kind, size).
    layers: Vec<Vec<(Kind, u64)>>,
    rng: Rng,
}

/// Sizes like a Debian /usr's: most files a few KiB, a long tail (log-uniform within each
/// bucket; the shares are of the number of files).
const SIZE_BUCKETS: &[(f64, u64, u64)] = &[
    (0.635, 64, 8 << 10),
    (0.30, 8 << 10, 64 << 10),
    (0.06, 64 << 10, 512 << 10),
    (0.005, 512 << 10, 4 << 20),
];

/// The share of each layer (bottom first): a base layer and smaller ones on top.
const LAYER_WEIGHTS: &[u64] = &[30, 22, 15, 12, 9, 7, 5];

impl UsrTree {
    /// `files` files totalling about `bytes`, in `layers` layers.
    pub fn plan(files: usize, bytes: u64, layers: usize, seed: u64) -> UsrTree {
        let mut rng = Rng(seed);
        let mut sizes: Vec<u64> = (0..files)
            .map(|_| {
                let mut u = rng.unit();
                for &(share, lo, hi) in SIZE_BUCKETS {
                    if u < share {
                        return rng.log_uniform(lo, hi);
                    }
                    u -= share;
                }
                let (_, lo, hi) = SIZE_BUCKETS[0];
                rng.log_uniform(lo, hi)
            })
            .collect();
        // Scale to the asked total, keeping the shape of the distribution.
        let sum: u64 = sizes.iter().sum();
        let scale = bytes as f64 / sum.max(1) as f64;
        for s in &mut sizes {
            *s = ((*s as f64 * scale) as u64).max(1);
        }
        let layers = layers.max(1);
        let weights: Vec<u64> = (0..layers)
            .map(|l| LAYER_WEIGHTS.get(l).copied().unwrap_or(5))
            .collect();
        let total_weight: u64 = weights.iter().sum();
        let mut planned = vec![Vec::new(); layers];
        let mut next = 0;
        for (l, w) in weights.iter().enumerate() {
            let n = if l + 1 == layers {
                files - next
            } else {
                files * *w as usize / total_weight as usize
            };
            for &size in &sizes[next..next + n] {
                let kind = pick_kind(size, &mut rng);
                planned[l].push((kind, size));
            }
            next += n;
        }
        UsrTree {
            layers: planned,
            rng,
        }
    }

    pub fn layers(&self) -> usize {
        self.layers.len()
    }

    /// Writes layer `l`'s tree under `root` (as `root/usr/…`).
    pub fn write_layer(&mut self, l: usize, root: &Path) -> Result<TreeStats> {
        let mut st = TreeStats::default();
        let files = self.layers[l].clone();
        let rng = &mut self.rng;
        let mut buf = Vec::new();
        // Files come in packages of 8–60, each package with its own directories.
        let mut pkg = 0;
        let mut left_in_pkg = 0;
        let mut pkg_name = String::new();
        let mut made_dirs = std::collections::HashSet::new();
        for (i, (kind, size)) in files.into_iter().enumerate() {
            if left_in_pkg == 0 {
                pkg += 1;
                left_in_pkg = 8 + rng.below(53);
                pkg_name = format!("pkg{l}x{pkg}");
            }
            left_in_pkg -= 1;
            let (dir, name) = place(kind, &pkg_name, i, rng);
            let dir_path = root.join(&dir);
            if made_dirs.insert(dir.clone()) {
                fs::create_dir_all(&dir_path)?;
                st.dirs += 1;
                st.max_depth = st.max_depth.max(dir.matches('/').count() + 1);
            }
            buf.resize(size as usize, 0);
            fill_content(kind, &mut buf, rng);
            let path = dir_path.join(&name);
            fs::write(&path, &buf)?;
            st.files += 1;
            st.bytes += size;
            if kind.is_text() {
                st.text_files += 1;
            }
            match kind {
                Kind::Executable => {
                    fs::set_permissions(&path, fs::Permissions::from_mode(0o755))?;
                    // Some commands have a second name (an alternative, a compat name).
                    if rng.below(8) == 0 {
                        std::os::unix::fs::symlink(&name, dir_path.join(format!("{name}-compat")))?;
                        st.symlinks += 1;
                    }
                }
                Kind::Library if rng.below(2) == 0 => {
                    let dev = name.trim_end_matches(".1");
                    std::os::unix::fs::symlink(&name, dir_path.join(dev))?;
                    st.symlinks += 1;
                }
                _ => {}
            }
        }
        Ok(st)
    }
}

fn pick_kind(size: u64, rng: &mut Rng) -> Kind {
    // The tail is mostly shared libraries, executables and data.
    if size > (256 << 10) {
        return match rng.below(10) {
            0..=4 => Kind::Library,
            5..=6 => Kind::Executable,
            7..=8 => Kind::Data,
            _ => Kind::Compressed,
        };
    }
    match rng.below(100) {
        0..=11 => Kind::Executable,
        12..=23 => Kind::Library,
        24..=43 => Kind::Module,
        44..=53 => Kind::Header,
        54..=65 => Kind::Doc,
        66..=81 => Kind::Compressed,
        82..=89 => Kind::Locale,
        _ => Kind::Data,
    }
}

/// The directory (relative, `usr/…`) and file name of file `i` of package `pkg`.
fn place(kind: Kind, pkg: &str, i: usize, rng: &mut Rng) -> (String, String) {
    const LANGS: &[&str] = &["de", "fr", "es", "it", "ja", "pt_BR", "ru", "zh_CN"];
    const SUBS: &[&str] = &["", "core", "util", "tests", "_vendor/parse", "plugins/io"];
    match kind {
        Kind::Executable => ("usr/bin".into(), format!("{pkg}-tool{i}")),
        Kind::Library => (
            format!("usr/lib/x86_64-linux-gnu/{pkg}"),
            format!("lib{pkg}-{i}.so.1"),
        ),
        Kind::Module => {
            let sub = SUBS[rng.below(SUBS.len() as u64) as usize];
            let dir = if sub.is_empty() {
                format!("usr/lib/python3/dist-packages/{pkg}")
            } else {
                format!("usr/lib/python3/dist-packages/{pkg}/{sub}")
            };
            (dir, format!("mod{i}.py"))
        }
        Kind::Header => (format!("usr/include/{pkg}"), format!("h{i}.h")),
        Kind::Doc => (format!("usr/share/doc/{pkg}"), format!("README{i}")),
        Kind::Compressed => {
            if rng.below(2) == 0 {
                ("usr/share/man/man1".into(), format!("{pkg}-{i}.1.gz"))
            } else {
                (
                    format!("usr/share/doc/{pkg}"),
                    format!("changelog{i}.Debian.gz"),
                )
            }
        }
        Kind::Locale => {
            let lang = LANGS[rng.below(LANGS.len() as u64) as usize];
            (
                format!("usr/share/locale/{lang}/LC_MESSAGES"),
                format!("{pkg}-{i}.mo"),
            )
        }
        Kind::Data => (format!("usr/share/{pkg}/data"), format!("d{i}.bin")),
    }
}

/// Fills `buf` with what a file of `kind` holds.
fn fill_content(kind: Kind, buf: &mut [u8], rng: &mut Rng) {
    match kind {
        Kind::Module | Kind::Header | Kind::Doc => fill_text(buf, rng),
        Kind::Compressed => rng.fill(buf),
        Kind::Executable | Kind::Library | Kind::Locale | Kind::Data => fill_binary(buf, rng),
    }
}

/// Lines of words, as source and docs are.
fn fill_text(buf: &mut [u8], rng: &mut Rng) {
    let mut i = 0;
    let mut on_line = 0;
    while i < buf.len() {
        let w = WORDS[rng.below(WORDS.len() as u64) as usize].as_bytes();
        on_line += 1;
        let sep: &[u8] = if on_line >= 6 + rng.below(8) {
            on_line = 0;
            b"\n"
        } else {
            b" "
        };
        for &b in w.iter().chain(sep) {
            if i < buf.len() {
                buf[i] = b;
                i += 1;
            }
        }
    }
}

/// ELF-like bytes, which gzip shrinks to about half: in 64-byte blocks, half random, the rest
/// zeros or repeats of a fixed "instruction" table.
fn fill_binary(buf: &mut [u8], rng: &mut Rng) {
    static TABLE: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    let table = TABLE.get_or_init(|| {
        let mut t = vec![0u8; 4096];
        Rng(0xC0DE_C0DE_1234_5678).fill(&mut t);
        t
    });
    for block in buf.chunks_mut(64) {
        match rng.below(10) {
            0..=4 => rng.fill(block),
            5..=6 => block.fill(0),
            _ => {
                let at = rng.below((table.len() - 64) as u64) as usize;
                block.copy_from_slice(&table[at..at + block.len()]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usr_plan_totals_the_asked_size_and_count() {
        let t = UsrTree::plan(8000, 200 << 20, 7, 1);
        let files: Vec<_> = t.layers.iter().flatten().collect();
        assert_eq!(files.len(), 8000);
        assert_eq!(t.layers(), 7);
        let total: u64 = files.iter().map(|(_, s)| s).sum();
        let want = 200u64 << 20;
        assert!(total.abs_diff(want) < want / 100, "{total}");
        let mut sizes: Vec<u64> = files.iter().map(|(_, s)| *s).collect();
        sizes.sort_unstable();
        // Most files a few KiB, some up to a few MiB.
        assert!(sizes[sizes.len() / 2] < 16 << 10, "median {}", sizes[4000]);
        assert!(*sizes.last().unwrap() > 1 << 20);
        let text = files.iter().filter(|(k, _)| k.is_text()).count();
        assert!(text > 1500, "{text} text files");
    }

    #[test]
    fn usr_plan_is_deterministic() {
        let a = UsrTree::plan(500, 10 << 20, 3, 7);
        let b = UsrTree::plan(500, 10 << 20, 3, 7);
        assert_eq!(a.layers, b.layers);
    }
}
