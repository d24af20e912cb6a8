//! containerd's CRI annotations (`io.kubernetes.cri.*`) on the pause and container specs.

use std::collections::HashMap;

use cri_api::v1 as cri;

pub const CONTAINER_TYPE: &str = "io.kubernetes.cri.container-type";
pub const SANDBOX_ID: &str = "io.kubernetes.cri.sandbox-id";
pub const SANDBOX_NAME: &str = "io.kubernetes.cri.sandbox-name";
pub const SANDBOX_NAMESPACE: &str = "io.kubernetes.cri.sandbox-namespace";
pub const SANDBOX_UID: &str = "io.kubernetes.cri.sandbox-uid";
pub const SANDBOX_LOG_DIRECTORY: &str = "io.kubernetes.cri.sandbox-log-directory";
pub const CONTAINER_NAME: &str = "io.kubernetes.cri.container-name";
pub const IMAGE_NAME: &str = "io.kubernetes.cri.image-name";

/// The pod's identity, on every spec of the pod.
fn pod(sandbox_id: &str, pod: &cri::PodSandboxConfig) -> HashMap<String, String> {
    let meta = pod.metadata.clone().unwrap_or_default();
    [
        (SANDBOX_ID, sandbox_id.to_string()),
        (SANDBOX_NAME, meta.name),
        (SANDBOX_NAMESPACE, meta.namespace),
        (SANDBOX_UID, meta.uid),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// The pause's: the pod's annotations, then container-type=sandbox, the pod's identity and log
/// directory (the CRI keys win).
pub fn sandbox(id: &str, config: &cri::PodSandboxConfig) -> HashMap<String, String> {
    let mut out = config.annotations.clone();
    out.extend(pod(id, config));
    out.insert(CONTAINER_TYPE.into(), "sandbox".into());
    out.insert(SANDBOX_LOG_DIRECTORY.into(), config.log_directory.clone());
    out
}

/// A container's: its config's annotations, the extra ones berthd passes, then
/// container-type=container, the pod's identity, the container's name and image (the CRI keys
/// win).
pub fn container(
    sandbox_id: &str,
    pod_config: &cri::PodSandboxConfig,
    config: &cri::ContainerConfig,
    image_name: &str,
    extra: &HashMap<String, String>,
) -> HashMap<String, String> {
    let mut out = config.annotations.clone();
    out.extend(extra.iter().map(|(k, v)| (k.clone(), v.clone())));
    out.extend(pod(sandbox_id, pod_config));
    out.insert(CONTAINER_TYPE.into(), "container".into());
    out.insert(
        CONTAINER_NAME.into(),
        config.metadata.clone().unwrap_or_default().name,
    );
    out.insert(IMAGE_NAME.into(), image_name.to_string());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod_config() -> cri::PodSandboxConfig {
        cri::PodSandboxConfig {
            metadata: Some(cri::PodSandboxMetadata {
                name: "web".into(),
                uid: "u-1".into(),
                namespace: "default".into(),
                attempt: 0,
            }),
            log_directory: "/var/log/pods/x".into(),
            annotations: [
                ("team".to_string(), "a".to_string()),
                (CONTAINER_TYPE.to_string(), "forged".to_string()),
            ]
            .into_iter()
            .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn sandbox_annotations() {
        let a = sandbox("sb1", &pod_config());
        assert_eq!(a[CONTAINER_TYPE], "sandbox");
        assert_eq!(a[SANDBOX_ID], "sb1");
        assert_eq!(a[SANDBOX_NAME], "web");
        assert_eq!(a[SANDBOX_NAMESPACE], "default");
        assert_eq!(a[SANDBOX_UID], "u-1");
        assert_eq!(a[SANDBOX_LOG_DIRECTORY], "/var/log/pods/x");
        assert_eq!(a["team"], "a");
    }

    #[test]
    fn container_annotations() {
        let config = cri::ContainerConfig {
            metadata: Some(cri::ContainerMetadata {
                name: "app".into(),
                attempt: 1,
            }),
            annotations: [("k".to_string(), "v".to_string())].into_iter().collect(),
            ..Default::default()
        };
        let extra = [("berth.extra".to_string(), "1".to_string())]
            .into_iter()
            .collect();
        let a = container(
            "sb1",
            &pod_config(),
            &config,
            "docker.io/library/busybox:1",
            &extra,
        );
        assert_eq!(a[CONTAINER_TYPE], "container");
        assert_eq!(a[CONTAINER_NAME], "app");
        assert_eq!(a[IMAGE_NAME], "docker.io/library/busybox:1");
        assert_eq!(a[SANDBOX_ID], "sb1");
        assert_eq!(a["k"], "v");
        assert_eq!(a["berth.extra"], "1");
        assert!(!a.contains_key("team"), "pod annotations stay on the pause");
    }
}
