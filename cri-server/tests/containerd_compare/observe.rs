//! Observations as comparable strings: gRPC codes, states, container statuses, CRI log
//! records, stats fields, and what a container sees of itself.

use crate::side::Side;
use crate::*;

pub fn code<T>(r: &Result<T, tonic::Status>) -> String {
    match r {
        Ok(_) => "OK".into(),
        Err(s) => format!("{:?}", s.code()),
    }
}

pub fn state_name(s: i32) -> String {
    cri::ContainerState::try_from(s)
        .map(|s| s.as_str_name().to_owned())
        .unwrap_or_else(|_| format!("?{s}"))
}

pub fn pod_state_name(s: i32) -> String {
    cri::PodSandboxState::try_from(s)
        .map(|s| s.as_str_name().to_owned())
        .unwrap_or_else(|_| format!("?{s}"))
}

/// Records a container's status: state, exit code, reason, message, timestamps' order, image
/// references, log path, labels, metadata.
pub fn record_status(side: &mut Side<'_>, key: &str, s: &cri::ContainerStatus, t0_ns: i64) {
    let now = chrono::Utc::now().timestamp_nanos_opt().unwrap();
    side.rec(&format!("{key}.state"), state_name(s.state));
    side.rec(&format!("{key}.exit_code"), s.exit_code.to_string());
    side.rec(&format!("{key}.reason"), &s.reason);
    side.rec(&format!("{key}.message"), &s.message);
    let in_window = |t: i64| t >= t0_ns && t <= now;
    let times = match s.state {
        x if x == cri::ContainerState::ContainerCreated as i32 => {
            format!(
                "created in window {}, started {}, finished {}",
                in_window(s.created_at),
                s.started_at,
                s.finished_at
            )
        }
        x if x == cri::ContainerState::ContainerRunning as i32 => format!(
            "created <= started in window {}, finished {}",
            in_window(s.created_at) && s.created_at <= s.started_at && in_window(s.started_at),
            s.finished_at
        ),
        _ => format!(
            "created <= started, all in window {}",
            in_window(s.created_at)
                && s.created_at <= s.started_at
                && in_window(s.started_at)
                && in_window(s.finished_at)
        ),
    };
    side.rec(&format!("{key}.timestamps"), times);
    if s.finished_at > 0 {
        side.rec(
            &format!("{key}.started <= finished"),
            (s.started_at <= s.finished_at).to_string(),
        );
    }
    side.rec(
        &format!("{key}.image"),
        s.image
            .as_ref()
            .map(|i| i.image.clone())
            .unwrap_or_default(),
    );
    side.rec(&format!("{key}.image_ref"), &s.image_ref);
    side.rec(&format!("{key}.log_path"), &s.log_path);
    side.rec(&format!("{key}.labels"), format!("{:?}", sorted(&s.labels)));
    side.rec(
        &format!("{key}.annotations"),
        format!("{:?}", sorted(&s.annotations)),
    );
    side.rec(&format!("{key}.metadata"), format!("{:?}", s.metadata));
    side.rec(&format!("{key}.mounts"), format!("{:?}", s.mounts));
}

pub fn sorted(m: &HashMap<String, String>) -> BTreeMap<&String, &String> {
    m.iter().collect()
}

/// The CRI log's records as `stream tag content` (content over 40 bytes as its length), and
/// whether every timestamp parses as RFC 3339 and never goes back in time within a stream
/// (across streams it may: containerd stamps each stream's records as it reads them, and
/// writes them as they come).
pub fn log_records(path: &Path) -> (Vec<String>, bool) {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut ok = true;
    let mut last = HashMap::new();
    let mut out = Vec::new();
    for l in text.lines() {
        let mut parts = l.splitn(4, ' ');
        let ts = parts.next().unwrap_or("");
        let stream = parts.next().unwrap_or("?");
        match chrono::DateTime::parse_from_rfc3339(ts) {
            Ok(t) => {
                if last.get(stream).is_some_and(|l| t < *l) {
                    ok = false;
                }
                last.insert(stream, t);
            }
            Err(_) => ok = false,
        }
        let tag = parts.next().unwrap_or("?");
        let content = parts.next().unwrap_or("");
        let content = if content.len() > 40 {
            format!("<{} bytes>", content.len())
        } else {
            content.to_owned()
        };
        out.push(format!("{stream} {tag} {content}"));
    }
    (out, ok && !text.is_empty())
}

/// Which fields of a ContainerStats are set (and non-zero where they must be).
pub fn stats_fields(s: &cri::ContainerStats) -> String {
    let mut f = Vec::new();
    let v = |x: &Option<cri::UInt64Value>| match x {
        None => "none",
        Some(v) if v.value > 0 => "set",
        Some(_) => "zero",
    };
    if let Some(c) = &s.cpu {
        f.push(format!(
            "cpu.usage_core_nano_seconds={}",
            v(&c.usage_core_nano_seconds)
        ));
        f.push(format!("cpu.timestamp={}", c.timestamp > 0));
    } else {
        f.push("cpu=none".into());
    }
    if let Some(m) = &s.memory {
        f.push(format!(
            "memory.working_set_bytes={}",
            v(&m.working_set_bytes)
        ));
        f.push(format!("memory.usage_bytes={}", v(&m.usage_bytes)));
        f.push(format!("memory.rss_bytes={}", v(&m.rss_bytes)));
        f.push(format!("memory.page_faults={}", v(&m.page_faults)));
        f.push(format!("memory.timestamp={}", m.timestamp > 0));
    } else {
        f.push("memory=none".into());
    }
    if let Some(w) = &s.writable_layer {
        f.push(format!(
            "writable_layer.used_bytes={}",
            w.used_bytes.as_ref().map_or("none", |_| "set")
        ));
        f.push(format!(
            "writable_layer.inodes_used={}",
            w.inodes_used.as_ref().map_or("none", |_| "set")
        ));
        f.push(format!(
            "writable_layer.mountpoint={}",
            w.fs_id.as_ref().is_some_and(|f| !f.mountpoint.is_empty())
        ));
    } else {
        f.push("writable_layer=none".into());
    }
    f.push(format!(
        "attributes.id={}",
        s.attributes
            .as_ref()
            .map_or("none", |a| if a.id.is_empty() { "empty" } else { "set" })
    ));
    f.join(" ")
}

/// What a container sees of itself: capabilities, seccomp, no_new_privs from /proc/self/status.
pub fn proc_status_security(status: &str) -> String {
    status
        .lines()
        .filter(|l| {
            [
                "CapInh",
                "CapPrm",
                "CapEff",
                "CapBnd",
                "CapAmb",
                "NoNewPrivs",
                "Seccomp:",
            ]
            .iter()
            .any(|p| l.starts_with(p))
        })
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect::<Vec<_>>()
        .join("; ")
}

/// Mount points with their type and the security-relevant flags.
pub fn mounts_view(mounts: &str) -> Vec<(String, String)> {
    mounts
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let (point, fstype, opts) = (f.get(1)?, f.get(2)?, f.get(3)?);
            let flags: Vec<&str> = opts
                .split(',')
                .filter(|o| ["ro", "rw", "nosuid", "nodev", "noexec"].contains(o))
                .collect();
            Some((point.to_string(), format!("{fstype} {}", flags.join(","))))
        })
        .collect()
}
