//! berthd's ImageService against a real `docker-registry` on 127.0.0.1, driven through the CRI
//! socket by a cri-api client: pull, list, status, fs info, remove, and the error codes.

mod support;

use std::time::{Duration, Instant};

use cri_api::v1 as cri;
use cri_api::v1::image_service_client::ImageServiceClient;
use tonic::transport::Channel;
use tonic::Code;

use support::*;

type Client = ImageServiceClient<Channel>;

fn spec(image: &str) -> Option<cri::ImageSpec> {
    Some(cri::ImageSpec {
        image: image.to_owned(),
        ..Default::default()
    })
}

async fn pull(
    c: &mut Client,
    image: &str,
    auth: Option<cri::AuthConfig>,
) -> Result<String, tonic::Status> {
    c.pull_image(cri::PullImageRequest {
        image: spec(image),
        auth,
        sandbox_config: None,
    })
    .await
    .map(|r| r.into_inner().image_ref)
}

async fn status(c: &mut Client, image: &str, verbose: bool) -> cri::ImageStatusResponse {
    c.image_status(cri::ImageStatusRequest {
        image: spec(image),
        verbose,
    })
    .await
    .unwrap_or_else(|e| panic!("ImageStatus {image}: {e}"))
    .into_inner()
}

async fn list(c: &mut Client, filter: Option<&str>) -> Vec<cri::Image> {
    c.list_images(cri::ListImagesRequest {
        filter: filter.map(|f| cri::ImageFilter { image: spec(f) }),
    })
    .await
    .unwrap()
    .into_inner()
    .images
}

async fn remove(c: &mut Client, image: &str) {
    c.remove_image(cri::RemoveImageRequest { image: spec(image) })
        .await
        .unwrap_or_else(|e| panic!("RemoveImage {image}: {e}"));
}

