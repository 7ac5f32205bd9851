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

use crate::config::DEFAULT_GATEWAY;
use crate::error::{CtlError, CtlResult};
use action::Action;
use anyhow::Context;
use collect::{Collector, Sources};
use crossterm::event::{Event, EventStream};
use crossterm::terminal::{
    disable_raw_mode, enable_raw_mode, EnterAlternateScreen, LeaveAlternateScreen,
};
use futures::StreamExt;
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

#[derive(Debug, clap::Args)]
#[command(after_help = "Keys: q quit · tab next pane · p pause · ? help

Examples:
  promoctl dashboard
  promoctl dashboard --gateway http://10.0.0.5:4000 --etcd ''")]
pub struct DashboardArgs {
    /// The gateway role's REST base URL.
    #[arg(long, env = "PROMOCTL_GATEWAY", default_value = DEFAULT_GATEWAY)]
    pub gateway: String,
    /// The coupon role's REST base URL (health and metrics).
    #[arg(long, env = "PROMOCTL_COUPON", default_value = COUPON)]
    pub coupon: String,
    /// The point role's REST base URL.
    #[arg(long, env = "PROMOCTL_POINT", default_value = POINT)]
    pub point: String,
    /// The timesale role's REST base URL.
    #[arg(long, env = "PROMOCTL_TIMESALE", default_value = TIMESALE)]
    pub timesale: String,
    /// Where coupon and sale stock lives; empty to leave it out.
    #[arg(long, env = "PROMOCTL_REDIS", default_value = "redis://127.0.0.1:6379")]
    pub redis: String,
    /// etcd, for the registered instances of each role; empty to leave it out.
    #[arg(long, env = "PROMOCTL_ETCD", default_value = "http://127.0.0.1:2379")]
    pub etcd: String,
    /// The prefix promod registers under (its `etcd_prefix`).
    #[arg(long, env = "PROMOCTL_ETCD_PREFIX", default_value = "/promo/services")]
    pub etcd_prefix: String,
    /// How often to collect.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub refresh: Duration,
}

impl DashboardArgs {
    fn sources(&self) -> Sources {
        let some = |s: &str| (!s.trim().is_empty()).then(|| s.trim().to_owned());
        Sources {
            urls: vec![
                (Role::Gateway, self.gateway.clone()),
                (Role::Coupon, self.coupon.clone()),
                (Role::Point, self.point.clone()),
                (Role::Timesale, self.timesale.clone()),
            ],
            redis: some(&self.redis),
            etcd: some(&self.etcd),
            etcd_prefix: self.etcd_prefix.clone(),
        }
    }
}

pub async fn run(args: DashboardArgs) -> CtlResult<()> {
    if args.refresh < Duration::from_millis(100) {
        return Err(CtlError::usage("--refresh must be at least 100ms"));
    }
    let collector = Collector::new(args.sources())?;
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
