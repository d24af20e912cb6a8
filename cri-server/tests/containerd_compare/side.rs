//! One runtime under test: its CRI client, how its answers are normalised, the pod and
//! container configs of the scenario, and the CRI calls it makes (each recording what it saw).

use crate::observe::*;
use crate::*;

/// One runtime under test and what the scenario needs to normalise its answers.
pub struct Side<'a> {
    pub name: &'static str,
    pub channel: Channel,
    pub image: String,
    pub logs: PathBuf,
    pub cgroup_parent: String,
    /// The /24's first three octets.
    pub subnet: String,
    /// Replacements applied to every recorded value: (literal, name).
    pub names: Vec<(String, String)>,
    /// Where containerd's netns paths are registered for cleanup.
    pub netns: Option<&'a Mutex<Vec<PathBuf>>>,
    pub obs: Obs,
    /// When the scenario started (ns since the epoch).
    pub t0: i64,
}

impl<'a> Side<'a> {
    pub async fn new(
        name: &'static str,
        d: &'a Daemon,
        image: &str,
        names: &[(String, String)],
    ) -> Side<'a> {
        Side {
            name,
            channel: d.channel().await,
            image: image.to_owned(),
            logs: d.dir.join("logs"),
            cgroup_parent: d.cgroup_parent.clone(),
            subnet: d.prefix.clone(),
            names: names
                .iter()
                .cloned()
                .chain([(d.dir.join("logs").display().to_string(), "{logs}".into())])
                .collect(),
            netns: Some(&d.netns),
            obs: Obs::new(),
            t0: chrono::Utc::now().timestamp_nanos_opt().unwrap(),
        }
    }

    pub fn norm(&self, s: &str) -> String {
        let mut s = s.to_owned();
        for (literal, name) in &self.names {
            if !literal.is_empty() {
                s = s.replace(literal.as_str(), name);
            }
        }
        s
    }

    pub fn rec(&mut self, key: &str, value: impl AsRef<str>) {
        let v = self.norm(value.as_ref());
        self.obs.insert(key.to_owned(), v);
    }

    pub fn name_id(&mut self, id: &str, name: &str) {
        self.names.push((id.to_owned(), format!("{{{name}}}")));
    }

    pub fn rt(&self) -> Rt {
        RuntimeServiceClient::new(self.channel.clone())
    }
}

pub const NAMESPACES: cri::NamespaceOption = cri::NamespaceOption {
    network: cri::NamespaceMode::Pod as i32,
    pid: cri::NamespaceMode::Container as i32,
    ipc: cri::NamespaceMode::Pod as i32,
    target_id: String::new(),
    userns_options: None,
};

