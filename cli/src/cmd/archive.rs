//! `tag`, `save`, `load`: the CRI has no calls for them, so they use berthd's own admin
//! service (`berth.admin.v1.Images`) on the same socket, over the image store's tag, export and
//! import. Archives are OCI image layouts that are also `docker save` archives; `load` reads
//! either (gzip/zstd compressed too).

use std::io::{IsTerminal, Read, Write};
use std::path::Path;

use anyhow::{bail, Context, Result};
use cri_api::v1 as cri;

use crate::client::admin::{ExportRequest, ImportRequest, TagRequest};
use crate::client::{answer, Cri};
use crate::resolve::normalize_image;

/// Bytes per chunk sent to `load`.
const CHUNK: usize = 1 << 20;

async fn image(c: &mut Cri, id: &str) -> Result<cri::Image> {
    c.images()
        .await?
        .into_iter()
        .find(|i| i.id == id)
        .with_context(|| format!("no such image: {id}"))
}

pub async fn tag(c: &mut Cri, source: &str, target: &str) -> Result<()> {
    let id = c.resolve_image(source).await?;
    let r = c
        .admin
        .tag(TagRequest {
            source: id,
            target: target.to_owned(),
        })
        .await;
    let r = answer(r, &format!("tag {source} {target}"))?;
    println!("{}", r.name);
    Ok(())
}

/// What berthd should export for a query: the tag typed (normalised) when the image has it,
/// else its first tag, else its ID.
async fn export_name(c: &mut Cri, query: &str) -> Result<String> {
    let id = c.resolve_image(query).await?;
    let img = image(c, &id).await?;
    let normalized = normalize_image(query);
    Ok(if img.repo_tags.contains(&normalized) {
        normalized
    } else {
        img.repo_tags.first().cloned().unwrap_or(id)
    })
}

pub async fn save(c: &mut Cri, output: Option<&Path>, queries: &[String]) -> Result<()> {
    if output.is_none() && std::io::stdout().is_terminal() {
        bail!("save: refusing to write an archive to a terminal: use -o FILE or redirect stdout");
    }
    let mut images = Vec::new();
    for q in queries {
        images.push(export_name(c, q).await?);
    }
    let r = c.admin.export(ExportRequest { images }).await;
    let mut stream = answer(r, "save")?;
    // A file appears only complete: written beside it, then renamed.
    let mut file = match output {
        Some(path) => {
            let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
            let tmp = tempfile_in(dir.unwrap_or(Path::new(".")))?;
            Some(tmp)
        }
        None => None,
    };
    let mut stdout = std::io::stdout().lock();
    while let Some(chunk) = stream
        .message()
        .await
        .map_err(|s| anyhow::anyhow!("save: {}", s.message()))?
    {
        match &mut file {
            Some(f) => f.write_all(&chunk.data)?,
            None => stdout.write_all(&chunk.data)?,
        }
    }
    match (file, output) {
        (Some(f), Some(path)) => {
            f.as_file().sync_all()?;
            f.persist(path)
                .with_context(|| format!("save: write {}", path.display()))?;
        }
        _ => stdout.flush()?,
    }
    Ok(())
}

fn tempfile_in(dir: &Path) -> Result<tempfile::NamedTempFile> {
    tempfile::Builder::new()
        .prefix(".berth-save")
        .tempfile_in(dir)
        .with_context(|| format!("save: create a file in {}", dir.display()))
}

pub async fn load(c: &mut Cri, input: Option<&Path>) -> Result<()> {
    let mut reader: Box<dyn Read + Send> = match input {
        Some(p) => {
            Box::new(std::fs::File::open(p).with_context(|| format!("load: open {}", p.display()))?)
        }
        None => {
            if std::io::stdin().is_terminal() {
                bail!("load: no archive: use -i FILE or pipe one in");
            }
            Box::new(std::io::stdin())
        }
    };
    // Read on a blocking thread, sent as the request stream.
    let (tx, rx) = tokio::sync::mpsc::channel::<ImportRequest>(4);
    let reading = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
        loop {
            let mut buf = vec![0u8; CHUNK];
            let mut n = 0;
            while n < CHUNK {
                match reader.read(&mut buf[n..])? {
                    0 => break,
                    k => n += k,
                }
            }
            if n == 0 {
                return Ok(());
            }
            buf.truncate(n);
            let msg = ImportRequest {
                base_name: String::new(),
                data: buf,
            };
            if tx.blocking_send(msg).is_err() {
                return Ok(());
            }
        }
    });
    let r = c.admin.import(tokio_stream_from(rx)).await;
    reading.await?.context("load: read the archive")?;
    let r = answer(r, "load")?;
    for i in r.images {
        match i.names.iter().find(|n| !n.contains('@')) {
            Some(n) => println!("Loaded image: {n}"),
            None => println!("Loaded image ID: {}", i.image_id),
        }
    }
    Ok(())
}

/// An mpsc receiver as a request stream.
fn tokio_stream_from<T: Send + 'static>(
    mut rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures_util::Stream<Item = T> + Send + 'static {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}
