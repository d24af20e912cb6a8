//! `run`: a pod of its own (RunPodSandbox), the container in it (CreateContainer,
//! StartContainer); in the foreground, its output until it exits, and its exit code.

use std::collections::HashMap;
use std::io::Read;
use std::os::unix::ffi::OsStringExt;
use std::path::Path;

use anyhow::{bail, Context, Result};
use cri_api::v1 as cri;

use super::containers::{exit_byte, follow};
use super::{attach, run_options, LOG_DIR_ANNOTATION, RUN_LABEL};
use crate::client::{answer, Cri};
use crate::crilog::Parser;
use crate::remotecommand::End;
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
                value: v.as_bytes().to_vec(),
            }),
            _ => match std::env::var_os(kv) {
                // `-e NAME` passes the caller's value, as docker does (its bytes: the CRI
                // carries env values as bytes).
                Some(v) if !kv.is_empty() => Ok(cri::KeyValue {
                    key: kv.clone(),
                    value: v.into_vec(),
                }),
                _ => bail!("-e {kv:?}: expected K=V"),
            },
        })
        .collect()
}

pub async fn run(c: &mut Cri, args: &RunArgs) -> Result<u8> {
    let envs = envs(&args.env)?;
    let port_mappings = args
        .publish
        .iter()
        .map(|p| run_options::port_mapping(p))
        .collect::<Result<Vec<_>>>()?;
    if !port_mappings.is_empty() && args.net == Net::Host {
        bail!("-p needs the pod's own network: with --net host the container uses the node's ports directly");
    }
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
        port_mappings,
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
            let code = if args.interactive || args.tty {
                match attached(c, &id, args.interactive).await? {
                    Some(code) => code,
                    // Detached: the container runs on, `--rm` or not.
                    None => return Ok(0),
                }
            } else {
                following(c, &id).await?
            };
            if args.rm {
                super::containers::remove_id(c, &id, true).await?;
            }
            Ok(exit_byte(code))
        }
        Err(e) => {
            // Nothing left behind by a run that failed to start.
            let _ = super::pods::remove_id(c, &pod).await;
            Err(e)
        }
    }
}

/// `run -i/-t`: attached to the container's stdio; its exit code, or None when the user
/// detached. Output the container wrote before the attach began is in `berth logs` only.
async fn attached(c: &mut Cri, id: &str, interactive: bool) -> Result<Option<i32>> {
    match attach::attach_id(c, id, !interactive).await? {
        End::Exited(code) => Ok(Some(code)),
        End::Detached | End::Closed => Ok(None),
        End::Interrupted => {
            // Only without a TTY (on one Ctrl-C is a byte for the container's terminal).
            let stopper = tokio::spawn(stop_on_signals(c.clone(), id.to_owned(), true));
            let status = super::containers::wait_exited(c, id, STOP_WAIT).await?;
            stopper.abort();
            Ok(status.map(|s| s.exit_code))
        }
    }
}

/// A foreground `run` without a TTY: the log as it grows; the exit code. Ctrl-C (or SIGTERM)
/// stops the container as `berth stop` does — SIGTERM, SIGKILL after STOP_GRACE seconds (the
/// CRI has no call to send it an arbitrary signal such as SIGINT) — and a second Ctrl-C
/// kills it at once; berth then exits with the container's exit code.
async fn following(c: &mut Cri, id: &str) -> Result<i32> {
    let status = c
        .container_status(id, false)
        .await?
        .status
        .context("berthd answered no container status")?;
    let stopper = tokio::spawn(stop_on_signals(c.clone(), id.to_owned(), false));
    let status = follow(
        c,
        id,
        Path::new(&status.log_path),
        0,
        Parser::default(),
        false,
    )
    .await;
    stopper.abort();
    Ok(status?.exit_code)
}

/// Seconds between StopContainer's SIGTERM and its SIGKILL on Ctrl-C.
const STOP_GRACE: i64 = 10;
/// How long an interrupted attached `run` waits for the container to stop.
const STOP_WAIT: std::time::Duration = std::time::Duration::from_secs(STOP_GRACE as u64 + 10);

/// On SIGINT/SIGTERM (or at once, when `now`): StopContainer with STOP_GRACE; on another
/// SIGINT meanwhile, StopContainer with no grace (SIGKILL).
async fn stop_on_signals(mut c: Cri, id: String, now: bool) -> Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut int = signal(SignalKind::interrupt())?;
    let mut term = signal(SignalKind::terminate())?;
    if !now {
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
    }
    eprintln!(
        "berth: stopping {} (SIGTERM, SIGKILL after {STOP_GRACE} s; Ctrl-C again kills it now)",
        crate::table::short_id(&id, 13)
    );
    let mut killer = c.clone();
    let graceful = super::containers::stop_id(&mut c, &id, STOP_GRACE);
    tokio::select! {
        r = graceful => r,
        _ = int.recv() => super::containers::stop_id(&mut killer, &id, 0).await,
    }
}

/// The image's ID, pulled first when berthd does not have it.
async fn ensure_image(c: &mut Cri, image: &str) -> Result<String> {
    if let Ok(id) = c.resolve_image(image).await {
        return Ok(id);
    }
    let view = crate::pull_view::PullView::new(crate::pull_view::Out::Stderr, false);
    super::images::pull_with_progress(c, image, None, view).await
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
    let mut resources = cri::LinuxContainerResources::default();
    if let Some(m) = &args.memory {
        resources.memory_limit_in_bytes = run_options::memory_bytes(m)?;
    }
    if let Some(cpus) = &args.cpus {
        (resources.cpu_period, resources.cpu_quota) = run_options::cpu_quota(cpus)?;
    }
    let mounts = args
        .volume
        .iter()
        .map(|v| run_options::mount(v))
        .collect::<Result<Vec<_>>>()?;
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
        mounts,
        stdin: args.interactive,
        // As docker: a foreground `run -i` closes the container's stdin when berth's ends.
        stdin_once: args.interactive && !args.detach,
        tty: args.tty,
        linux: Some(cri::LinuxContainerConfig {
            security_context: Some(sc),
            resources: Some(resources),
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
            .map(|kv| (kv.key.as_str(), kv.value.as_slice()))
            .collect();
        assert_eq!(
            pairs,
            [("A", &b"1"[..]), ("B", &b"x=y"[..]), ("C", &b""[..])]
        );
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
