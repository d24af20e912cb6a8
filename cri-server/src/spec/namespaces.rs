//! Namespaces of the pause and of containers (containerd's `sandboxContainerSpec` namespace
//! options and `WithPodNamespaces`), and the pod's user namespace mappings.

use std::path::PathBuf;

use cri_api::v1 as cri;
use oci_spec::runtime::{
    LinuxIdMapping, LinuxIdMappingBuilder, LinuxNamespace, LinuxNamespaceType,
};

use super::SpecError;

pub fn ns(typ: LinuxNamespaceType, path: Option<PathBuf>) -> LinuxNamespace {
    let mut ns = LinuxNamespace::default();
    ns.set_typ(typ);
    ns.set_path(path);
    ns
}

fn proc_ns(pid: i32, name: &str) -> Option<PathBuf> {
    Some(PathBuf::from(format!("/proc/{pid}/ns/{name}")))
}

/// The pod's user namespace, from `userns_options`: None (the node's) or the mappings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodUserns {
    pub uids: Vec<LinuxIdMapping>,
    pub gids: Vec<LinuxIdMapping>,
}

/// Mode NODE (or no options): the node's user namespace. Mode POD: a new one with the given
/// mappings, which must not be empty. CONTAINER and TARGET are not valid for user namespaces.
pub fn pod_userns(opts: Option<&cri::NamespaceOption>) -> Result<Option<PodUserns>, SpecError> {
    let Some(userns) = opts.and_then(|o| o.userns_options.as_ref()) else {
        return Ok(None);
    };
    match userns.mode() {
        cri::NamespaceMode::Node => Ok(None),
        cri::NamespaceMode::Pod => {
            let uids = mappings(&userns.uids, "namespace_options.userns_options.uids")?;
            let gids = mappings(&userns.gids, "namespace_options.userns_options.gids")?;
            Ok(Some(PodUserns { uids, gids }))
        }
        mode => Err(SpecError::Invalid {
            field: "namespace_options.userns_options.mode",
            reason: format!(
                "{} is not supported for user namespaces",
                mode.as_str_name()
            ),
        }),
    }
}

/// A container's user namespace: the pod's, which the container may repeat (the kubelet does)
/// but not differ from.
pub fn container_userns(
    pod: Option<&cri::NamespaceOption>,
    container: Option<&cri::NamespaceOption>,
) -> Result<Option<PodUserns>, SpecError> {
    let pod_maps = pod_userns(pod)?;
    if container.is_some_and(|o| o.userns_options.is_some()) && pod_userns(container)? != pod_maps {
        return Err(SpecError::Invalid {
            field: "security_context.namespace_options.userns_options",
            reason: "differs from the sandbox's user namespace".into(),
        });
    }
    Ok(pod_maps)
}

/// The kernel's limit on lines in a uid_map or gid_map.
const MAX_MAPPINGS: usize = 340;

/// CRI id mappings as OCI ones; at least one and at most 340, each of non-zero length, with
/// no range running past 2^32 - 1 and no two ranges overlapping on either side (the kernel
/// would refuse such a map with a bare EINVAL when the runtime writes it).
pub fn mappings(
    ids: &[cri::IdMapping],
    field: &'static str,
) -> Result<Vec<LinuxIdMapping>, SpecError> {
    let invalid = |reason: String| SpecError::Invalid { field, reason };
    if ids.is_empty() {
        return Err(invalid(
            "a user namespace needs at least one mapping".into(),
        ));
    }
    if ids.len() > MAX_MAPPINGS {
        return Err(invalid(format!(
            "{} mappings: the kernel takes at most {MAX_MAPPINGS}",
            ids.len()
        )));
    }
    let end = |start: u32, len: u32| u64::from(start) + u64::from(len);
    for (i, m) in ids.iter().enumerate() {
        let name = format!("mapping container {} → host {}", m.container_id, m.host_id);
        if m.length == 0 {
            return Err(invalid(format!("{name} has length 0")));
        }
        if end(m.container_id, m.length) > u64::from(u32::MAX)
            || end(m.host_id, m.length) > u64::from(u32::MAX)
        {
            return Err(invalid(format!(
                "{name} length {} runs past the largest id",
                m.length
            )));
        }
        for o in &ids[..i] {
            let overlap =
                |a: u32, b: u32| u64::from(a) < end(b, o.length) && u64::from(b) < end(a, m.length);
            if overlap(m.container_id, o.container_id) {
                return Err(invalid(format!(
                    "{name} length {} overlaps container ids {}..{} of another mapping",
                    m.length,
                    o.container_id,
                    end(o.container_id, o.length)
                )));
            }
            if overlap(m.host_id, o.host_id) {
                return Err(invalid(format!(
                    "{name} length {} overlaps host ids {}..{} of another mapping",
                    m.length,
                    o.host_id,
                    end(o.host_id, o.length)
                )));
            }
        }
    }
    Ok(ids
        .iter()
        .map(|m| {
            // The builder has a default for every field: it cannot fail.
            LinuxIdMappingBuilder::default()
                .container_id(m.container_id)
                .host_id(m.host_id)
                .size(m.length)
                .build()
                .unwrap_or_default()
        })
        .collect())
}

