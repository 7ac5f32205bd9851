//! Logging setup: tracing to stderr as text or JSON, and optionally to
//! daily-rotated files.

use crate::config::LogConfig;
use tracing_appender::non_blocking::WorkerGuard;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{fmt, EnvFilter, Layer};

/// Installs the global subscriber. Keep the guard alive: dropping it flushes
/// the file writer.
pub fn init(cfg: &LogConfig) -> anyhow::Result<Option<WorkerGuard>> {
    let filter = EnvFilter::try_new(&cfg.level)
        .map_err(|e| anyhow::anyhow!("log.level `{}` is invalid: {e}", cfg.level))?;
    let json = cfg.format == "json";
    let stderr = if json {
        fmt::layer().json().with_writer(std::io::stderr).boxed()
    } else {
        fmt::layer().with_writer(std::io::stderr).boxed()
    };
    let (file, guard) = match &cfg.dir {
        Some(dir) => {
            let appender = tracing_appender::rolling::daily(dir, "promod.log");
            let (writer, guard) = tracing_appender::non_blocking(appender);
            let layer = if json {
                fmt::layer().json().with_writer(writer).boxed()
            } else {
                fmt::layer().with_ansi(false).with_writer(writer).boxed()
            };
            (Some(layer), Some(guard))
        }
        None => (None, None),
    };
    // A second init (tests spawn several apps in one process) is harmless.
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(stderr)
        .with(file)
        .try_init();
    Ok(guard)
}
