//! `ImageStore::pull_with_progress`: the observer sees every layer of a three-layer image from a
//! real `docker-registry` resolved, downloaded in chunks that add up to the layer's size,
//! verified, unpacked and done, in that order; a second pull sees every layer as existing.

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use image_store::{Digest, ImageStore, LayerEvent, PullOptions, Reference, StoreConfig};
use support::*;

const TOOLS: &[&str] = &[
    "/usr/bin/docker-registry",
    "/usr/bin/umoci",
    "/usr/bin/skopeo",
    "/bin/busybox",
];

fn open_store(root: &Path, host: &str) -> ImageStore {
    let mut cfg = StoreConfig::new(root);
    cfg.registry.insecure_hosts = vec![host.to_owned()];
    ImageStore::open(cfg).unwrap()
}

/// Pulls `r` with an observer; returns the image and every layer's events in order.
fn pull_events(
    rt: &tokio::runtime::Runtime,
    store: &ImageStore,
    r: &Reference,
) -> (image_store::Image, BTreeMap<Digest, Vec<LayerEvent>>) {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(Digest, LayerEvent)>();
    let image = rt
        .block_on(store.pull_with_progress(r, &PullOptions::default(), Arc::new(tx)))
        .unwrap_or_else(|e| panic!("{e}"));
    // The sender went with the pull: the channel holds every event and then ends.
    let mut events: BTreeMap<Digest, Vec<LayerEvent>> = BTreeMap::new();
    while let Ok((d, e)) = rx.try_recv() {
        events.entry(d).or_default().push(e);
    }
    (image, events)
}

#[test]
fn observer_sees_each_layers_bytes_add_up_to_its_size() {
    if !is_root() {
        eprintln!("SKIP observer_sees_each_layers_bytes: needs root (owners, whiteouts)");
        return;
    }
    if !have_tools("observer_sees_each_layers_bytes", TOOLS) {
        return;
    }
    let reg = Registry::start();
    let work = tempfile::tempdir().unwrap();
    let layout = build_fixture(work.path());
    let host = &reg.host;
    push(&layout, "app", &format!("{host}/app:progress"), &[]);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let root = tempfile::tempdir().unwrap();
    let store = open_store(root.path(), host);
    let r: Reference = format!("{host}/app:progress").parse().unwrap();

    let (image, events) = pull_events(&rt, &store, &r);
    assert_eq!(image.layers.len(), 3);
    assert_eq!(events.len(), 3, "one event list per layer: {events:?}");
    for (index, layer) in image.layers.iter().enumerate() {
        let ev = events
            .get(layer)
            .unwrap_or_else(|| panic!("{layer}: no events"));
        let LayerEvent::Resolved { index: i, size } = ev[0] else {
            panic!("{layer}: first event {:?}", ev[0]);
        };
        assert_eq!(i, index, "{layer}");
        // Bytes: the last Downloading's offset plus the chunks after it.
        let start = ev
            .iter()
            .rposition(|e| matches!(e, LayerEvent::Downloading { .. }))
            .unwrap_or_else(|| panic!("{layer}: never downloaded: {ev:?}"));
        let LayerEvent::Downloading { offset } = ev[start] else {
            unreachable!()
        };
        let chunks: Vec<u64> = ev[start..]
            .iter()
            .filter_map(|e| match e {
                LayerEvent::Downloaded { bytes } => Some(*bytes),
                _ => None,
            })
            .collect();
        assert!(!chunks.is_empty(), "{layer}: no bytes reported: {ev:?}");
        assert_eq!(offset + chunks.iter().sum::<u64>(), size, "{layer}: {ev:?}");
        let tail: Vec<&LayerEvent> = ev
            .iter()
            .filter(|e| !matches!(e, LayerEvent::Downloaded { .. }))
            .skip(2)
            .collect();
        assert_eq!(
            tail,
            [
                &LayerEvent::Verified,
                &LayerEvent::Unpacked,
                &LayerEvent::Done
            ],
            "{layer}: {ev:?}"
        );
    }

    // Everything in place: each layer resolved, then skipped as existing.
    let (again, events) = pull_events(&rt, &store, &r);
    assert_eq!(again.manifest_digest, image.manifest_digest);
    for layer in &image.layers {
        let ev = &events[layer];
        assert_eq!(ev.len(), 2, "{layer}: {ev:?}");
        assert_eq!(ev[1], LayerEvent::Exists, "{layer}: {ev:?}");
    }
}