/// The pause's namespaces: network = the pinned netns (none of its own on the host network, and
/// then no UTS either); pid new unless NODE; ipc new unless NODE; uts and mount new; a user
/// namespace when the pod has one: the pinned one (`userns_path`, the netns's owner) or new.
pub fn sandbox(
    opts: Option<&cri::NamespaceOption>,
    netns: Option<&PathBuf>,
    userns: bool,
    userns_path: Option<&PathBuf>,
) -> Vec<LinuxNamespace> {
    let mode = |f: fn(&cri::NamespaceOption) -> cri::NamespaceMode| {
        opts.map(f).unwrap_or(cri::NamespaceMode::Pod)
    };
    let mut out = Vec::new();
    if mode(cri::NamespaceOption::pid) != cri::NamespaceMode::Node {
        out.push(ns(LinuxNamespaceType::Pid, None));
    }
    if let Some(netns) = netns {
        out.push(ns(LinuxNamespaceType::Network, Some(netns.clone())));
    }
    if mode(cri::NamespaceOption::ipc) != cri::NamespaceMode::Node {
        out.push(ns(LinuxNamespaceType::Ipc, None));
    }
    if netns.is_some() {
        out.push(ns(LinuxNamespaceType::Uts, None));
    }
    out.push(ns(LinuxNamespaceType::Mount, None));
    if userns {
        out.push(ns(LinuxNamespaceType::User, userns_path.cloned()));
    }
    out
}

/// A container's namespaces: net, ipc and uts of the pause; pid of the pause (POD, and NODE,
/// where the pause is in the host's), of the target container (TARGET) or new (CONTAINER); the
/// pod's user namespace; a new mount namespace; a new cgroup namespace on cgroup v2 unless
/// privileged.
pub fn container(
    opts: Option<&cri::NamespaceOption>,
    sandbox_pid: i32,
    target_pid: Option<i32>,
    userns: bool,
    cgroupns: bool,
) -> Result<Vec<LinuxNamespace>, SpecError> {
    let pid_mode = opts
        .map(cri::NamespaceOption::pid)
        .unwrap_or(cri::NamespaceMode::Pod);
    let pid = match pid_mode {
        cri::NamespaceMode::Container => None,
        cri::NamespaceMode::Target => {
            let target = target_pid.ok_or_else(|| SpecError::Invalid {
                field: "security_context.namespace_options.target_id",
                reason: format!(
                    "pid namespace TARGET {:?}: the target container is not running",
                    opts.map(|o| o.target_id.as_str()).unwrap_or_default()
                ),
            })?;
            proc_ns(target, "pid")
        }
        cri::NamespaceMode::Pod | cri::NamespaceMode::Node => proc_ns(sandbox_pid, "pid"),
    };
    let mut out = vec![
        ns(LinuxNamespaceType::Pid, pid),
        ns(LinuxNamespaceType::Network, proc_ns(sandbox_pid, "net")),
        ns(LinuxNamespaceType::Ipc, proc_ns(sandbox_pid, "ipc")),
        ns(LinuxNamespaceType::Uts, proc_ns(sandbox_pid, "uts")),
        ns(LinuxNamespaceType::Mount, None),
    ];
    if userns {
        out.push(ns(LinuxNamespaceType::User, proc_ns(sandbox_pid, "user")));
    }
    if cgroupns {
        out.push(ns(LinuxNamespaceType::Cgroup, None));
    }
    Ok(out)
}

