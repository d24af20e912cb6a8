//! The small operations on a running container: pause/resume, ps, update, stats/events.

use nix::unistd::Pid;
use oci_spec::runtime::LinuxResources;

use super::state::Container;
use super::ContainerStatus;
use crate::error::Result;

pub fn pause(container: &Container) -> Result<()> {
    container.require("pause", ContainerStatus::can_pause)?;
    container.cgroup()?.freeze()?;
    Ok(())
}

pub fn resume(container: &Container) -> Result<()> {
    container.require("resume", ContainerStatus::can_resume)?;
    container.cgroup()?.thaw()?;
    Ok(())
}

/// Every process of the container (its cgroup).
pub fn pids(container: &Container) -> Result<Vec<Pid>> {
    let mut pids = container.cgroup()?.pids()?;
    pids.sort();
    Ok(pids)
}

/// Applies new resources to a running container and records them in its config.
pub fn update(container: &mut Container, resources: &LinuxResources) -> Result<()> {
    container.require("update", |s| s != ContainerStatus::Stopped)?;
    container.cgroup()?.apply(resources)?;
    let merged = merge_resources(
        container
            .spec
            .linux()
            .as_ref()
            .and_then(|l| l.resources().clone())
            .unwrap_or_default(),
        resources,
    );
    let mut linux = container.spec.linux().clone().unwrap_or_default();
    linux.set_resources(Some(merged));
    container.spec.set_linux(Some(linux));
    container.save_spec()
}

/// `new` fields override `old` ones; absent fields keep the old value.
fn merge_resources(mut old: LinuxResources, new: &LinuxResources) -> LinuxResources {
    if new.memory().is_some() {
        old.set_memory(*new.memory());
    }
    if new.cpu().is_some() {
        old.set_cpu(new.cpu().clone());
    }
    if new.pids().is_some() {
        old.set_pids(*new.pids());
    }
    if new.block_io().is_some() {
        old.set_block_io(new.block_io().clone());
    }
    if new.hugepage_limits().is_some() {
        old.set_hugepage_limits(new.hugepage_limits().clone());
    }
    if new.network().is_some() {
        old.set_network(new.network().clone());
    }
    if new.unified().is_some() {
        old.set_unified(new.unified().clone());
    }
    old
}

/// Resource usage of the container's cgroup.
pub fn stats(container: &Container) -> Result<berth_cgroups::Stats> {
    Ok(container.cgroup()?.stats()?)
}
