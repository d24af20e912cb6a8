//! The scenario's queries of a running pod: stats and ListContainers filters.

use crate::observe::*;
use crate::side::*;
use crate::*;

/// Container and pod stats.
pub async fn stats(side: &mut Side<'_>, pod: &str, main: &str) {
    let unknown = UNKNOWN;
    let mut rt = side.rt();
    // Stats: containerd fills the writable layer from a periodic snapshot sync (1 s here).
    let deadline = Instant::now() + Duration::from_secs(10);
    let stats = loop {
        let s = rt
            .container_stats(cri::ContainerStatsRequest {
                container_id: main.to_owned(),
            })
            .await
            .map(|r| r.into_inner().stats);
        match s {
            Ok(Some(s)) if s.writable_layer.is_some() || Instant::now() > deadline => break Ok(s),
            Ok(Some(_)) => tokio::time::sleep(Duration::from_millis(200)).await,
            Ok(None) => break Err("no stats".to_owned()),
            Err(e) => break Err(format!("error {:?}", e.code())),
        }
    };
    side.rec(
        "stats.main",
        match &stats {
            Ok(s) => stats_fields(s),
            Err(e) => e.clone(),
        },
    );
    let all = rt
        .list_container_stats(cri::ListContainerStatsRequest {
            filter: Some(cri::ContainerStatsFilter {
                pod_sandbox_id: pod.to_owned(),
                ..Default::default()
            }),
        })
        .await;
    side.rec(
        "stats.list for the pod",
        match all {
            Ok(r) => format!("{} entries", r.into_inner().stats.len()),
            Err(e) => format!("error {:?}", e.code()),
        },
    );
    let ps = rt
        .pod_sandbox_stats(cri::PodSandboxStatsRequest {
            pod_sandbox_id: pod.to_owned(),
        })
        .await;
    side.rec(
        "stats.pod",
        match ps {
            Ok(r) => {
                let s = r.into_inner().stats.unwrap_or_default();
                let l = s.linux.unwrap_or_default();
                format!(
                    "cpu={} memory={} network={} process={} containers={}",
                    l.cpu.is_some(),
                    l.memory.is_some(),
                    l.network.is_some(),
                    l.process.is_some(),
                    l.containers.len()
                )
            }
            Err(e) => format!("error {:?}", e.code()),
        },
    );
    let st = rt
        .container_stats(cri::ContainerStatsRequest {
            container_id: unknown.to_owned(),
        })
        .await;
    side.rec("stats.unknown container", code(&st));
}

/// ListContainers filters.
pub async fn filters(side: &mut Side<'_>, pod: &str, main: &str) {
    let unknown = UNKNOWN;
    // Filters.
    let running = || {
        Some(cri::ContainerStateValue {
            state: cri::ContainerState::ContainerRunning as i32,
        })
    };
    list(side, "list.all", cri::ContainerFilter::default()).await;
    list(
        side,
        "list.pod",
        cri::ContainerFilter {
            pod_sandbox_id: pod.to_owned(),
            ..Default::default()
        },
    )
    .await;
    list(
        side,
        "list.running",
        cri::ContainerFilter {
            state: running(),
            ..Default::default()
        },
    )
    .await;
    list(
        side,
        "list.exited",
        cri::ContainerFilter {
            state: Some(cri::ContainerStateValue {
                state: cri::ContainerState::ContainerExited as i32,
            }),
            ..Default::default()
        },
    )
    .await;
    list(
        side,
        "list.label app=main",
        cri::ContainerFilter {
            label_selector: HashMap::from([("app".to_owned(), "main".to_owned())]),
            ..Default::default()
        },
    )
    .await;
    list(
        side,
        "list.id prefix",
        cri::ContainerFilter {
            id: main[..12].to_owned(),
            ..Default::default()
        },
    )
    .await;
    list(
        side,
        "list.unknown pod",
        cri::ContainerFilter {
            pod_sandbox_id: unknown.to_owned(),
            ..Default::default()
        },
    )
    .await;
    list(
        side,
        "list.running + label app=out",
        cri::ContainerFilter {
            state: running(),
            label_selector: HashMap::from([("app".to_owned(), "out".to_owned())]),
            ..Default::default()
        },
    )
    .await;
}
