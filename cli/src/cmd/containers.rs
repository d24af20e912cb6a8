//! `ps`, `logs`, `exec`, `stop`, `rm`, `inspect`.

use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use cri_api::v1 as cri;

use super::{info_json, now_ns, print_json, RUN_LABEL};
use crate::client::{answer, Cri};
use crate::crilog::{self, LogLine, Parser, Stream};
use crate::table::{ago, render, short_id};
use crate::{ExecArgs, Format, LogsArgs, PsArgs, RmArgs, StopArgs};

pub fn state_name(state: i32) -> &'static str {
    match cri::ContainerState::try_from(state) {
        Ok(cri::ContainerState::ContainerCreated) => "Created",
        Ok(cri::ContainerState::ContainerRunning) => "Running",
        Ok(cri::ContainerState::ContainerExited) => "Exited",
        _ => "Unknown",
    }
}

fn is(state: i32, want: cri::ContainerState) -> bool {
    state == want as i32
}

pub async fn list(c: &mut Cri, args: &PsArgs) -> Result<()> {
    let mut containers = c.containers().await?;
    containers.retain(|k| args.all || !is(k.state, cri::ContainerState::ContainerExited));
    containers.sort_by_key(|k| std::cmp::Reverse(k.created_at));
    if args.list.quiet {
        for k in &containers {
            println!("{}", k.id);
        }
        return Ok(());
    }
    if args.list.format == Format::Json {
        return print_json(&containers);
    }
    // Image IDs shown as their first tag.
    let tags: HashMap<String, String> = c
        .images()
        .await?
        .into_iter()
        .filter_map(|i| i.repo_tags.first().cloned().map(|t| (i.id, t)))
        .collect();
    let now = now_ns();
    let mut rows = Vec::new();
    for k in &containers {
        let image = k
            .image
            .as_ref()
            .map(|i| i.image.clone())
            .unwrap_or_default();
        let image = tags
            .get(&image)
            .or_else(|| tags.get(&k.image_ref))
            .cloned()
            .unwrap_or(image);
        let mut status = state_name(k.state).to_owned();
        if is(k.state, cri::ContainerState::ContainerExited) {
            if let Ok(s) = c.container_status(&k.id, false).await {
                if let Some(s) = s.status {
                    status = format!("Exited ({}) {}", s.exit_code, ago(s.finished_at, now));
                }
            }
        }
        rows.push(vec![
            short_id(&k.id, 13),
            image,
            ago(k.created_at, now),
            status,
            k.metadata
                .as_ref()
                .map(|m| m.name.clone())
                .unwrap_or_default(),
            short_id(&k.pod_sandbox_id, 13),
        ]);
    }
    print!(
        "{}",
        render(
            &[
                "CONTAINER ID",
                "IMAGE",
                "CREATED",
                "STATUS",
                "NAME",
                "POD ID"
            ],
            &rows
        )
    );
    Ok(())
}

pub fn print_lines(lines: &[LogLine], timestamps: bool) {
    let mut out = std::io::stdout().lock();
    let mut err = std::io::stderr().lock();
    for l in lines {
        let text = if timestamps {
            format!("{} {}\n", l.timestamp, l.content)
        } else {
            format!("{}\n", l.content)
        };
        let _ = match l.stream {
            Stream::Stdout => out.write_all(text.as_bytes()),
            Stream::Stderr => err.write_all(text.as_bytes()),
        };
    }
    let _ = out.flush();
    let _ = err.flush();
}

/// The bytes of `path` from `offset` on (none while it does not exist); moves `offset`.
fn read_from(path: &Path, offset: &mut u64) -> Vec<u8> {
    let mut buf = Vec::new();
    if let Ok(mut f) = std::fs::File::open(path) {
        if f.seek(SeekFrom::Start(*offset)).is_ok() && f.read_to_end(&mut buf).is_ok() {
            *offset += buf.len() as u64;
        }
    }
    buf
}

