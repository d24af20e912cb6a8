//! How a pull's per-layer progress (berthd's `PullWithProgress` messages) is shown: one
//! indicatif bar per layer on a terminal, one line per layer state change otherwise, nothing
//! under `-q`.

use std::collections::HashMap;
use std::io::{IsTerminal, Write};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::client::admin::LayerProgress;

/// Where progress goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Out {
    Stdout,
    Stderr,
}

impl Out {
    fn is_terminal(self) -> bool {
        match self {
            Out::Stdout => std::io::stdout().is_terminal(),
            Out::Stderr => std::io::stderr().is_terminal(),
        }
    }

    fn line(self, s: &str) {
        // A closed pipe only loses the progress: the pull goes on.
        let _ = match self {
            Out::Stdout => writeln!(std::io::stdout(), "{s}"),
            Out::Stderr => writeln!(std::io::stderr(), "{s}"),
        };
    }
}

/// The layer's digest as shown next to its bar (`sha256:` dropped, 12 hex digits).
fn short(digest: &str) -> &str {
    let hex = digest.split_once(':').map_or(digest, |(_, h)| h);
    &hex[..hex.len().min(12)]
}

/// What a state reads as.
fn label(state: &str) -> &str {
    match state {
        "resolved" => "waiting",
        "exists" => "already exists",
        "cached" => "unpacking (cached)",
        "downloading" => "downloading",
        "verified" => "verified, unpacking",
        "unpacked" => "unpacked",
        "done" => "done",
        "failed" => "failed",
        other => other,
    }
}

fn finished(state: &str) -> bool {
    matches!(state, "done" | "exists" | "failed")
}

pub enum PullView {
    Quiet,
    /// One line per layer state change (not on a terminal).
    Lines {
        out: Out,
        last: HashMap<String, String>,
    },
    /// One bar per layer, in manifest order.
    Bars {
        multi: MultiProgress,
        bars: HashMap<String, ProgressBar>,
        order: Vec<(u32, String)>,
    },
}

impl PullView {
    pub fn new(out: Out, quiet: bool) -> PullView {
        if quiet {
            return PullView::Quiet;
        }
        if out.is_terminal() {
            let target = match out {
                Out::Stdout => ProgressDrawTarget::stdout(),
                Out::Stderr => ProgressDrawTarget::stderr(),
            };
            return PullView::Bars {
                multi: MultiProgress::with_draw_target(target),
                bars: HashMap::new(),
                order: Vec::new(),
            };
        }
        PullView::Lines {
            out,
            last: HashMap::new(),
        }
    }

    /// Shows what the layers in `layers` changed to.
    pub fn update(&mut self, layers: &[LayerProgress]) {
        match self {
            PullView::Quiet => {}
            PullView::Lines { out, last } => {
                for l in layers {
                    if last.get(&l.digest) == Some(&l.state) {
                        continue;
                    }
                    last.insert(l.digest.clone(), l.state.clone());
                    let mut line = format!(
                        "{}: {} ({}/{} bytes)",
                        l.digest,
                        label(&l.state),
                        l.bytes,
                        l.size
                    );
                    if !l.error.is_empty() {
                        line.push_str(&format!(": {}", l.error));
                    }
                    out.line(&line);
                }
            }
            PullView::Bars { multi, bars, order } => {
                for l in layers {
                    let bar = match bars.get(&l.digest) {
                        Some(b) => b.clone(),
                        None => {
                            let b = new_bar(l.size, short(&l.digest));
                            // In manifest order: after the last layer with a lower index.
                            let pos = order.partition_point(|(i, _)| *i < l.index);
                            let b = if pos > 0 {
                                multi.insert_after(&bars[&order[pos - 1].1], b)
                            } else {
                                multi.insert(0, b)
                            };
                            order.insert(pos, (l.index, l.digest.clone()));
                            bars.insert(l.digest.clone(), b.clone());
                            b
                        }
                    };
                    if bar.is_finished() {
                        continue;
                    }
                    bar.set_position(l.bytes.min(l.size));
                    let msg = if l.error.is_empty() {
                        label(&l.state).to_owned()
                    } else {
                        format!("failed: {}", l.error)
                    };
                    if finished(&l.state) {
                        if l.state == "failed" {
                            bar.abandon_with_message(msg);
                        } else {
                            bar.set_position(l.size);
                            bar.finish_with_message(msg);
                        }
                    } else {
                        bar.set_message(msg);
                    }
                }
            }
        }
    }

    /// The pull ended (either way): bars left as they are, on their own lines.
    pub fn finish(self) {
        if let PullView::Bars { bars, .. } = self {
            for b in bars.values().filter(|b| !b.is_finished()) {
                b.abandon();
            }
        }
    }
}

fn new_bar(size: u64, name: &str) -> ProgressBar {
    let b = ProgressBar::new(size);
    let style = ProgressStyle::with_template(
        "{prefix} [{bar:30.cyan/blue}] {bytes:>10}/{total_bytes:<10} {msg}",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar())
    .progress_chars("=> ");
    b.set_style(style);
    b.set_prefix(name.to_owned());
    b.set_message("waiting");
    b
}
