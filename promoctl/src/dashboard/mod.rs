//! `promoctl dashboard`: a live terminal view of the roles, their routes,
//! breakers, rate limiting, coupon and sale stock, points and the outbox.

pub mod action;
pub mod collect;
pub mod components;
pub mod prom;
pub mod state;
pub mod ui;

#[cfg(test)]
mod tests;

#[cfg(test)]
mod source_tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Wrap {
        #[command(flatten)]
        args: DashboardArgs,
    }

    /// The same precedence as every other command: flag, then the file.
    #[test]
    fn addresses_come_from_flags_then_the_config_file() {
        let file = FileConfig {
            coupon_url: Some("http://file-coupon".into()),
            redis_url: Some("redis://file".into()),
            etcd_url: Some(String::new()),
            ..FileConfig::default()
        };
        let w = Wrap::try_parse_from(["x", "--point-url", "http://flag-point"]).unwrap();
        let s = w.args.sources("http://gw", &file);
        let url = |r: Role| s.urls.iter().find(|(x, _)| *x == r).unwrap().1.clone();
        assert_eq!(url(Role::Gateway), "http://gw");
        assert_eq!(url(Role::Coupon), "http://file-coupon");
        assert_eq!(url(Role::Point), "http://flag-point");
        assert_eq!(url(Role::Timesale), TIMESALE);
        assert_eq!(s.redis.as_deref(), Some("redis://file"));
        assert_eq!(s.etcd, None, "an empty value leaves etcd out");
        assert_eq!(s.etcd_prefix, ETCD_PREFIX);
    }
}

use crate::config::FileConfig;
use crate::error::{CtlError, CtlResult};
use action::Action;
use anyhow::Context;
use collect::{Collector, Sources};
use crossterm::event::{Event, EventStream};
use crossterm::terminal::{
    disable_raw_mode, enable_raw_mode, EnterAlternateScreen, LeaveAlternateScreen,
};
use futures::StreamExt;
use promo_store::urls;
use ratatui::backend::CrosstermBackend;
use ratatui::Terminal;
use state::{App, Role};
use std::io::Stdout;
use std::time::Duration;
use tokio::sync::mpsc;

/// The service roles' REST addresses in `scripts/services.sh`.
const COUPON: &str = "http://127.0.0.1:3001";
const POINT: &str = "http://127.0.0.1:3002";
const TIMESALE: &str = "http://127.0.0.1:3003";
const ETCD: &str = "http://127.0.0.1:2379";
const ETCD_PREFIX: &str = "/promo/services";

#[derive(Debug, clap::Args)]
#[command(after_help = "Keys: q quit · tab next pane · p pause · ? help

Every address is a flag, a PROMOCTL_* env var and a config file key of the same
name (--coupon-url, PROMOCTL_COUPON_URL, coupon_url); the gateway is the global
--gateway-url.

Examples:
  promoctl dashboard
  promoctl --context staging dashboard
  promoctl dashboard --gateway-url http://127.0.0.1:4100 --etcd-url ''")]
pub struct DashboardArgs {
    /// The coupon role's REST base URL (health and metrics) [default: http://127.0.0.1:3001]
    #[arg(long, alias = "coupon", env = "PROMOCTL_COUPON_URL")]
    pub coupon_url: Option<String>,
    /// The point role's REST base URL [default: http://127.0.0.1:3002]
    #[arg(long, alias = "point", env = "PROMOCTL_POINT_URL")]
    pub point_url: Option<String>,
    /// The timesale role's REST base URL [default: http://127.0.0.1:3003]
    #[arg(long, alias = "timesale", env = "PROMOCTL_TIMESALE_URL")]
    pub timesale_url: Option<String>,
    /// Where coupon and sale stock lives; empty to leave it out [default: redis://127.0.0.1:6379]
    #[arg(long, alias = "redis", env = "PROMOCTL_REDIS_URL")]
    pub redis_url: Option<String>,
    /// For `rediss://` with a private CA: the PEM file that signed Redis's certificate
    #[arg(long, env = "PROMOCTL_REDIS_CA_FILE")]
    pub redis_ca_file: Option<std::path::PathBuf>,
    /// etcd, for the registered instances of each role; empty to leave it out
    /// [default: http://127.0.0.1:2379]
    #[arg(long, alias = "etcd", env = "PROMOCTL_ETCD_URL")]
    pub etcd_url: Option<String>,
    /// The prefix promod registers under (its `etcd_prefix`) [default: /promo/services]
    #[arg(long, env = "PROMOCTL_ETCD_PREFIX")]
    pub etcd_prefix: Option<String>,
    /// How often to collect.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub refresh: Duration,
}

