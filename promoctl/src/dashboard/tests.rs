//! Rendering snapshots: a fixed [`Snapshot`] drawn into a `TestBackend` at
//! the smallest supported size and a roomy one.

use super::action::Action;
use super::state::tests::{empty_snapshot, stock};
use super::state::*;
use super::ui;
use ratatui::backend::TestBackend;
use ratatui::Terminal;

fn role(role: Role, health: Health, instances: Option<usize>, rps: f64, err: f64) -> RoleView {
    let down = matches!(health, Health::Down(_));
    RoleView {
        role,
        url: format!("http://10.0.0.{}:3000", role as u8 + 1),
        health,
        instances,
        rps: (!down).then_some(rps),
        err_pct: (!down).then_some(err),
        busy: (!down).then_some((3.0, 256.0)),
        shed_rps: (!down).then_some(0.0),
    }
}

fn route(
    role: Role,
    method: &str,
    path: &str,
    rps: f64,
    p50: f64,
    p99: f64,
    err: f64,
) -> RouteView {
    RouteView {
        role,
        method: method.into(),
        route: path.into(),
        rps: Some(rps),
        p50: Some(p50),
        p99: Some(p99),
        err_pct: Some(err),
    }
}

fn all_up() -> Snapshot {
    Snapshot {
        roles: vec![
            RoleView {
                shed_rps: Some(12.0),
                ..role(Role::Gateway, Health::Up, None, 412.0, 0.5)
            },
            role(Role::Coupon, Health::Up, Some(2), 230.0, 0.0),
            role(Role::Point, Health::Up, Some(1), 120.5, 0.0),
            role(Role::Timesale, Health::Unready, Some(1), 61.0, 3.2),
        ],
        routes: vec![
            route(
                Role::Gateway,
                "POST",
                "/coupons/issue",
                210.0,
                0.0031,
                0.042,
                0.0,
            ),
            route(
                Role::Gateway,
                "POST",
                "/points/earn",
                120.0,
                0.0022,
                0.0188,
                0.0,
            ),
            route(
                Role::Gateway,
                "POST",
                "/time-sales/{id}/orders",
                61.0,
                0.0049,
                0.31,
                3.2,
            ),
            route(
                Role::Coupon,
                "POST",
                "/coupons/issue",
                230.0,
                0.0012,
                0.009,
                0.0,
            ),
            route(
                Role::Point,
                "GET",
                "/points/users/{user_id}/balance",
                20.5,
                0.0004,
                0.002,
                0.0,
            ),
            route(
                Role::Gateway,
                "GET",
                "/coupon-policies",
                1.0,
                0.0051,
                0.0099,
                0.0,
            ),
            route(Role::Gateway, "POST", "/auth/login", 0.0, 0.0, 0.0, 0.0),
        ],
        gateway: Some(GatewayView {
            breakers: vec![
                ("coupon".into(), BreakerState::Closed),
                ("point".into(), BreakerState::HalfOpen),
                ("timesale".into(), BreakerState::Open),
            ],
            rate_limited: vec![
                ("ip".into(), Some(0.0), 3.0),
                ("user".into(), Some(12.0), 480.0),
            ],
        }),
        inventory: Some(vec![
            stock(
                StockKind::Coupon,
                "0193a1b2-aaaa-7000-8000-00000000c0a1",
                9_870,
            ),
            stock(StockKind::Coupon, "0193a1b2-bbbb-7000-8000-00000000c0b2", 0),
            stock(StockKind::Sale, "0193a1b2-cccc-7000-8000-00000000ca1e", 412),
        ]),
        points: Some(PointsView {
            ops: vec![
                ("CANCEL".into(), Some(0.5), 10.0),
                ("EARN".into(), Some(80.0), 9000.0),
                ("USE".into(), Some(40.0), 4000.0),
            ],
            rps: Some(120.5),
        }),
        outbox: Some(OutboxView {
            backlog: vec![
                ("coupon".into(), 0.0, 0.0),
                ("point".into(), 12.0, 0.4),
                ("timesale".into(), 250.0, 31.5),
            ],
            published_rps: Some(350.0),
            published_total: 120_345.0,
        }),
        ..empty_snapshot()
    }
}

fn one_down() -> Snapshot {
    let mut s = all_up();
    s.roles[2] = role(
        Role::Point,
        Health::Down("unreachable".into()),
        Some(0),
        0.0,
        0.0,
    );
    s.routes.retain(|r| r.role != Role::Point);
    s.points = None;
    s.problems = vec!["etcd: timed out".into()];
    s
}

/// An app that has seen the stock drain for a while, for the sparklines.
fn app_with(s: Snapshot) -> App {
    let mut app = App::default();
    for i in (0..12).rev() {
        let mut step = s.clone();
        if let Some(inv) = &mut step.inventory {
            for st in inv {
                st.remaining += i * 7 * (st.remaining > 0) as i64;
            }
        }
        app.apply(Action::Data(Box::new(step)));
    }
    app
}

fn draw(app: &App, w: u16, h: u16) -> String {
    let mut t = Terminal::new(TestBackend::new(w, h)).unwrap();
    t.draw(|f| ui::render(f, app)).unwrap();
    t.backend().to_string()
}

#[test]
fn all_up_80x24() {
    insta::assert_snapshot!(draw(&app_with(all_up()), 80, 24));
}

#[test]
fn all_up_120x40() {
    insta::assert_snapshot!(draw(&app_with(all_up()), 120, 40));
}

#[test]
fn point_down_80x24() {
    insta::assert_snapshot!(draw(&app_with(one_down()), 80, 24));
}

#[test]
fn point_down_120x40() {
    insta::assert_snapshot!(draw(&app_with(one_down()), 120, 40));
}

#[test]
fn gateway_down_redis_gone_and_help_open_80x24() {
    let mut s = all_up();
    s.roles[0] = role(
        Role::Gateway,
        Health::Down("timed out".into()),
        None,
        0.0,
        0.0,
    );
    s.routes.retain(|r| r.role != Role::Gateway);
    s.gateway = None;
    s.inventory = None;
    let mut app = app_with(s);
    app.apply(Action::ToggleHelp);
    app.apply(Action::TogglePause);
    app.apply(Action::NextPane);
    insta::assert_snapshot!(draw(&app, 80, 24));
}

#[test]
fn before_the_first_collection_80x24() {
    insta::assert_snapshot!(draw(&App::default(), 80, 24));
}

#[test]
fn tiny_terminal_does_not_panic() {
    let app = app_with(one_down());
    for (w, h) in [(1, 1), (20, 5), (40, 10), (79, 23)] {
        draw(&app, w, h);
    }
}

#[test]
fn many_policies_scrolled_80x24() {
    let mut s = all_up();
    s.inventory = Some(
        (0..20)
            .map(|i| stock(StockKind::Coupon, &format!("policy-{i:02}"), 100 - i))
            .collect(),
    );
    let mut app = app_with(s);
    while app.focus != Pane::Inventory {
        app.apply(Action::NextPane);
    }
    app.apply(Action::Scroll(3));
    insta::assert_snapshot!(draw(&app, 80, 24));
}
