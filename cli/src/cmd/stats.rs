//! `stats`: ListContainerStats of running containers — CPU (from two samples
//! `SAMPLE` apart when berthd reports no rate), memory working set and limit, writable
//! layer use. A table, or JSON with the raw CRI stats.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::Result;
use cri_api::v1 as cri;

use super::print_json;
use crate::client::{answer, Cri};
use crate::table::{human_size, render, short_id};
use crate::{Format, StatsArgs};

const SAMPLE: Duration = Duration::from_millis(500);

async fn sample(c: &mut Cri, ids: &[String]) -> Result<Vec<cri::ContainerStats>> {
    let r =
        c.rt.list_container_stats(cri::ListContainerStatsRequest::default())
            .await;
    let mut stats = answer(r, "container stats")?.stats;
    if !ids.is_empty() {
        stats.retain(|s| s.attributes.as_ref().is_some_and(|a| ids.contains(&a.id)));
    }
    Ok(stats)
}

fn cpu_ns(s: &cri::ContainerStats) -> Option<(i64, u64)> {
    let cpu = s.cpu.as_ref()?;
    Some((cpu.timestamp, cpu.usage_core_nano_seconds.as_ref()?.value))
}

/// CPU use in percent of one CPU.
fn cpu_percent(now: &cri::ContainerStats, before: Option<&cri::ContainerStats>) -> Option<f64> {
    if let Some(rate) = now.cpu.as_ref().and_then(|c| c.usage_nano_cores.as_ref()) {
        return Some(rate.value as f64 / 1e7);
    }
    let (t1, u1) = cpu_ns(now)?;
    let (t0, u0) = cpu_ns(before?)?;
    let dt = t1.checked_sub(t0).filter(|d| *d > 0)?;
    Some(u1.saturating_sub(u0) as f64 / dt as f64 * 100.0)
}

pub async fn stats(c: &mut Cri, args: &StatsArgs) -> Result<()> {
    let mut ids = Vec::new();
    for q in &args.containers {
        ids.push(c.resolve_container(q).await?);
    }
    let first = sample(c, &ids).await?;
    if args.format == Format::Json {
        return print_json(&first);
    }
    tokio::time::sleep(SAMPLE).await;
    let second = sample(c, &ids).await?;
    let before: HashMap<&str, &cri::ContainerStats> = first
        .iter()
        .filter_map(|s| s.attributes.as_ref().map(|a| (a.id.as_str(), s)))
        .collect();
    let mut rows = Vec::new();
    for s in &second {
        let Some(a) = &s.attributes else { continue };
        let cpu = cpu_percent(s, before.get(a.id.as_str()).copied())
            .map_or_else(|| "--".to_owned(), |p| format!("{p:.2}%"));
        let mem = s.memory.as_ref();
        let used = mem
            .and_then(|m| m.working_set_bytes.as_ref())
            .map(|v| v.value);
        let avail = mem
            .and_then(|m| m.available_bytes.as_ref())
            .map(|v| v.value);
        let mem_col = match (used, avail) {
            (Some(u), Some(av)) => format!("{} / {}", human_size(u), human_size(u + av)),
            (Some(u), None) => human_size(u),
            _ => "--".into(),
        };
        let disk = s
            .writable_layer
            .as_ref()
            .and_then(|w| w.used_bytes.as_ref())
            .map_or_else(|| "--".to_owned(), |v| human_size(v.value));
        rows.push(vec![
            short_id(&a.id, 13),
            a.metadata
                .as_ref()
                .map(|m| m.name.clone())
                .unwrap_or_default(),
            cpu,
            mem_col,
            disk,
        ]);
    }
    rows.sort();
    print!(
        "{}",
        render(
            &[
                "CONTAINER ID",
                "NAME",
                "CPU %",
                "MEM USAGE / LIMIT",
                "WRITABLE LAYER"
            ],
            &rows
        )
    );
    Ok(())
}
