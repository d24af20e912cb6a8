//! A trivial OCI bundle: a busybox-static rootfs and the config.json of `runc spec`, changed to
//! run a given command without a terminal.

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

/// Writes `dir/rootfs` (busybox plus its applet symlinks) and `dir/config.json`.
pub fn busybox(dir: &Path, busybox: &Path, runc: &Path, args: &[&str]) -> Result<PathBuf> {
    let bin = dir.join("rootfs/bin");
    fs::create_dir_all(&bin).with_context(|| format!("create {}", bin.display()))?;
    let target = bin.join("busybox");
    fs::copy(busybox, &target)
        .with_context(|| format!("copy {} to {}", busybox.display(), target.display()))?;
    fs::set_permissions(&target, fs::Permissions::from_mode(0o755))?;
    let list = Command::new(busybox)
        .arg("--list")
        .output()
        .with_context(|| format!("run {} --list", busybox.display()))?;
    if !list.status.success() {
        bail!("{} --list: {}", busybox.display(), list.status);
    }
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        let applet = applet.trim();
        if applet.is_empty() || applet == "busybox" || applet.contains('/') {
            continue;
        }
        symlink("busybox", bin.join(applet)).with_context(|| format!("symlink applet {applet}"))?;
    }
    for d in ["proc", "sys", "dev", "tmp", "etc"] {
        fs::create_dir_all(dir.join("rootfs").join(d))?;
    }

    // runc's own default spec, so that every runtime gets the config runc users get.
    let out = Command::new(runc)
        .arg("spec")
        .arg("--bundle")
        .arg(dir)
        .output()
        .with_context(|| format!("run {} spec", runc.display()))?;
    if !out.status.success() {
        bail!(
            "{} spec: {}: {}",
            runc.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let config = dir.join("config.json");
    let mut spec: serde_json::Value = serde_json::from_slice(
        &fs::read(&config).with_context(|| format!("read {}", config.display()))?,
    )
    .with_context(|| format!("parse {}", config.display()))?;
    let process = spec
        .get_mut("process")
        .and_then(|p| p.as_object_mut())
        .context("config.json from runc spec has no process")?;
    process.insert("terminal".into(), false.into());
    process.insert("args".into(), args.into());
    fs::write(&config, serde_json::to_vec_pretty(&spec)?)
        .with_context(|| format!("write {}", config.display()))?;
    Ok(dir.to_owned())
}
