//! `pods`, `pod inspect|stop|rm`.

use anyhow::Result;
use cri_api::v1 as cri;

use super::{info_json, now_ns, print_json, LOG_DIR_ANNOTATION};
use crate::client::{answer, Cri};
use crate::table::{ago, render, short_id};
use crate::{Format, ListArgs};

pub fn state_name(state: i32) -> &'static str {
    match cri::PodSandboxState::try_from(state) {
        Ok(cri::PodSandboxState::SandboxReady) => "Ready",
        Ok(cri::PodSandboxState::SandboxNotready) => "NotReady",
        Err(_) => "Unknown",
    }
}

pub async fn list(c: &mut Cri, args: &ListArgs) -> Result<()> {
    let mut pods = c.pods().await?;
    pods.sort_by_key(|p| std::cmp::Reverse(p.created_at));
    if args.quiet {
        for p in &pods {
            println!("{}", p.id);
        }
        return Ok(());
    }
    if args.format == Format::Json {
        return print_json(&pods);
    }
    let now = now_ns();
    let rows: Vec<Vec<String>> = pods
        .iter()
        .map(|p| {
            let m = p.metadata.clone().unwrap_or_default();
            vec![
                short_id(&p.id, 13),
                ago(p.created_at, now),
                state_name(p.state).into(),
                m.name,
                m.namespace,
                m.attempt.to_string(),
                if p.runtime_handler.is_empty() {
                    "(default)".into()
                } else {
                    p.runtime_handler.clone()
                },
            ]
        })
        .collect();
    print!(
        "{}",
        render(
            &[
                "POD ID",
                "CREATED",
                "STATE",
                "NAME",
                "NAMESPACE",
                "ATTEMPT",
                "RUNTIME"
            ],
            &rows
        )
    );
    Ok(())
}

pub async fn status_json(c: &mut Cri, id: &str) -> Result<serde_json::Value> {
    let r =
        c.rt.pod_sandbox_status(cri::PodSandboxStatusRequest {
            pod_sandbox_id: id.to_owned(),
            verbose: true,
        })
        .await;
    let s = answer(r, &format!("pod status {id}"))?;
    let mut status = serde_json::to_value(&s.status)?;
    if let (Some(obj), Some(st)) = (status.as_object_mut(), s.status.as_ref()) {
        obj.insert("state".into(), state_name(st.state).into());
    }
    Ok(serde_json::json!({ "status": status, "info": info_json(&s.info) }))
}

pub async fn inspect(c: &mut Cri, queries: &[String]) -> Result<()> {
    let mut out = Vec::new();
    for q in queries {
        let id = c.resolve_pod(q).await?;
        out.push(status_json(c, &id).await?);
    }
    print_json(&out)
}

pub async fn stop(c: &mut Cri, queries: &[String]) -> Result<()> {
    for q in queries {
        let id = c.resolve_pod(q).await?;
        stop_id(c, &id).await?;
        println!("{id}");
    }
    Ok(())
}

async fn stop_id(c: &mut Cri, id: &str) -> Result<()> {
    let r =
        c.rt.stop_pod_sandbox(cri::StopPodSandboxRequest {
            pod_sandbox_id: id.to_owned(),
        })
        .await;
    answer(r, &format!("stop pod {id}"))?;
    Ok(())
}

/// Stops and removes a pod (its containers with it), and the log directory `berth run` made
/// for it.
pub async fn remove_id(c: &mut Cri, id: &str) -> Result<()> {
    let log_dir = c
        .pods()
        .await?
        .into_iter()
        .find(|p| p.id == id)
        .and_then(|p| p.annotations.get(LOG_DIR_ANNOTATION).cloned());
    stop_id(c, id).await?;
    let r =
        c.rt.remove_pod_sandbox(cri::RemovePodSandboxRequest {
            pod_sandbox_id: id.to_owned(),
        })
        .await;
    answer(r, &format!("remove pod {id}"))?;
    if let Some(dir) = log_dir.filter(|d| !d.is_empty()) {
        let _ = std::fs::remove_dir_all(dir);
    }
    Ok(())
}

pub async fn remove(c: &mut Cri, queries: &[String]) -> Result<()> {
    for q in queries {
        let id = c.resolve_pod(q).await?;
        remove_id(c, &id).await?;
        println!("{id}");
    }
    Ok(())
}
