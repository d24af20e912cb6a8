//! `run`: a pod of its own (RunPodSandbox), the container in it (CreateContainer,
//! StartContainer); in the foreground, its output until it exits, and its exit code.

use std::collections::HashMap;
use std::io::Read;
use std::path::Path;

use anyhow::{bail, Context, Result};
use k8s_cri::v1 as cri;

use super::containers::{exit_byte, follow};
use super::{LOG_DIR_ANNOTATION, RUN_LABEL};
use crate::client::{answer, Cri};
use crate::crilog::Parser;
use crate::{Net, RunArgs};

/// Where pods' log directories go (`BERTH_LOG_ROOT` overrides it).
pub const DEFAULT_LOG_ROOT: &str = "/var/log/berth/pods";
pub const NAMESPACE: &str = "berth";

fn random_hex(bytes: usize) -> Result<String> {
    let mut buf = vec![0u8; bytes];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .context("read /dev/urandom")?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

/// A name from the image: `docker.io/library/busybox:1.36` → `busybox-<6 hex>`.
fn generated_name(image: &str) -> Result<String> {
    let base = image.rsplit('/').next().unwrap_or(image);
    let base = base.split([':', '@']).next().unwrap_or(base);
    let base: String = base
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    Ok(format!("{}-{}", base.trim_matches('-'), random_hex(3)?))
}

/// `--user`: UID[:GID] or NAME[:GID].
fn security_user(user: &str, sc: &mut cri::LinuxContainerSecurityContext) -> Result<()> {
    let (u, g) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    match u.parse::<i64>() {
        Ok(uid) => sc.run_as_user = Some(cri::Int64Value { value: uid }),
        Err(_) => sc.run_as_username = u.to_owned(),
    }
    if let Some(g) = g {
        let gid = g
            .parse::<i64>()
            .with_context(|| format!("--user {user}: the group must be a numeric GID"))?;
        sc.run_as_group = Some(cri::Int64Value { value: gid });
    }
    Ok(())
}

fn envs(env: &[String]) -> Result<Vec<cri::KeyValue>> {
    env.iter()
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok(cri::KeyValue {
                key: k.to_owned(),
                value: v.to_owned(),
            }),
            _ => match std::env::var(kv) {
                // `-e NAME` passes the caller's value, as docker does.
                Ok(v) if !kv.is_empty() => Ok(cri::KeyValue {
                    key: kv.clone(),
                    value: v,
                }),
                _ => bail!("-e {kv:?}: expected K=V"),
            },
        })
        .collect()
}

