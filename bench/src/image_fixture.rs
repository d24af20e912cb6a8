//! The pull benchmarks' fixture images: generated layer trees ([`crate::fixture_files`]) made
//! into an OCI layout by umoci (gzip layers), and pushed by skopeo to the private registry as
//! they are (`gzip`) or recompressed (`zstd`).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{bail, Context, Result};

use crate::fixture_files::{large_files_layer, Rng, TreeStats, UsrTree};

/// The image shapes the benchmarks pull.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Shape {
    /// ~8,000 files, ~200 MiB, 7 layers, sized like a Debian /usr.
    SmallFiles,
    /// A few large files: ~160 MB in 4 layers (`berth-bench pull`'s fixture).
    LargeFiles,
    /// ~1 GB in 6 layers of mostly large files.
    Big,
}

impl Shape {
    pub fn name(self) -> &'static str {
        match self {
            Shape::SmallFiles => "small-files",
            Shape::LargeFiles => "large-files",
            Shape::Big => "big",
        }
    }
}

/// Layer compressions the registry serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Compression {
    Gzip,
    Zstd,
}

impl Compression {
    pub fn name(self) -> &'static str {
        match self {
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
        }
    }

    pub fn parse(s: &str) -> Result<Compression> {
        match s {
            "gzip" => Ok(Compression::Gzip),
            "zstd" => Ok(Compression::Zstd),
            other => bail!("unknown variant {other} (gzip, zstd)"),
        }
    }
}

/// An OCI layout holding one image under `tag`, and what its layers hold.
pub struct Layout {
    pub path: PathBuf,
    pub tag: String,
    pub layers: usize,
    pub tree: TreeStats,
}

/// Fails naming the first tool of `tools` that is not on PATH.
pub fn require_tools(tools: &[&str]) -> Result<()> {
    for tool in tools {
        let ok = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            bail!("{tool} is not installed (scripts/install-deps)");
        }
    }
    Ok(())
}

/// `berth-bench pull`'s fixture (and the `large-files` and `big` shapes): `layers` layers
/// sized 4:3:2:1 (for 4) of about `size_mb` MB of [`large_files_layer`] trees. Stops with an
/// error before the next layer once `stop` is set.
pub fn build_large_files(
    work: &Path,
    tag: &str,
    layers: usize,
    size_mb: u64,
    stop: &AtomicBool,
) -> Result<Layout> {
    let mut layout = Layout::init(work.join(format!("layout-{tag}")), tag)?;
    let layers = layers.max(1) as u64;
    let weights: u64 = (1..=layers).sum();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    for l in 0..layers {
        check(stop)?;
        let src = work.join(format!("src-{tag}-{l}"));
        fs::create_dir_all(&src)?;
        let bytes = (size_mb << 20) * (layers - l) / weights;
        large_files_layer(&src, bytes, &mut rng)?;
        layout.insert(&src, &format!("/layer{l}"))?;
        fs::remove_dir_all(&src)?;
    }
    Ok(layout)
}

/// The `small-files` shape: `files` files totalling about `mib` MiB, in `layers` layers of a
/// /usr-like tree. Stops with an error before the next layer once `stop` is set.
pub fn build_usr(
    work: &Path,
    tag: &str,
    files: usize,
    mib: u64,
    layers: usize,
    stop: &AtomicBool,
) -> Result<Layout> {
    let mut layout = Layout::init(work.join(format!("layout-{tag}")), tag)?;
    let mut plan = UsrTree::plan(files, mib << 20, layers, 0x5EED_0F05_2026_1208);
    for l in 0..plan.layers() {
        check(stop)?;
        let src = work.join(format!("src-{tag}-{l}"));
        fs::create_dir_all(&src)?;
        let st = plan.write_layer(l, &src)?;
        layout.tree.add(&st);
        layout.insert(&src, "/")?;
        fs::remove_dir_all(&src)?;
    }
    Ok(layout)
}

/// Builds `shape` under `work` (the layout is `work/layout-<shape>`).
pub fn build(work: &Path, shape: Shape, stop: &AtomicBool) -> Result<Layout> {
    let tag = shape.name();
    match shape {
        Shape::SmallFiles => build_usr(work, tag, 8_000, 200, 7, stop),
        Shape::LargeFiles => build_large_files(work, tag, 4, 160, stop),
        Shape::Big => build_large_files(work, tag, 6, 1_000, stop),
    }
}

fn check(stop: &AtomicBool) -> Result<()> {
    if stop.load(Ordering::Relaxed) {
        bail!("interrupted while building the fixture");
    }
    Ok(())
}

