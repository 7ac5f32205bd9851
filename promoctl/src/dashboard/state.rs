//! The pure model: what was collected ([`Snapshot`]) and what the user did
//! ([`App`]). No I/O here, so every behaviour is a unit test away.

use super::action::Action;
use chrono::{DateTime, Utc};
use std::collections::{BTreeMap, VecDeque};

/// How many samples each inventory sparkline keeps (a minute at 1 s).
pub const HISTORY: usize = 60;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    Gateway,
    Coupon,
    Point,
    Timesale,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::Gateway => "gateway",
            Role::Coupon => "coupon",
            Role::Point => "point",
            Role::Timesale => "timesale",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Health {
    Up,
    /// Alive but its dependencies are not (readyz failed).
    Unready,
    Down(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct RoleView {
    pub role: Role,
    pub url: String,
    pub health: Health,
    /// Instances registered in etcd; None when etcd is unknown or the role
    /// does not register (the gateway).
    pub instances: Option<usize>,
    /// Requests per second over all its routes; None before two scrapes.
    pub rps: Option<f64>,
    /// Share of 5xx answers, in percent.
    pub err_pct: Option<f64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RouteView {
    pub role: Role,
    pub method: String,
    pub route: String,
    pub rps: Option<f64>,
    /// Seconds.
    pub p50: Option<f64>,
    pub p99: Option<f64>,
    pub err_pct: Option<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
    Unknown(f64),
}

impl BreakerState {
    pub fn from_gauge(v: f64) -> BreakerState {
        match v as i64 {
            0 => BreakerState::Closed,
            1 => BreakerState::Open,
            2 => BreakerState::HalfOpen,
            _ => BreakerState::Unknown(v),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct GatewayView {
    pub breakers: Vec<(String, BreakerState)>,
    /// (group, per second, total).
    pub rate_limited: Vec<(String, Option<f64>, f64)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum StockKind {
    Coupon,
    Sale,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Stock {
    pub kind: StockKind,
    pub id: String,
    pub remaining: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PointsView {
    /// (op, per second, total), summed over outcomes.
    pub ops: Vec<(String, Option<f64>, f64)>,
    pub rps: Option<f64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct OutboxView {
    /// (service, backlog, oldest age in seconds).
    pub backlog: Vec<(String, f64, f64)>,
    pub published_rps: Option<f64>,
    pub published_total: f64,
}

/// Everything the dashboard shows, as of one collection. `None` in a part
/// means "no data": its source was down or unreachable.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    pub taken_at: DateTime<Utc>,
    pub roles: Vec<RoleView>,
    pub routes: Vec<RouteView>,
    pub gateway: Option<GatewayView>,
    pub inventory: Option<Vec<Stock>>,
    pub points: Option<PointsView>,
    pub outbox: Option<OutboxView>,
    /// Why etcd, Redis or a scrape gave nothing, for the status line.
    pub problems: Vec<String>,
}

impl Snapshot {
    pub fn role(&self, role: Role) -> Option<&RoleView> {
        self.roles.iter().find(|r| r.role == role)
    }

    pub fn is_up(&self, role: Role) -> bool {
        self.role(role)
            .is_some_and(|r| !matches!(r.health, Health::Down(_)))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Pane {
    Roles,
    Gateway,
    Routes,
    Inventory,
    Flow,
}

impl Pane {
    const ORDER: [Pane; 5] = [
        Pane::Roles,
        Pane::Gateway,
        Pane::Routes,
        Pane::Inventory,
        Pane::Flow,
    ];

    fn next(self) -> Pane {
        let i = Pane::ORDER.iter().position(|p| *p == self).unwrap_or(0);
        Pane::ORDER[(i + 1) % Pane::ORDER.len()]
    }
}

#[derive(Debug)]
pub struct App {
    pub snapshot: Option<Snapshot>,
    /// Recent remaining quantities per stock, oldest first.
    pub history: BTreeMap<(StockKind, String), VecDeque<u64>>,
    pub focus: Pane,
    /// Rows scrolled past in each pane's list; renderers clamp it to what
    /// they have, so it never needs to know the list lengths.
    pub scroll: BTreeMap<Pane, usize>,
    pub paused: bool,
    pub help: bool,
    pub quit: bool,
    pub ticks: u64,
}

impl Default for App {
    fn default() -> Self {
        App {
            snapshot: None,
            history: BTreeMap::new(),
            focus: Pane::Roles,
            scroll: BTreeMap::new(),
            paused: false,
            help: false,
            quit: false,
            ticks: 0,
        }
    }
}

impl App {
    pub fn apply(&mut self, action: Action) {
        match action {
            Action::Tick => self.ticks += 1,
            Action::Quit => self.quit = true,
            Action::NextPane => self.focus = self.focus.next(),
            Action::TogglePause => self.paused = !self.paused,
            Action::ToggleHelp => self.help = !self.help,
            Action::Scroll(by) => {
                let s = self.scroll.entry(self.focus).or_insert(0);
                *s = s.saturating_add_signed(by as isize);
            }
            // A paused view is frozen on purpose: the user is reading it.
            Action::Data(_) if self.paused => {}
            Action::Data(s) => self.take(*s),
        }
    }

    fn take(&mut self, s: Snapshot) {
        if let Some(stocks) = &s.inventory {
            // Policies and sales that ended leave the view with their history.
            self.history
                .retain(|k, _| stocks.iter().any(|st| (st.kind, st.id.clone()) == *k));
            for st in stocks {
                let h = self.history.entry((st.kind, st.id.clone())).or_default();
                h.push_back(st.remaining.max(0) as u64);
                while h.len() > HISTORY {
                    h.pop_front();
                }
            }
        }
        self.snapshot = Some(s);
    }

    pub fn scroll_of(&self, pane: Pane) -> usize {
        self.scroll.get(&pane).copied().unwrap_or(0)
    }

    pub fn history_of(&self, st: &Stock) -> Option<&VecDeque<u64>> {
        self.history.get(&(st.kind, st.id.clone()))
    }
}

#[cfg(test)]
pub mod tests {
    use super::*;

    pub fn stock(kind: StockKind, id: &str, remaining: i64) -> Stock {
        Stock {
            kind,
            id: id.into(),
            remaining,
        }
    }

    pub fn empty_snapshot() -> Snapshot {
        Snapshot {
            taken_at: "2026-11-25T12:00:00Z".parse().unwrap(),
            roles: Vec::new(),
            routes: Vec::new(),
            gateway: None,
            inventory: None,
            points: None,
            outbox: None,
            problems: Vec::new(),
        }
    }

    fn with_stock(remaining: i64) -> Action {
        Action::Data(Box::new(Snapshot {
            inventory: Some(vec![stock(StockKind::Coupon, "p1", remaining)]),
            ..empty_snapshot()
        }))
    }

    #[test]
    fn pause_freezes_the_view_and_resumes() {
        let mut app = App::default();
        app.apply(with_stock(10));
        app.apply(Action::TogglePause);
        assert!(app.paused);
        app.apply(with_stock(5));
        let shown =
            |app: &App| app.snapshot.as_ref().unwrap().inventory.clone().unwrap()[0].remaining;
        assert_eq!(shown(&app), 10);
        app.apply(Action::TogglePause);
        app.apply(with_stock(4));
        assert_eq!(shown(&app), 4);
        let h: Vec<u64> = app
            .history
            .values()
            .next()
            .unwrap()
            .iter()
            .copied()
            .collect();
        assert_eq!(h, vec![10, 4]);
    }

    #[test]
    fn tab_cycles_through_every_pane_and_back() {
        let mut app = App::default();
        let mut seen = vec![app.focus];
        for _ in 0..5 {
            app.apply(Action::NextPane);
            seen.push(app.focus);
        }
        assert_eq!(seen.first(), seen.last());
        let mut distinct = seen[..5].to_vec();
        distinct.dedup();
        assert_eq!(distinct.len(), 5);
    }

    #[test]
    fn scrolling_moves_only_the_focused_pane_and_stops_at_the_top() {
        let mut app = App::default();
        app.apply(Action::NextPane);
        app.apply(Action::NextPane);
        assert_eq!(app.focus, Pane::Routes);
        app.apply(Action::Scroll(3));
        app.apply(Action::Scroll(-1));
        assert_eq!(app.scroll_of(Pane::Routes), 2);
        assert_eq!(app.scroll_of(Pane::Inventory), 0);
        app.apply(Action::Scroll(-10));
        assert_eq!(app.scroll_of(Pane::Routes), 0);
    }

    #[test]
    fn help_toggles_and_quit_sticks() {
        let mut app = App::default();
        app.apply(Action::ToggleHelp);
        assert!(app.help);
        app.apply(Action::ToggleHelp);
        assert!(!app.help);
        app.apply(Action::Tick);
        assert!(!app.quit);
        app.apply(Action::Quit);
        assert!(app.quit);
    }

    #[test]
    fn history_is_bounded_and_forgets_vanished_stock() {
        let mut app = App::default();
        for i in 0..(HISTORY as i64 + 10) {
            app.apply(with_stock(i));
        }
        let h = app.history.values().next().unwrap();
        assert_eq!(h.len(), HISTORY);
        assert_eq!(*h.back().unwrap(), HISTORY as u64 + 9);
        app.apply(Action::Data(Box::new(Snapshot {
            inventory: Some(vec![]),
            ..empty_snapshot()
        })));
        assert!(app.history.is_empty());
    }
}
