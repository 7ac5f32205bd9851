//! The pure model: what was collected ([`Snapshot`]) and what the user did
//! ([`App`]). No I/O here, so every behaviour is a unit test away; the
//! actions that change it are in `action.rs`, which depends on this module
//! and not the other way round.

use chrono::{DateTime, Utc};
pub use promo_store::roles::Role;
use std::collections::{BTreeMap, VecDeque};

/// How many samples each inventory sparkline keeps (a minute at 1 s).
pub const HISTORY: usize = 60;

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
    /// Requests in flight and the bound of its busiest port (admission
    /// control); None when the role exports neither.
    pub busy: Option<(f64, f64)>,
    /// Requests refused by a full port, per second over all its ports.
    pub shed_rps: Option<f64>,
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

    pub(super) fn next(self) -> Pane {
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
    /// Takes a new collection in, keeping each stock's recent history.
    pub(super) fn take(&mut self, s: Snapshot) {
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
}
