//! berthd's own log (root; the binary as a subprocess): with stderr in a file, the text format
//! has no terminal escape codes (`scripts/run > file` used to fill files with them), and
//! `--log-format json` writes one JSON object per line, with the level, the message and the
//! event's fields.

#[path = "support/berthd_process.rs"]
mod berthd_process;
#[path = "support/node.rs"]
mod node;
#[path = "support/pods.rs"]
mod pods;
mod support;

use berthd_process::Berthd;
use pods::Pods;

fn can_run(test: &str) -> bool {
    support::can_run(test) && pods::can_run(test)
}

#[test]
fn text_logs_to_a_file_are_plain_and_json_logs_are_json() {
    let test = "text_logs_to_a_file_are_plain_and_json_logs_are_json";
    if !can_run(test) {
        return;
    }
    let pods = Pods::configure(38, |_| {});
    // Text, the default.
    Berthd::start(&pods, None).stop();
    let text = std::fs::read_to_string(Berthd::log_path(&pods, None)).unwrap();
    assert!(text.contains("berthd serving CRI v1"), "{text}");
    assert!(!text.contains('\u{1b}'), "escape codes in a file: {text:?}");

    // JSON (the next run's log replaces the file).
    Berthd::start_with(&pods, None, &["--log-format", "json"]).stop();
    let json = std::fs::read_to_string(Berthd::log_path(&pods, None)).unwrap();
    let lines: Vec<serde_json::Value> = json
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let serving = lines
        .iter()
        .find(|v| v["fields"]["message"] == "berthd serving CRI v1")
        .unwrap_or_else(|| panic!("no start line: {json}"));
    assert_eq!(serving["level"], "INFO", "{serving}");
    assert!(serving["fields"]["listen"].is_string(), "{serving}");
    drop(pods);
}