async fn fs_used(c: &mut Client) -> cri::FilesystemUsage {
    let info = c
        .image_fs_info(cri::ImageFsInfoRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(info.image_filesystems.len(), 1, "{info:?}");
    info.image_filesystems[0].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_list_status_fs_info_remove_against_a_real_registry() {
    if !can_run("pull_list_status_fs_info_remove") {
        return;
    }
    let reg = registry();
    let host = reg.host.clone();
    let work = tempfile::tempdir().unwrap();
    let layout = build_busybox(work.path());
    let id = config_digest(&layout, "v1");
    let (tag1, tag2) = (format!("{host}/busybox:1"), format!("{host}/busybox:2"));
    push(&layout, "v1", &tag1, &[]);
    push(&layout, "v1", &tag2, &[]);
    let manifest = registry_digest(&tag1, &[]);
    let berthd = Berthd::start(&[host.as_str()]).await;
    let mut c = ImageServiceClient::new(berthd.channel.clone());

    // Nothing yet: status of a missing image is no error, just no image.
    let missing = status(&mut c, &tag1, true).await;
    assert!(
        missing.image.is_none() && missing.info.is_empty(),
        "{missing:?}"
    );
    assert!(list(&mut c, None).await.is_empty());

    // Pull: the answer is the image ID, the config digest.
    // Two pulls of one image at once (the kubelet pulls in parallel) share the download.
    let mut c2 = c.clone();
    let (a, b) = tokio::join!(pull(&mut c, &tag1, None), pull(&mut c2, &tag1, None));
    assert_eq!((a.unwrap(), b.unwrap()), (id.clone(), id.clone()));
    assert_eq!(
        pull(&mut c, &tag1, None).await.unwrap(),
        id,
        "a second pull"
    );
    assert_eq!(
        pull(&mut c, &tag2, None).await.unwrap(),
        id,
        "same image, other tag"
    );

    // List: one image with both tags and its repo digest, the image config's user.
    let images = list(&mut c, None).await;
    assert_eq!(images.len(), 1, "{images:?}");
    let img = &images[0];
    assert_eq!(img.id, id);
    assert_eq!(img.repo_tags, vec![tag1.clone(), tag2.clone()]);
    assert_eq!(img.repo_digests, vec![format!("{host}/busybox@{manifest}")]);
    assert!(
        img.size > 1_000_000,
        "busybox-static is > 1 MB: {}",
        img.size
    );
    assert_eq!(img.uid.as_ref().map(|u| u.value), Some(1000));
    assert_eq!(img.username, "");
    assert!(!img.pinned);
    assert_eq!(img.spec.as_ref().unwrap().image, id);

    // Filters: by tag, by ID; an unknown image matches nothing.
    assert_eq!(list(&mut c, Some(&tag2)).await.len(), 1);
    assert_eq!(list(&mut c, Some(&id)).await.len(), 1);
    assert!(list(&mut c, Some(&format!("{host}/nothere:1")))
        .await
        .is_empty());

    // Status by tag, ID, short ID, repo digest; verbose carries the image config.
    let short = &id["sha256:".len()..][..12];
    let digest_ref = format!("{host}/busybox@{manifest}");
    for name in [tag1.as_str(), id.as_str(), short, digest_ref.as_str()] {
        let s = status(&mut c, name, false).await;
        assert_eq!(
            s.image.as_ref().map(|i| i.id.as_str()),
            Some(id.as_str()),
            "{name}"
        );
        assert!(s.info.is_empty(), "info only when verbose");
    }
    let s = status(&mut c, &tag1, true).await;
    let info: serde_json::Value = serde_json::from_str(&s.info["info"]).unwrap();
    assert_eq!(info["imageSpec"]["config"]["User"], "1000:1000", "{info}");
    assert_eq!(info["manifests"][0]["digest"], manifest.as_str());
    assert!(info["chainID"].as_str().unwrap().starts_with("sha256:"));

    // Image filesystem: the snapshots under berthd's root.
    let fs = fs_used(&mut c).await;
    let used = fs.used_bytes.as_ref().unwrap().value;
    assert!(used > 1_000_000, "{fs:?}");
    assert!(fs.inodes_used.as_ref().unwrap().value >= 5, "{fs:?}");
    assert!(fs.timestamp > 0);
    let mountpoint = fs.fs_id.as_ref().unwrap().mountpoint.clone();
    assert!(
        mountpoint.starts_with(berthd.root().to_str().unwrap()),
        "{mountpoint}"
    );

    // Errors: a missing tag or repository is NotFound, naming the image; a bad reference is
    // InvalidArgument; so is an unknown runtime handler; a registry that is down is Unavailable.
    let err = pull(&mut c, &format!("{host}/busybox:nope"), None)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    assert!(err.message().contains("busybox:nope"), "{}", err.message());
    let err = pull(&mut c, &format!("{host}/nothere:1"), None)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    let err = pull(&mut c, "Not//A:Reference::", None).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(
        err.message().contains("Not//A:Reference::"),
        "{}",
        err.message()
    );
    let err = pull(&mut c, "", None).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    let err = c
        .pull_image(cri::PullImageRequest {
            image: Some(cri::ImageSpec {
                image: tag1.clone(),
                runtime_handler: "no-such-handler".into(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    let down = format!("127.0.0.1:{}/busybox:1", free_port());
    let err = pull(&mut c, &down, None).await.unwrap_err();
    // Not listed as insecure: HTTPS to a closed port; either way the registry is unreachable.
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert!(
        err.message().contains("Connection refused"),
        "the cause is named: {}",
        err.message()
    );

    // Remove by tag takes the image with every name (containerd's semantics); again: success.
    remove(&mut c, &tag1).await;
    assert!(status(&mut c, &tag2, false).await.image.is_none());
    assert!(status(&mut c, &id, false).await.image.is_none());
    assert!(list(&mut c, None).await.is_empty());
    remove(&mut c, &tag1).await;
    remove(&mut c, &id).await;

    // The GC it triggers frees the snapshots (bounded wait).
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let now = fs_used(&mut c).await.used_bytes.unwrap().value;
        if now < used / 2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "GC did not free the image: {now} of {used} bytes"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Pull again by repo digest, remove by ID.
    assert_eq!(pull(&mut c, &digest_ref, None).await.unwrap(), id);
    let images = list(&mut c, None).await;
    assert_eq!(images.len(), 1);
    assert!(images[0].repo_tags.is_empty(), "{:?}", images[0]);
    assert_eq!(images[0].repo_digests, vec![digest_ref.clone()]);
    remove(&mut c, &id).await;
    assert!(list(&mut c, None).await.is_empty());

    berthd.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_with_auth_config_from_an_htpasswd_registry() {
    if !can_run("pull_with_auth_config") {
        return;
    }
    let reg = registry_with_auth("berth", "s3cret");
    let host = reg.host.clone();
    let work = tempfile::tempdir().unwrap();
    let layout = build_busybox(work.path());
    let id = config_digest(&layout, "v1");
    let image = format!("{host}/private/busybox:1");
    push(&layout, "v1", &image, &["--dest-creds", "berth:s3cret"]);
    let berthd = Berthd::start(&[host.as_str()]).await;
    let mut c = ImageServiceClient::new(berthd.channel.clone());
    let auth = |f: &dyn Fn(&mut cri::AuthConfig)| {
        let mut a = cri::AuthConfig::default();
        f(&mut a);
        Some(a)
    };

    let err = pull(&mut c, &image, None).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
    assert!(
        err.message().contains("private/busybox"),
        "{}",
        err.message()
    );
    let wrong = auth(&|a| {
        a.username = "berth".into();
        a.password = "wrong".into();
    });
    let err = pull(&mut c, &image, wrong).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
    // Credentials for another server are not sent.
    let elsewhere = auth(&|a| {
        a.username = "berth".into();
        a.password = "s3cret".into();
        a.server_address = "https://registry.example:5000".into();
    });
    let err = pull(&mut c, &image, elsewhere).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
    let bad = auth(&|a| a.auth = "%%%".into());
    let err = pull(&mut c, &image, bad).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");

    let basic = auth(&|a| {
        a.username = "berth".into();
        a.password = "s3cret".into();
        a.server_address = host.clone();
    });
    assert_eq!(pull(&mut c, &image, basic).await.unwrap(), id);
    remove(&mut c, &id).await;
    // `auth`: base64 of "berth:s3cret".
    let encoded = auth(&|a| a.auth = "YmVydGg6czNjcmV0".into());
    assert_eq!(pull(&mut c, &image, encoded).await.unwrap(), id);
    assert_eq!(list(&mut c, None).await.len(), 1);

    berthd.stop().await;
}