/// Drops from a container's namespaces those the pod takes from the host (network and UTS
/// with a NODE network, IPC and PID when NODE): the container stays in them rather than
/// joining the pause's, which are the host's anyway.
pub fn keep_host_namespaces(list: &mut Vec<LinuxNamespace>, pod: Option<&cri::NamespaceOption>) {
    let node = |f: fn(&cri::NamespaceOption) -> cri::NamespaceMode| {
        pod.is_some_and(|o| f(o) == cri::NamespaceMode::Node)
    };
    let (net, ipc, pid) = (
        node(cri::NamespaceOption::network),
        node(cri::NamespaceOption::ipc),
        node(cri::NamespaceOption::pid),
    );
    list.retain(|n| match n.typ() {
        LinuxNamespaceType::Network | LinuxNamespaceType::Uts => !net,
        LinuxNamespaceType::Ipc => !ipc,
        LinuxNamespaceType::Pid => !pid,
        _ => true,
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(network: i32, pid: i32, ipc: i32) -> cri::NamespaceOption {
        cri::NamespaceOption {
            network,
            pid,
            ipc,
            ..Default::default()
        }
    }

    fn kinds(list: &[LinuxNamespace]) -> Vec<(LinuxNamespaceType, Option<String>)> {
        list.iter()
            .map(|n| (n.typ(), n.path().as_ref().map(|p| p.display().to_string())))
            .collect()
    }

    const POD: i32 = cri::NamespaceMode::Pod as i32;
    const CONTAINER: i32 = cri::NamespaceMode::Container as i32;
    const NODE: i32 = cri::NamespaceMode::Node as i32;
    const TARGET: i32 = cri::NamespaceMode::Target as i32;

    #[test]
    fn sandbox_matrix() {
        use LinuxNamespaceType::*;
        let netns = PathBuf::from("/run/berth/netns/p1");
        let all = sandbox(Some(&opts(POD, POD, POD)), Some(&netns), false, None);
        assert_eq!(
            kinds(&all),
            [
                (Pid, None),
                (Network, Some("/run/berth/netns/p1".into())),
                (Ipc, None),
                (Uts, None),
                (Mount, None)
            ]
        );
        // CONTAINER pid (no shareProcessNamespace) still gives the pause its own pid ns.
        assert_eq!(
            kinds(&sandbox(
                Some(&opts(POD, CONTAINER, POD)),
                Some(&netns),
                false,
                None
            )),
            kinds(&all)
        );
        // No options at all: same as POD everywhere.
        assert_eq!(
            kinds(&sandbox(None, Some(&netns), false, None)),
            kinds(&all)
        );
        // Host network, pid and ipc: only a mount namespace.
        assert_eq!(
            kinds(&sandbox(Some(&opts(NODE, NODE, NODE)), None, false, None)),
            [(Mount, None)]
        );
        let with_user = sandbox(None, Some(&netns), true, None);
        assert_eq!(with_user.last().unwrap().typ(), User);
        // The pod's pinned user namespace (the netns's owner) is joined by path.
        let userns = PathBuf::from("/run/berth/sandboxes/p1/userns");
        let joined = sandbox(None, Some(&netns), true, Some(&userns));
        assert_eq!(
            kinds(&joined).last().unwrap(),
            &(User, Some("/run/berth/sandboxes/p1/userns".into()))
        );
    }

    #[test]
    fn container_matrix() {
        use LinuxNamespaceType::*;
        let p = |s: &str| Some(s.to_string());
        let pod = container(Some(&opts(POD, POD, POD)), 42, None, false, false).unwrap();
        assert_eq!(
            kinds(&pod),
            [
                (Pid, p("/proc/42/ns/pid")),
                (Network, p("/proc/42/ns/net")),
                (Ipc, p("/proc/42/ns/ipc")),
                (Uts, p("/proc/42/ns/uts")),
                (Mount, None)
            ]
        );
        let own = container(Some(&opts(POD, CONTAINER, POD)), 42, None, false, false).unwrap();
        assert_eq!(kinds(&own)[0], (Pid, None));
        let node = container(Some(&opts(NODE, NODE, NODE)), 42, None, false, false).unwrap();
        assert_eq!(kinds(&node)[0], (Pid, p("/proc/42/ns/pid")));
        let target = container(Some(&opts(POD, TARGET, POD)), 42, Some(77), false, false).unwrap();
        assert_eq!(kinds(&target)[0], (Pid, p("/proc/77/ns/pid")));
        let err = container(Some(&opts(POD, TARGET, POD)), 42, None, false, false)
            .unwrap_err()
            .to_string();
        assert!(err.contains("target_id"), "{err}");
        let mut kept = container(Some(&opts(NODE, NODE, POD)), 42, None, true, false).unwrap();
        keep_host_namespaces(&mut kept, Some(&opts(NODE, NODE, POD)));
        assert_eq!(
            kinds(&kept),
            [
                (Ipc, p("/proc/42/ns/ipc")),
                (Mount, None),
                (User, p("/proc/42/ns/user"))
            ]
        );
        let userns = container(None, 42, None, true, true).unwrap();
        assert_eq!(
            kinds(&userns)[5..],
            [(User, p("/proc/42/ns/user")), (Cgroup, None)]
        );
    }

    #[test]
    fn userns_options() {
        let m = |c, h, l| cri::IdMapping {
            container_id: c,
            host_id: h,
            length: l,
        };
        let with = |mode: cri::NamespaceMode, uids, gids| cri::NamespaceOption {
            userns_options: Some(cri::UserNamespace {
                mode: mode as i32,
                uids,
                gids,
            }),
            ..Default::default()
        };
        assert_eq!(pod_userns(None).unwrap(), None);
        assert_eq!(
            pod_userns(Some(&with(cri::NamespaceMode::Node, vec![], vec![]))).unwrap(),
            None
        );
        let pod = pod_userns(Some(&with(
            cri::NamespaceMode::Pod,
            vec![m(0, 100000, 65536)],
            vec![m(0, 200000, 65536)],
        )))
        .unwrap()
        .unwrap();
        assert_eq!(
            (
                pod.uids[0].host_id(),
                pod.uids[0].size(),
                pod.gids[0].host_id()
            ),
            (100000, 65536, 200000)
        );
        assert!(pod_userns(Some(&with(cri::NamespaceMode::Pod, vec![], vec![]))).is_err());
        assert!(pod_userns(Some(&with(
            cri::NamespaceMode::Pod,
            vec![m(0, 1, 0)],
            vec![m(0, 1, 1)]
        )))
        .is_err());
        assert!(pod_userns(Some(&with(cri::NamespaceMode::Container, vec![], vec![]))).is_err());
        let err = |uids, gids| {
            pod_userns(Some(&with(cri::NamespaceMode::Pod, uids, gids)))
                .unwrap_err()
                .to_string()
        };
        let ok = vec![m(0, 100000, 65536)];
        let e = err(vec![m(0, 100000, 65536), m(1000, 300000, 10)], ok.clone());
        assert!(
            e.contains("userns_options.uids") && e.contains("overlaps container ids 0..65536"),
            "{e}"
        );
        let e = err(ok.clone(), vec![m(0, 100000, 10), m(10, 100005, 10)]);
        assert!(
            e.contains("userns_options.gids") && e.contains("overlaps host ids 100000..100010"),
            "{e}"
        );
        let e = err(ok.clone(), vec![]);
        assert!(
            e.contains("userns_options.gids") && e.contains("at least one"),
            "{e}"
        );
        let e = err(vec![m(0, u32::MAX - 5, 10)], ok.clone());
        assert!(e.contains("runs past the largest id"), "{e}");
        // Adjacent ranges are fine.
        assert!(pod_userns(Some(&with(
            cri::NamespaceMode::Pod,
            vec![m(0, 100000, 10), m(10, 100010, 10)],
            ok
        )))
        .is_ok());
    }
}