impl DashboardArgs {
    /// Each address from its flag (or env), else the config file, else the
    /// default; an empty value leaves the source out.
    fn sources(&self, gateway: &str, file: &FileConfig) -> Sources {
        let get = |flag: &Option<String>, key: &Option<String>, default: &str| {
            flag.as_deref()
                .or(key.as_deref())
                .unwrap_or(default)
                .trim()
                .to_owned()
        };
        let some = |s: String| (!s.is_empty()).then_some(s);
        Sources {
            urls: vec![
                (Role::Gateway, gateway.to_owned()),
                (
                    Role::Coupon,
                    get(&self.coupon_url, &file.coupon_url, COUPON),
                ),
                (Role::Point, get(&self.point_url, &file.point_url, POINT)),
                (
                    Role::Timesale,
                    get(&self.timesale_url, &file.timesale_url, TIMESALE),
                ),
            ],
            redis: some(get(&self.redis_url, &file.redis_url, urls::REDIS_URL)),
            redis_ca_file: self.redis_ca_file.clone().or(file.redis_ca_file.clone()),
            etcd: some(get(&self.etcd_url, &file.etcd_url, ETCD)),
            etcd_prefix: get(&self.etcd_prefix, &file.etcd_prefix, ETCD_PREFIX),
            certificate_authority: file.certificate_authority.clone(),
        }
    }
}

pub async fn run(args: DashboardArgs, gateway: &str, file: &FileConfig) -> CtlResult<()> {
    if args.refresh < Duration::from_millis(100) {
        return Err(CtlError::usage("--refresh must be at least 100ms"));
    }
    let collector = Collector::new(args.sources(gateway, file))?;
    install_panic_hook();
    let mut terminal = enter().context("cannot set up the terminal")?;
    // Dropped on every way out of this function, errors included.
    let _restore = RestoreOnDrop;
    let res = event_loop(&mut terminal, collector, args.refresh).await;
    drop(terminal);
    Ok(res?)
}

async fn event_loop(
    terminal: &mut Terminal<CrosstermBackend<Stdout>>,
    mut collector: Collector,
    refresh: Duration,
) -> anyhow::Result<()> {
    let (tx, mut rx) = mpsc::channel::<Action>(4);
    // Collection runs beside the UI, so a slow source never freezes the keys.
    let collecting = tokio::spawn(async move {
        let mut every = tokio::time::interval(refresh);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            let snap = collector.collect().await;
            if tx.send(Action::Data(Box::new(snap))).await.is_err() {
                break;
            }
        }
    });
    let mut events = EventStream::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut sigint = signal(tokio::signal::unix::SignalKind::interrupt())?;
    let mut sigterm = signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut app = App::default();
    let res = loop {
        if let Err(e) = terminal.draw(|f| ui::render(f, &app)) {
            break Err(e).context("cannot draw");
        }
        let action = tokio::select! {
            _ = tick.tick() => Action::Tick,
            a = rx.recv() => match a {
                Some(a) => a,
                None => break Err(anyhow::anyhow!("the collector stopped")),
            },
            ev = events.next() => match ev {
                Some(Ok(Event::Key(k))) => match Action::from_key(k) {
                    Some(a) => a,
                    None => continue,
                },
                // Resizes and the rest only need the redraw at the loop's top.
                Some(Ok(_)) => continue,
                Some(Err(e)) => break Err(e).context("cannot read the terminal"),
                None => Action::Quit,
            },
            _ = sigint.recv() => Action::Quit,
            _ = sigterm.recv() => Action::Quit,
        };
        app.apply(action);
        if app.quit {
            break Ok(());
        }
    };
    collecting.abort();
    res
}

fn signal(kind: tokio::signal::unix::SignalKind) -> anyhow::Result<tokio::signal::unix::Signal> {
    tokio::signal::unix::signal(kind).context("cannot listen for signals")
}

fn enter() -> anyhow::Result<Terminal<CrosstermBackend<Stdout>>> {
    enable_raw_mode()?;
    let mut out = std::io::stdout();
    if let Err(e) = crossterm::execute!(out, EnterAlternateScreen, crossterm::cursor::Hide) {
        restore();
        return Err(e.into());
    }
    Terminal::new(CrosstermBackend::new(out))
        .inspect_err(|_| restore())
        .map_err(Into::into)
}

/// Safe to call twice: leaving raw mode or the alternate screen again is a no-op.
fn restore() {
    let _ = disable_raw_mode();
    let _ = crossterm::execute!(
        std::io::stdout(),
        LeaveAlternateScreen,
        crossterm::cursor::Show
    );
}

struct RestoreOnDrop;

impl Drop for RestoreOnDrop {
    fn drop(&mut self) {
        restore();
    }
}

/// Restores the terminal before the panic message prints, or the message
/// would land in the alternate screen, mangled by raw mode, and vanish.
fn install_panic_hook() {
    chain_panic_hook(restore);
}

fn chain_panic_hook(first: impl Fn() + Send + Sync + 'static) {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        first();
        previous(info);
    }));
}

#[cfg(test)]
mod panic_tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    #[test]
    fn a_panic_restores_before_the_previous_hook_reports() {
        let order = Arc::new(AtomicUsize::new(0));
        let (restored, reported) = (order.clone(), order.clone());
        // Stands for the default hook that prints the message.
        std::panic::set_hook(Box::new(move |_| {
            let _ = reported.compare_exchange(1, 2, Ordering::SeqCst, Ordering::SeqCst);
        }));
        super::chain_panic_hook(move || {
            let _ = restored.compare_exchange(0, 1, Ordering::SeqCst, Ordering::SeqCst);
        });
        let caught = std::panic::catch_unwind(|| panic!("boom"));
        let _ = std::panic::take_hook();
        assert!(caught.is_err());
        assert_eq!(order.load(Ordering::SeqCst), 2, "restore, then report");
    }
}
