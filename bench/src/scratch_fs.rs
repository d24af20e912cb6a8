//! A private filesystem for a benchmark's daemons: a sparse ext4 image file, loop-mounted, so
//! that a `syncfs` by a daemon flushes the benchmark's own writes only, not those of everything
//! else writing to the machine's root filesystem (other engineers' builds). Unmounted when
//! dropped; `mount -o loop` sets the loop device to clear itself on that unmount.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

pub struct ScratchFs {
    pub mnt: PathBuf,
    image: PathBuf,
}

impl ScratchFs {
    /// A `gib` GiB ext4 at `<dir>/fs`, its image `<dir>/fs.img`.
    pub fn create(dir: &Path, gib: u64) -> Result<ScratchFs> {
        let image = dir.join("fs.img");
        File::create(&image)
            .and_then(|f| f.set_len(gib << 30))
            .with_context(|| format!("create {}", image.display()))?;
        run(Command::new("mkfs.ext4").args(["-q", "-F"]).arg(&image))
            .context("mkfs.ext4 (e2fsprogs)")?;
        let mnt = dir.join("fs");
        fs::create_dir_all(&mnt)?;
        run(Command::new("mount")
            .args(["-o", "loop"])
            .arg(&image)
            .arg(&mnt))?;
        Ok(ScratchFs { mnt, image })
    }
}

impl Drop for ScratchFs {
    fn drop(&mut self) {
        // Whatever the daemons left mounted below it first (bounded).
        let prefix = format!("{}/", self.mnt.display());
        let info = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let mut below: Vec<&str> = info
            .lines()
            .filter_map(|l| l.split(' ').nth(4))
            .filter(|p| p.starts_with(&prefix))
            .collect();
        below.sort_by_key(|p| std::cmp::Reverse(p.len()));
        for p in below {
            let _ = nix::mount::umount2(p, nix::mount::MntFlags::MNT_DETACH);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while let Err(e) = nix::mount::umount(&self.mnt) {
            if Instant::now() > deadline {
                eprintln!(
                    "umount {}: {e}; detaching it (the loop device clears once it is unused)",
                    self.mnt.display()
                );
                let _ = nix::mount::umount2(&self.mnt, nix::mount::MntFlags::MNT_DETACH);
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = fs::remove_file(&self.image);
    }
}

fn run(cmd: &mut Command) -> Result<()> {
    let out = cmd.output().with_context(|| format!("{cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}
