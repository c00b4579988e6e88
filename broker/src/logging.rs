//! The node's logs: human or JSON lines on stderr, every line carrying the node's id.
//!
//! The id is added by the formatter, not by a root span: tasks that tokio and ractor spawn do not
//! inherit the spans of the task that spawned them, so a span would miss most lines.

use std::fmt;

use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::{self, FormatEvent, FormatFields, Writer};
use tracing_subscriber::fmt::{FmtContext, MakeWriter};
use tracing_subscriber::registry::LookupSpan;

use crate::config::LogFormat;

/// The level filter when `RUST_LOG` is not set.
const DEFAULT_FILTER: &str = "info,async_nats=warn";

/// Sends the process's logs to stderr, in `format`, each line carrying `node_id`.
pub fn init(format: &LogFormat, node_id: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(DEFAULT_FILTER));
    let subscriber = subscriber(format, node_id, filter, std::io::stderr);
    let _ = tracing::subscriber::set_global_default(subscriber);
}

/// The subscriber [`init`] installs, writing to `writer`.
fn subscriber<W>(
    format: &LogFormat,
    node_id: &str,
    filter: tracing_subscriber::EnvFilter,
    writer: W,
) -> Box<dyn Subscriber + Send + Sync>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    // No colours: each line is formatted into a buffer first (to add the id), and escape codes
    // would only get in the way of the id there.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false)
        .with_writer(writer);
    match format {
        LogFormat::Json => {
            let event_format = WithNode::json(format::format().json(), node_id);
            Box::new(builder.json().event_format(event_format).finish())
        }
        LogFormat::Human => {
            let event_format = WithNode::human(format::format(), node_id);
            Box::new(builder.event_format(event_format).finish())
        }
    }
}

/// Formats each line with `inner`, then adds the node's id: `node=<id>` as the last field of a
/// human line, `"node":"<id>"` as the first key of a JSON object.
struct WithNode<F> {
    inner: F,
    /// `node=<id>`, or `"node":"<id>",`.
    field: String,
    json: bool,
}

impl<F> WithNode<F> {
    fn human(inner: F, node_id: &str) -> Self {
        WithNode {
            inner,
            field: format!("node={node_id}"),
            json: false,
        }
    }

    fn json(inner: F, node_id: &str) -> Self {
        let quoted = serde_json::Value::from(node_id).to_string();
        WithNode {
            inner,
            field: format!("\"node\":{quoted},"),
            json: true,
        }
    }
}

impl<S, N, F> FormatEvent<S, N> for WithNode<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut line = String::new();
        self.inner
            .format_event(ctx, Writer::new(&mut line), event)?;
        let line = line.trim_end_matches('\n');
        match line.strip_prefix('{') {
            Some(object) if self.json => writeln!(writer, "{{{}{object}", self.field),
            _ => writeln!(writer, "{line} {}", self.field),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::sync::{Arc, Mutex};

    use super::*;

    /// Collects what the subscriber writes.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// The line `format` writes for one event inside a span.
    fn log_line(format: LogFormat) -> String {
        let captured = Captured::default();
        let out = captured.clone();
        let filter = tracing_subscriber::EnvFilter::new("info");
        let subscriber = subscriber(&format, "eu-1", filter, move || out.clone());
        tracing::subscriber::with_default(subscriber, || {
            let _span = tracing::info_span!("request", path = "/x").entered();
            tracing::info!(session = "S1", "message appended");
        });
        String::from_utf8(captured.0.lock().unwrap().clone()).unwrap()
    }

    #[test]
    fn human_lines_end_with_the_node_id() {
        let line = log_line(LogFormat::Human);
        assert!(line.ends_with(" node=eu-1\n"), "{line:?}");
        assert!(line.contains("message appended session=\"S1\""), "{line:?}");
        assert!(line.contains("request{path=\"/x\"}"), "{line:?}");
    }

    #[test]
    fn json_lines_are_objects_with_the_node_id() {
        let line = log_line(LogFormat::Json);
        let value: serde_json::Value = serde_json::from_str(&line).expect("one JSON object");
        assert_eq!(value["node"], "eu-1");
        assert_eq!(value["fields"]["message"], "message appended");
        assert_eq!(value["fields"]["session"], "S1");
    }
}