/// Prints the log as it grows until the container exits; its final status.
pub async fn follow(
    c: &mut Cri,
    id: &str,
    log_path: &Path,
    mut offset: u64,
    mut parser: Parser,
    timestamps: bool,
) -> Result<cri::ContainerStatus> {
    loop {
        let status = c
            .container_status(id, false)
            .await?
            .status
            .context("berthd answered no container status")?;
        let exited = is(status.state, cri::ContainerState::ContainerExited);
        if exited {
            // The shim may still be writing the last of the output.
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        print_lines(&parser.feed(&read_from(log_path, &mut offset)), timestamps);
        if exited {
            print_lines(&parser.finish(), timestamps);
            return Ok(status);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

pub async fn logs(c: &mut Cri, args: &LogsArgs) -> Result<()> {
    let id = c.resolve_container(&args.container).await?;
    let status = c
        .container_status(&id, false)
        .await?
        .status
        .context("berthd answered no container status")?;
    if status.log_path.is_empty() {
        bail!("container {id} has no log file (it was created without a log path)");
    }
    let path = Path::new(&status.log_path);
    let mut offset = 0;
    let mut parser = Parser::default();
    let lines = parser.feed(&read_from(path, &mut offset));
    if args.follow {
        print_lines(&crilog::tail(lines, args.tail), args.timestamps);
        follow(c, &id, path, offset, parser, args.timestamps).await?;
    } else {
        let mut lines = lines;
        lines.extend(parser.finish());
        print_lines(&crilog::tail(lines, args.tail), args.timestamps);
    }
    Ok(())
}

/// exec: without -i/-t through ExecSync; with them over the streaming server.
pub async fn exec(c: &mut Cri, args: &ExecArgs) -> Result<u8> {
    if args.interactive || args.tty {
        return super::attach::exec(c, args).await;
    }
    let id = c.resolve_container(&args.container).await?;
    let r =
        c.rt.exec_sync(cri::ExecSyncRequest {
            container_id: id,
            cmd: args.cmd.clone(),
            timeout: args.timeout,
        })
        .await;
    let r = answer(r, "exec")?;
    std::io::stdout().write_all(&r.stdout)?;
    std::io::stderr().write_all(&r.stderr)?;
    std::io::stdout().flush()?;
    Ok(exit_byte(r.exit_code))
}

/// Waits (polling, up to `limit`) for the container to be exited; its status then.
pub async fn wait_exited(
    c: &mut Cri,
    id: &str,
    limit: Duration,
) -> Result<Option<cri::ContainerStatus>> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let status = c
            .container_status(id, false)
            .await?
            .status
            .context("berthd answered no container status")?;
        if is(status.state, cri::ContainerState::ContainerExited) {
            return Ok(Some(status));
        }
        if tokio::time::Instant::now() >= deadline {
            return Ok(None);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A container's exit code as a process exit code.
pub fn exit_byte(code: i32) -> u8 {
    u8::try_from(code).unwrap_or(if code < 0 { 255 } else { (code & 0xff) as u8 })
}

pub async fn stop_id(c: &mut Cri, id: &str, timeout: i64) -> Result<()> {
    let r =
        c.rt.stop_container(cri::StopContainerRequest {
            container_id: id.to_owned(),
            timeout,
        })
        .await;
    answer(r, &format!("stop container {id}"))?;
    Ok(())
}

pub async fn stop(c: &mut Cri, args: &StopArgs) -> Result<()> {
    for q in &args.containers {
        let id = c.resolve_container(q).await?;
        stop_id(c, &id, args.time).await?;
        println!("{id}");
    }
    Ok(())
}

/// Removes a container (stopping it first when `force`), and the pod `berth run` made for it.
pub async fn remove_id(c: &mut Cri, id: &str, force: bool) -> Result<()> {
    let k = c
        .containers()
        .await?
        .into_iter()
        .find(|k| k.id == id)
        .with_context(|| format!("no such container: {id}"))?;
    if !is(k.state, cri::ContainerState::ContainerExited) {
        if !force {
            bail!(
                "container {} is {}: stop it first or use `berth rm -f`",
                short_id(id, 13),
                state_name(k.state).to_lowercase()
            );
        }
        stop_id(c, id, 0).await?;
    }
    let r =
        c.rt.remove_container(cri::RemoveContainerRequest {
            container_id: id.to_owned(),
        })
        .await;
    answer(r, &format!("remove container {id}"))?;
    if k.labels.contains_key(RUN_LABEL) {
        super::pods::remove_id(c, &k.pod_sandbox_id).await?;
    }
    Ok(())
}

pub async fn remove(c: &mut Cri, args: &RmArgs) -> Result<()> {
    for q in &args.containers {
        let id = c.resolve_container(q).await?;
        remove_id(c, &id, args.force).await?;
        println!("{id}");
    }
    Ok(())
}

/// Containers' verbose status; what is not a container is looked up among pods.
pub async fn inspect(c: &mut Cri, queries: &[String]) -> Result<()> {
    let mut out = Vec::new();
    for q in queries {
        let id = match c.resolve_container(q).await {
            Ok(id) => id,
            Err(e) if e.to_string().starts_with("no such") => match c.resolve_pod(q).await {
                Ok(pod) => {
                    out.push(super::pods::status_json(c, &pod).await?);
                    continue;
                }
                Err(_) => bail!("no such container or pod: {q}"),
            },
            Err(e) => return Err(e),
        };
        let s = c.container_status(&id, true).await?;
        let mut status = serde_json::to_value(&s.status)?;
        if let (Some(obj), Some(st)) = (status.as_object_mut(), s.status.as_ref()) {
            obj.insert("state".into(), state_name(st.state).into());
        }
        out.push(serde_json::json!({ "status": status, "info": info_json(&s.info) }));
    }
    print_json(&out)
}
