//! Logging as runc does it: text to stderr, or with `--log-format json` one JSON object per
//! line (`{"level":…,"msg":…,"time":…}`) in the `--log` file, which containerd and conmon
//! parse to report the runtime's errors.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;
use std::sync::Mutex;

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

use crate::cli::LogFormat;

struct Sink {
    out: Mutex<Box<dyn Write + Send>>,
    format: LogFormat,
    max: Level,
}

#[derive(Default)]
struct Message(String);

impl Visit for Message {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.0.insert_str(0, &format!("{value:?}"));
        } else {
            self.0.push_str(&format!(" {}={value:?}", field.name()));
        }
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.0.insert_str(0, value);
        } else {
            self.0.push_str(&format!(" {}={value}", field.name()));
        }
    }
}

impl<S: Subscriber> Layer<S> for Sink {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        if *event.metadata().level() > self.max {
            return;
        }
        let mut msg = Message::default();
        event.record(&mut msg);
        let level = event.metadata().level().as_str().to_ascii_lowercase();
        let line = match self.format {
            LogFormat::Json => serde_json::json!({
                "level": level,
                "msg": msg.0.trim(),
                "time": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true),
            })
            .to_string(),
            LogFormat::Text => format!("berth-runtime: {level}: {}", msg.0.trim()),
        };
        if let Ok(mut out) = self.out.lock() {
            let _ = writeln!(out, "{line}");
        }
    }
}

pub fn init(log: Option<&Path>, format: LogFormat, debug: bool) {
    let out: Box<dyn Write + Send> =
        match log.and_then(|p| OpenOptions::new().create(true).append(true).open(p).ok()) {
            Some(f) => Box::new(f),
            None => Box::new(std::io::stderr()),
        };
    let sink = Sink {
        out: Mutex::new(out),
        format,
        max: if debug { Level::DEBUG } else { Level::WARN },
    };
    let _ = tracing_subscriber::registry().with(sink).try_init();
}
