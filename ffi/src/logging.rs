//! Routing `tracing` output to the app's logger.

use std::sync::{Arc, OnceLock, RwLock};

use tracing::{Event, Level, Subscriber, field::Field};
use tracing_subscriber::{
    EnvFilter, Layer, Registry, layer::Context, layer::SubscriberExt, reload,
};

use crate::error::NeuriteError;

/// Severity of a log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

/// The app's logger (implemented in Swift, Kotlin or Python). Called on the library's own
/// threads; it should return quickly.
#[uniffi::export(with_foreign)]
pub trait LogSink: Send + Sync {
    /// One log line: its level, the Rust module it comes from, and the formatted message.
    fn log(&self, level: LogLevel, target: String, message: String);
}

struct Logging {
    sink: Arc<RwLock<Option<Arc<dyn LogSink>>>>,
    filter: reload::Handle<EnvFilter, Registry>,
}

static LOGGING: OnceLock<Result<Logging, String>> = OnceLock::new();

/// Sends the library's log lines that pass `filter` (e.g. `info` or
/// `warn,neurite_core=debug`) to `sink`. A later call replaces both the sink and the filter.
/// Fails if the filter does not parse, or if the process already installed another global
/// `tracing` subscriber.
#[uniffi::export]
pub fn set_log_sink(sink: Arc<dyn LogSink>, filter: String) -> Result<(), NeuriteError> {
    let filter = parse_filter(&filter)?;
    let logging = LOGGING
        .get_or_init(install)
        .as_ref()
        .map_err(|e| NeuriteError::internal(e.clone()))?;
    logging
        .filter
        .reload(filter)
        .map_err(|e| NeuriteError::internal(e.to_string()))?;
    if let Ok(mut slot) = logging.sink.write() {
        *slot = Some(sink);
    }
    Ok(())
}

/// Changes the filter of the installed log sink, if there is one.
pub(crate) fn set_filter(filter: &str) -> Result<(), NeuriteError> {
    let filter = parse_filter(filter)?;
    if let Some(Ok(logging)) = LOGGING.get() {
        logging
            .filter
            .reload(filter)
            .map_err(|e| NeuriteError::internal(e.to_string()))?;
    }
    Ok(())
}

/// Checks that a filter parses.
pub(crate) fn check_filter(filter: &str) -> Result<(), NeuriteError> {
    parse_filter(filter).map(drop)
}

fn parse_filter(filter: &str) -> Result<EnvFilter, NeuriteError> {
    EnvFilter::try_new(filter)
        .map_err(|e| NeuriteError::invalid_config(format!("log filter {filter:?}: {e}")))
}

fn install() -> Result<Logging, String> {
    let (filter_layer, filter) = reload::Layer::new(EnvFilter::new("off"));
    let sink = Arc::new(RwLock::new(None));
    let subscriber = tracing_subscriber::registry()
        .with(filter_layer)
        .with(SinkLayer { sink: sink.clone() });
    tracing::subscriber::set_global_default(subscriber)
        .map_err(|_| "another tracing subscriber is already installed".to_owned())?;
    Ok(Logging { sink, filter })
}

struct SinkLayer {
    sink: Arc<RwLock<Option<Arc<dyn LogSink>>>>,
}

impl<S: Subscriber> Layer<S> for SinkLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let Some(sink) = self.sink.read().ok().and_then(|s| s.clone()) else {
            return;
        };
        let meta = event.metadata();
        let mut text = Message::default();
        event.record(&mut text);
        let level = match *meta.level() {
            Level::ERROR => LogLevel::Error,
            Level::WARN => LogLevel::Warn,
            Level::INFO => LogLevel::Info,
            Level::DEBUG => LogLevel::Debug,
            Level::TRACE => LogLevel::Trace,
        };
        sink.log(level, meta.target().to_owned(), text.0);
    }
}

/// The event's message followed by its other fields as `key=value`.
#[derive(Default)]
struct Message(String);

impl tracing::field::Visit for Message {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        use std::fmt::Write;
        if field.name() == "message" {
            let rest = std::mem::take(&mut self.0);
            let _ = write!(self.0, "{value:?}{rest}");
        } else {
            let _ = write!(self.0, " {}={value:?}", field.name());
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
