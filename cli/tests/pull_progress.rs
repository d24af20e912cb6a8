//! `berth pull` with its output to a pipe prints one line per layer state change (through
//! berthd's admin PullWithProgress): every layer of a four-layer image appears and ends done
//! with all its bytes; `-q` prints only the ID; a second pull sees every layer exist;
//! `berth run` of an image berthd lacks shows the same lines on stderr; on a terminal, one bar
//! per layer.

mod support;

use support::*;

/// The last line a layer's digest begins in `out`.
fn last_line_of<'a>(out: &'a str, digest: &str) -> Option<&'a str> {
    out.lines()
        .rev()
        .find(|l| l.starts_with(&format!("{digest}: ")))
}

#[test]
fn pull_shows_every_layer_until_done() {
    if !can_run("pull_shows_every_layer_until_done") {
        return;
    }
    let env = start();
    let (image, layers) = env.push_layered("layered", 3);
    assert_eq!(layers.len(), 4, "{layers:?}");

    let out = env.ok(&["pull", &image]);
    for (digest, size) in &layers {
        let last = last_line_of(&out, digest).unwrap_or_else(|| panic!("{digest} in:\n{out}"));
        assert_eq!(
            last,
            format!("{digest}: done ({size}/{size} bytes)"),
            "{out}"
        );
        let first = out
            .lines()
            .find(|l| l.starts_with(digest.as_str()))
            .unwrap();
        assert!(first.contains("waiting"), "{out}");
        assert!(
            out.contains(&format!("{digest}: downloading")),
            "{digest} downloaded:\n{out}"
        );
    }
    // The image ID last, as `berth images` lists it.
    let id = out.lines().last().unwrap().to_owned();
    assert!(id.starts_with("sha256:"), "{out}");
    let listed = env.ok(&["images", "-q"]);
    assert!(listed.lines().any(|l| l == id), "{id} in {listed}");

    // -q: the ID only; everything is in place, so every layer exists.
    assert_eq!(env.ok(&["pull", "-q", &image]).trim(), id);
    let again = env.ok(&["image", "pull", &image]);
    for (digest, size) in &layers {
        assert_eq!(
            last_line_of(&again, digest),
            Some(format!("{digest}: already exists ({size}/{size} bytes)").as_str()),
            "{again}"
        );
    }

    // run pulls what is missing, progress on stderr (stdout is the container's): busybox's
    // layer is there, the two new ones are downloaded.
    let (fresh, fresh_layers) = env.push_layered("fresh", 2);
    assert_eq!(fresh_layers[0], layers[0], "the same busybox layer");
    let out = env.berth(&[
        "run", "--rm", "--net", "host", &fresh, "wc", "-c", "/layer1",
    ]);
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(stdout.trim(), "65536 /layer1", "the top layer's file");
    let err = String::from_utf8_lossy(&out.stderr);
    for (i, (digest, size)) in fresh_layers.iter().enumerate() {
        let state = if i == 0 { "already exists" } else { "done" };
        assert_eq!(
            last_line_of(&err, digest),
            Some(format!("{digest}: {state} ({size}/{size} bytes)").as_str()),
            "{err}"
        );
    }

    // On a terminal: one bar per layer (short digest, bytes of size, state), then the ID.
    let (tty, tty_layers) = env.push_layered("tty", 2);
    let pty = env.spawn_pty(&["pull", &tty], 120, 40);
    let (code, screen) = pty.wait(std::time::Duration::from_secs(60));
    assert_eq!(code, Some(0), "{screen}");
    for (i, (digest, _)) in tty_layers.iter().enumerate() {
        let hex = &digest["sha256:".len()..];
        let state = if i == 0 { "already exists" } else { "done" };
        assert!(
            screen
                .lines()
                .any(|l| l.contains(&hex[..12]) && l.contains(state) && l.contains('[')),
            "a bar for {digest} ending {state}: {screen}"
        );
    }
    assert!(screen.contains("sha256:"), "the image ID: {screen}");
}