pub fn pod_config(side: &Side) -> cri::PodSandboxConfig {
    cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata {
            name: "cmp".into(),
            uid: "uid-cmp".into(),
            namespace: "test".into(),
            attempt: 0,
        }),
        hostname: "cmp".into(),
        log_directory: side.logs.display().to_string(),
        dns_config: Some(cri::DnsConfig {
            servers: vec!["10.96.0.10".into()],
            searches: vec!["test.svc.cluster.local".into()],
            options: vec!["ndots:5".into()],
        }),
        labels: HashMap::from([("app".to_owned(), "cmp".to_owned())]),
        annotations: HashMap::from([("note".to_owned(), "compare".to_owned())]),
        linux: Some(cri::LinuxPodSandboxConfig {
            cgroup_parent: format!("/{}/podcmp", side.cgroup_parent),
            security_context: Some(cri::LinuxSandboxSecurityContext {
                namespace_options: Some(NAMESPACES),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub fn container_config(side: &Side, name: &str, script: &str) -> cri::ContainerConfig {
    cri::ContainerConfig {
        metadata: Some(cri::ContainerMetadata {
            name: name.into(),
            attempt: 0,
        }),
        image: Some(cri::ImageSpec {
            image: side.image.clone(),
            ..Default::default()
        }),
        command: vec!["sh".into(), "-c".into(), script.into()],
        envs: vec![cri::KeyValue {
            key: "FOO".into(),
            value: "bar".into(),
        }],
        log_path: format!("{name}/0.log"),
        labels: HashMap::from([("app".to_owned(), name.to_owned())]),
        annotations: HashMap::from([("note".to_owned(), format!("container {name}"))]),
        linux: Some(cri::LinuxContainerConfig {
            // What the kubelet sends for a BestEffort pod.
            resources: Some(cri::LinuxContainerResources {
                cpu_shares: 2,
                oom_score_adj: 1000,
                ..Default::default()
            }),
            security_context: Some(cri::LinuxContainerSecurityContext {
                namespace_options: Some(NAMESPACES),
                ..Default::default()
            }),
        }),
        ..Default::default()
    }
}

pub async fn create(side: &mut Side<'_>, pod: &str, config: cri::ContainerConfig) -> String {
    let name = config.metadata.as_ref().unwrap().name.clone();
    let pod_config = pod_config(side);
    let id = side
        .rt()
        .create_container(cri::CreateContainerRequest {
            pod_sandbox_id: pod.into(),
            config: Some(config),
            sandbox_config: Some(pod_config),
        })
        .await
        .unwrap_or_else(|e| panic!("{}: CreateContainer {name}: {e:?}", side.name))
        .into_inner()
        .container_id;
    side.name_id(&id, &format!("ctr:{name}"));
    id
}

pub async fn start(side: &Side<'_>, id: &str) {
    side.rt()
        .start_container(cri::StartContainerRequest {
            container_id: id.into(),
        })
        .await
        .unwrap_or_else(|e| panic!("{}: StartContainer {}: {e:?}", side.name, side.norm(id)));
}

pub async fn status(side: &Side<'_>, id: &str) -> cri::ContainerStatus {
    side.rt()
        .container_status(cri::ContainerStatusRequest {
            container_id: id.into(),
            verbose: false,
        })
        .await
        .unwrap_or_else(|e| panic!("{}: ContainerStatus: {e:?}", side.name))
        .into_inner()
        .status
        .expect("a status")
}

pub async fn wait_exited(side: &Side<'_>, id: &str) -> cri::ContainerStatus {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let s = status(side, id).await;
        if s.state == cri::ContainerState::ContainerExited as i32 {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "{}: {} still {} after 60 s",
            side.name,
            side.norm(id),
            state_name(s.state)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub async fn exec(side: &mut Side<'_>, key: &str, id: &str, cmd: &[&str], timeout: i64) -> String {
    let r = side
        .rt()
        .exec_sync(cri::ExecSyncRequest {
            container_id: id.into(),
            cmd: cmd.iter().map(|s| s.to_string()).collect(),
            timeout,
        })
        .await;
    let v = match &r {
        Ok(r) => {
            let r = r.get_ref();
            format!(
                "exit {} stdout {:?} stderr {:?}",
                r.exit_code,
                String::from_utf8_lossy(&r.stdout),
                String::from_utf8_lossy(&r.stderr)
            )
        }
        Err(e) => format!("error {:?}", e.code()),
    };
    side.rec(key, &v);
    match r {
        Ok(r) => String::from_utf8_lossy(&r.into_inner().stdout).into_owned(),
        Err(_) => String::new(),
    }
}

pub async fn list(side: &mut Side<'_>, key: &str, filter: cri::ContainerFilter) {
    let r = side
        .rt()
        .list_containers(cri::ListContainersRequest {
            filter: Some(filter),
        })
        .await;
    let v = match r {
        Ok(r) => {
            let mut names: Vec<String> = r
                .into_inner()
                .containers
                .into_iter()
                .map(|c| {
                    format!(
                        "{}:{}",
                        c.metadata.map(|m| m.name).unwrap_or_default(),
                        state_name(c.state)
                    )
                })
                .collect();
            names.sort();
            names.join(",")
        }
        Err(e) => format!("error {:?}", e.code()),
    };
    side.rec(key, v);
}