impl Layout {
    fn init(path: PathBuf, tag: &str) -> Result<Layout> {
        run(Command::new("umoci").arg("init").arg("--layout").arg(&path))?;
        let layout = Layout {
            tag: tag.to_owned(),
            path,
            layers: 0,
            tree: TreeStats::default(),
        };
        run(Command::new("umoci").args(["new", "--image", &layout.image()]))?;
        Ok(layout)
    }

    fn image(&self) -> String {
        format!("{}:{}", self.path.display(), self.tag)
    }

    /// Adds `src`'s tree as a new layer at `at` inside the image.
    fn insert(&mut self, src: &Path, at: &str) -> Result<()> {
        run(Command::new("umoci")
            .args(["insert", "--image", &self.image()])
            .arg(src)
            .arg(at))?;
        self.layers += 1;
        if at != "/" {
            // The large-files generator does not count its tree; count it from the source.
            let st = count_tree(src)?;
            self.tree.add(&st);
        }
        Ok(())
    }

    /// Pushes the image as `reference` (`host/repo:tag` on the plain-HTTP registry), its
    /// layers recompressed for zstd, and checks that the registry serves them so.
    ///
    /// skopeo 1.9 reuses a blob the registry already holds under the source's digest instead
    /// of recompressing it (a zstd push after the gzip one gave the gzip manifest again), so
    /// zstd is made first into a second local layout, and every push keeps the digests
    /// (`--preserve-digests`: no blob is swapped for another compression of it).
    pub fn push(&self, reference: &str, compression: Compression) -> Result<()> {
        let source = match compression {
            Compression::Gzip => self.path.clone(),
            Compression::Zstd => {
                let zstd = self.path.with_file_name(format!(
                    "{}-zstd",
                    self.path.file_name().unwrap_or_default().to_string_lossy()
                ));
                let _ = fs::remove_dir_all(&zstd);
                run(Command::new("skopeo")
                    .args(["copy", "--quiet", "--dest-compress"])
                    .args(["--dest-compress-format", "zstd"])
                    .arg(format!("oci:{}", self.image()))
                    .arg(format!("oci:{}:{}", zstd.display(), self.tag)))?;
                zstd
            }
        };
        let pushed = run(Command::new("skopeo")
            .args([
                "copy",
                "--quiet",
                "--preserve-digests",
                "--dest-tls-verify=false",
            ])
            .arg(format!("oci:{}:{}", source.display(), self.tag))
            .arg(format!("docker://{reference}")));
        if source != self.path {
            let _ = fs::remove_dir_all(&source);
        }
        pushed?;
        let want = match compression {
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
        };
        let layers = manifest_layers(reference)?;
        if let Some((_, media_type)) = layers.iter().find(|(_, m)| !m.ends_with(want)) {
            bail!("pushed {reference} as {want}, but the registry serves a layer of type {media_type}");
        }
        Ok(())
    }
}

/// The summed size of the layers of `reference`'s manifest, as the registry serves it.
pub fn compressed_size(reference: &str) -> Result<u64> {
    Ok(manifest_layers(reference)?.iter().map(|(s, _)| s).sum())
}

/// The layers (size, media type) of `reference`'s manifest.
fn manifest_layers(reference: &str) -> Result<Vec<(u64, String)>> {
    let out = Command::new("skopeo")
        .args(["inspect", "--raw", "--tls-verify=false"])
        .arg(format!("docker://{reference}"))
        .output()
        .context("skopeo inspect")?;
    if !out.status.success() {
        bail!(
            "skopeo inspect {reference}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let m: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    Ok(m["layers"]
        .as_array()
        .map(|ls| {
            ls.iter()
                .map(|l| {
                    (
                        l["size"].as_u64().unwrap_or(0),
                        l["mediaType"].as_str().unwrap_or_default().to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default())
}

fn count_tree(dir: &Path) -> Result<TreeStats> {
    let mut st = TreeStats::default();
    let mut stack = vec![(dir.to_owned(), 0usize)];
    while let Some((d, depth)) = stack.pop() {
        st.max_depth = st.max_depth.max(depth);
        for e in fs::read_dir(&d)? {
            let e = e?;
            let t = e.file_type()?;
            if t.is_dir() {
                st.dirs += 1;
                stack.push((e.path(), depth + 1));
            } else if t.is_symlink() {
                st.symlinks += 1;
            } else {
                st.files += 1;
                st.bytes += e.metadata()?.len();
            }
        }
    }
    Ok(st)
}

fn run(cmd: &mut Command) -> Result<()> {
    let out = cmd.output().with_context(|| format!("{cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}
