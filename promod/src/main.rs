//! Thin binary: parse the command line, load config, run until a signal.

use clap::Parser;
use promod::config::{CliOverrides, Config, LogOverrides};
use std::path::PathBuf;
use std::process::ExitCode;

// glibc malloc took a fifth of promod's CPU under load and let RSS grow
// with fragmentation (perf/README.md, "Where the time goes").
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "promod",
    version,
    about = "promo daemon: gateway, coupon, point and timesale roles"
)]
struct Cli {
    /// TOML config file (defaults < file < PROMO_* env < these flags).
    #[arg(short, long, env = "PROMO_CONFIG")]
    config: Option<PathBuf>,
    /// Roles to run, comma separated: gateway,coupon,point,timesale.
    #[arg(long)]
    roles: Option<String>,
    /// Log format: text or json.
    #[arg(long)]
    log_format: Option<String>,
    /// Log filter, e.g. `info` or `info,promod=debug`.
    #[arg(long)]
    log_level: Option<String>,
    /// Kafka bootstrap servers (empty disables publishing).
    #[arg(long)]
    kafka_brokers: Option<String>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let overrides = CliOverrides {
        roles: cli.roles,
        log: (cli.log_format.is_some() || cli.log_level.is_some()).then_some(LogOverrides {
            format: cli.log_format,
            level: cli.log_level,
        }),
        kafka_brokers: cli.kafka_brokers,
    };
    let config = match Config::load(cli.config.as_deref(), &overrides) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("promod: {e}");
            return ExitCode::from(2);
        }
    };
    let _guard = match promod::telemetry::init(&config.log) {
        Ok(g) => g,
        Err(e) => {
            eprintln!("promod: {e:#}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("promod: cannot start runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let shutdown = tokio_util::sync::CancellationToken::new();
        let signal = shutdown.clone();
        tokio::spawn(async move {
            promod::server::wait_for_signal().await;
            tracing::info!("shutdown signal received, draining");
            signal.cancel();
        });
        match promod::server::run(config, shutdown).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("promod: {}", format!("{e:#}").replace('\n', " "));
                ExitCode::FAILURE
            }
        }
    })
}