pub async fn run(c: &mut Cri, args: &RunArgs) -> Result<u8> {
    if args.interactive || args.tty {
        bail!(
            "run -i/-t is not supported yet: berth runs containers without a terminal or \
             stdin; leave out -i and -t (or use -d and `berth exec`)"
        );
    }
    let envs = envs(&args.env)?;
    let image = ensure_image(c, &args.image).await?;
    let name = match &args.name {
        Some(n) => n.clone(),
        None => generated_name(&args.image)?,
    };
    if c.containers()
        .await?
        .iter()
        .any(|k| k.metadata.as_ref().is_some_and(|m| m.name == name))
    {
        bail!("the name {name:?} is in use by a container: remove it (`berth rm {name}`) or pick another --name");
    }
    let uid = random_hex(16)?;
    let log_root = std::env::var("BERTH_LOG_ROOT").unwrap_or_else(|_| DEFAULT_LOG_ROOT.into());
    let log_dir = Path::new(&log_root).join(format!("{NAMESPACE}_{name}_{uid}"));
    let labels = HashMap::from([(RUN_LABEL.to_owned(), "true".to_owned())]);
    let namespaces = cri::NamespaceOption {
        network: match args.net {
            Net::Host => cri::NamespaceMode::Node,
            Net::Bridge => cri::NamespaceMode::Pod,
        } as i32,
        pid: cri::NamespaceMode::Container as i32,
        ipc: cri::NamespaceMode::Pod as i32,
        ..Default::default()
    };
    let pod_config = cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata {
            name: name.clone(),
            uid,
            namespace: NAMESPACE.into(),
            attempt: 0,
        }),
        hostname: if args.net == Net::Host {
            String::new()
        } else {
            name.clone()
        },
        log_directory: log_dir.display().to_string(),
        labels: labels.clone(),
        annotations: HashMap::from([(
            LOG_DIR_ANNOTATION.to_owned(),
            log_dir.display().to_string(),
        )]),
        linux: Some(cri::LinuxPodSandboxConfig {
            security_context: Some(cri::LinuxSandboxSecurityContext {
                namespace_options: Some(namespaces.clone()),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let r =
        c.rt.run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(pod_config.clone()),
            runtime_handler: String::new(),
        })
        .await;
    let pod = answer(r, "run the pod")?.pod_sandbox_id;
    match create_and_start(
        c,
        args,
        &pod,
        &pod_config,
        &name,
        &image,
        envs,
        labels,
        namespaces,
    )
    .await
    {
        Ok(id) => {
            if args.detach {
                println!("{id}");
                return Ok(0);
            }
            let status = c
                .container_status(&id, false)
                .await?
                .status
                .context("berthd answered no container status")?;
            let status = follow(
                c,
                &id,
                Path::new(&status.log_path),
                0,
                Parser::default(),
                false,
            )
            .await?;
            if args.rm {
                super::containers::remove_id(c, &id, true).await?;
            }
            Ok(exit_byte(status.exit_code))
        }
        Err(e) => {
            // Nothing left behind by a run that failed to start.
            let _ = super::pods::remove_id(c, &pod).await;
            Err(e)
        }
    }
}

/// The image's ID, pulled first when berthd does not have it.
async fn ensure_image(c: &mut Cri, image: &str) -> Result<String> {
    if let Ok(id) = c.resolve_image(image).await {
        return Ok(id);
    }
    super::images::pull_quiet(c, image).await
}

#[allow(clippy::too_many_arguments)]
async fn create_and_start(
    c: &mut Cri,
    args: &RunArgs,
    pod: &str,
    pod_config: &cri::PodSandboxConfig,
    name: &str,
    image: &str,
    envs: Vec<cri::KeyValue>,
    labels: HashMap<String, String>,
    namespaces: cri::NamespaceOption,
) -> Result<String> {
    let mut sc = cri::LinuxContainerSecurityContext {
        namespace_options: Some(namespaces),
        ..Default::default()
    };
    if let Some(user) = &args.user {
        security_user(user, &mut sc)?;
    }
    // CRI: `command` replaces the ENTRYPOINT, `args` the CMD.
    let config = cri::ContainerConfig {
        metadata: Some(cri::ContainerMetadata {
            name: name.to_owned(),
            attempt: 0,
        }),
        image: Some(cri::ImageSpec {
            image: image.to_owned(),
            ..Default::default()
        }),
        command: args.entrypoint.iter().cloned().collect(),
        args: args.cmd.clone(),
        working_dir: args.workdir.clone().unwrap_or_default(),
        envs,
        log_path: format!("{name}/0.log"),
        labels,
        linux: Some(cri::LinuxContainerConfig {
            security_context: Some(sc),
            ..Default::default()
        }),
        ..Default::default()
    };
    let r =
        c.rt.create_container(cri::CreateContainerRequest {
            pod_sandbox_id: pod.to_owned(),
            config: Some(config),
            sandbox_config: Some(pod_config.clone()),
        })
        .await;
    let id = answer(r, "create the container")?.container_id;
    let r =
        c.rt.start_container(cri::StartContainerRequest {
            container_id: id.clone(),
        })
        .await;
    answer(r, "start the container")?;
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users() {
        let mut sc = cri::LinuxContainerSecurityContext::default();
        security_user("1000:2000", &mut sc).unwrap();
        assert_eq!(sc.run_as_user.as_ref().map(|v| v.value), Some(1000));
        assert_eq!(sc.run_as_group.as_ref().map(|v| v.value), Some(2000));
        let mut sc = cri::LinuxContainerSecurityContext::default();
        security_user("nobody", &mut sc).unwrap();
        assert_eq!(sc.run_as_username, "nobody");
        assert!(sc.run_as_user.is_none());
        assert!(security_user("a:b", &mut sc).is_err());
    }

    #[test]
    fn env_pairs() {
        let e = envs(&["A=1".into(), "B=x=y".into(), "C=".into()]).unwrap();
        let pairs: Vec<_> = e
            .iter()
            .map(|kv| (kv.key.as_str(), kv.value.as_str()))
            .collect();
        assert_eq!(pairs, [("A", "1"), ("B", "x=y"), ("C", "")]);
        assert!(envs(&["=v".into()]).is_err());
    }

    #[test]
    fn names() {
        let n = generated_name("127.0.0.1:5000/my_app:v1").unwrap();
        assert!(
            n.starts_with("my-app-") && n.len() == "my-app-".len() + 6,
            "{n}"
        );
    }
}
