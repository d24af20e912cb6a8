//! `pull`, `images`, `rmi`, `image inspect`.

use std::time::Duration;

use anyhow::Result;
use cri_api::v1 as cri;

use super::{info_json, print_json};
use crate::client::{answer, Cri};
use crate::pull_view::{Out, PullView};
use crate::resolve::split_tag;
use crate::table::{human_size, render, short_id};
use crate::{Format, ListArgs};

/// Pulls `image`; returns the image reference (ID) berthd answers. A spinner while it
/// lasts (the CRI reports no progress), on a terminal only.
pub async fn pull_quiet(c: &mut Cri, image: &str) -> Result<String> {
    let bar = indicatif::ProgressBar::new_spinner();
    if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        bar.set_message(format!("pulling {image}"));
        bar.enable_steady_tick(Duration::from_millis(120));
    } else {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
        eprintln!("pulling {image}");
    }
    let r = c
        .img
        .pull_image(cri::PullImageRequest {
            image: Some(cri::ImageSpec {
                image: image.to_owned(),
                ..Default::default()
            }),
            auth: crate::dockercfg::auth_for(image),
            ..Default::default()
        })
        .await;
    bar.finish_and_clear();
    Ok(answer(r, &format!("pull {image}"))?.image_ref)
}

pub async fn pull(c: &mut Cri, image: &str, platform: Option<&str>, quiet: bool) -> Result<()> {
    let view = PullView::new(Out::Stdout, quiet);
    let id = pull_with_progress(c, image, platform, view).await?;
    println!("{id}");
    Ok(())
}

/// Pulls `image` through berthd's admin `PullWithProgress`, showing every layer's progress
/// in `view`; returns the image ID. A berthd without that call gets the CRI's PullImage
/// (no progress; no platform either).
pub async fn pull_with_progress(
    c: &mut Cri,
    image: &str,
    platform: Option<&str>,
    mut view: PullView,
) -> Result<String> {
    let what = match platform {
        Some(p) => format!("pull {image} ({p})"),
        None => format!("pull {image}"),
    };
    let auth = crate::dockercfg::auth_for(image).unwrap_or_default();
    let token = if auth.registry_token.is_empty() {
        auth.identity_token
    } else {
        auth.registry_token
    };
    let req = crate::client::admin::PullRequest {
        image: image.to_owned(),
        platform: platform.unwrap_or_default().to_owned(),
        username: auth.username,
        password: auth.password,
        token,
    };
    let mut stream = match c.admin.pull_with_progress(req).await {
        Ok(r) => r.into_inner(),
        Err(s) if s.code() == tonic::Code::Unimplemented && platform.is_none() => {
            return pull_quiet(c, image).await;
        }
        Err(s) => return answer(Err(s), &what),
    };
    // Bounded by the server: the stream ends after the pull's result.
    let result = loop {
        match stream.message().await {
            Ok(Some(msg)) => {
                view.update(&msg.layers);
                if let Some(done) = msg.done {
                    break Ok(done.image_id);
                }
            }
            Ok(None) => {
                break Err(anyhow::anyhow!(
                    "{what}: berthd ended the pull without a result"
                ))
            }
            Err(s) => break answer::<String>(Err(s), &what),
        }
    };
    view.finish();
    result
}

pub async fn list(c: &mut Cri, args: &ListArgs) -> Result<()> {
    let mut images = c.images().await?;
    images.sort_by(|a, b| a.repo_tags.cmp(&b.repo_tags));
    if args.quiet {
        for i in &images {
            println!("{}", i.id);
        }
        return Ok(());
    }
    if args.format == Format::Json {
        return print_json(&images);
    }
    let mut rows = Vec::new();
    for i in &images {
        let id = short_id(&i.id, 12);
        let size = human_size(i.size);
        if i.repo_tags.is_empty() {
            let repo = i
                .repo_digests
                .first()
                .and_then(|d| d.split('@').next())
                .unwrap_or("<none>");
            rows.push(vec![
                repo.to_owned(),
                "<none>".into(),
                id.clone(),
                size.clone(),
            ]);
        }
        for t in &i.repo_tags {
            let (repo, tag) = split_tag(t);
            rows.push(vec![repo, tag, id.clone(), size.clone()]);
        }
    }
    print!(
        "{}",
        render(&["REPOSITORY", "TAG", "IMAGE ID", "SIZE"], &rows)
    );
    Ok(())
}

pub async fn remove(c: &mut Cri, queries: &[String]) -> Result<()> {
    for q in queries {
        let id = c.resolve_image(q).await?;
        let r = c
            .img
            .remove_image(cri::RemoveImageRequest {
                image: Some(cri::ImageSpec {
                    image: id.clone(),
                    ..Default::default()
                }),
            })
            .await;
        answer(r, &format!("remove image {q}"))?;
        println!("Deleted: {id}");
    }
    Ok(())
}

pub async fn inspect(c: &mut Cri, queries: &[String]) -> Result<()> {
    let mut out = Vec::new();
    for q in queries {
        let id = c.resolve_image(q).await?;
        let r = c
            .img
            .image_status(cri::ImageStatusRequest {
                image: Some(cri::ImageSpec {
                    image: id,
                    ..Default::default()
                }),
                verbose: true,
            })
            .await;
        let s = answer(r, &format!("image status {q}"))?;
        out.push(serde_json::json!({ "image": s.image, "info": info_json(&s.info) }));
    }
    print_json(&out)
}

/// `image prune`: removes images no container (running or not) uses — with `all`, every such
/// image; without, only those with no tag (dangling). Pinned images (the sandbox image) stay.
pub async fn prune(c: &mut Cri, all: bool) -> Result<()> {
    let containers = c.containers().await?;
    let used: std::collections::HashSet<String> = containers
        .iter()
        .flat_map(|k| {
            let spec = k.image.as_ref().map(|i| i.image.clone());
            spec.into_iter()
                .chain([k.image_ref.clone(), k.image_id.clone()])
        })
        .collect();
    let mut removed = 0usize;
    let mut freed = 0u64;
    for i in c.images().await? {
        let in_use = used.contains(&i.id)
            || i.repo_tags.iter().any(|t| used.contains(t))
            || i.repo_digests.iter().any(|d| used.contains(d));
        if in_use || i.pinned || (!all && !i.repo_tags.is_empty()) {
            continue;
        }
        let r = c
            .img
            .remove_image(cri::RemoveImageRequest {
                image: Some(cri::ImageSpec {
                    image: i.id.clone(),
                    ..Default::default()
                }),
            })
            .await;
        answer(r, &format!("remove image {}", i.id))?;
        for t in &i.repo_tags {
            println!("Untagged: {t}");
        }
        println!("Deleted: {}", i.id);
        removed += 1;
        freed += i.size;
    }
    println!("Removed {removed} images, {}", human_size(freed));
    Ok(())
}
