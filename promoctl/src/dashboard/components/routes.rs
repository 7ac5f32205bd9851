use super::{block, latency, pct, rate};
use crate::dashboard::state::{App, Pane, RouteView};
use ratatui::layout::{Constraint, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::widgets::{Cell, Row, Table};
use ratatui::Frame;

pub fn render(frame: &mut Frame, area: Rect, app: &App) {
    let b = block(app, Pane::Routes, "routes  (last second)");
    let Some(s) = &app.snapshot else {
        return super::waiting(frame, area, b);
    };
    // Busiest first, so a small terminal still shows what matters.
    let mut routes: Vec<&RouteView> = s.routes.iter().collect();
    routes.sort_by(|a, b| {
        b.rps
            .unwrap_or(0.0)
            .total_cmp(&a.rps.unwrap_or(0.0))
            .then_with(|| (a.role, &a.route, &a.method).cmp(&(b.role, &b.route, &b.method)))
    });
    // A role that is down still gets a line, first, so its absence shows.
    let mut rows: Vec<Row> = s
        .roles
        .iter()
        .filter(|r| !s.is_up(r.role))
        .map(|r| {
            Row::new(vec![Cell::from(r.role.as_str()), Cell::from("no data")])
                .style(Style::default().fg(Color::Red))
        })
        .collect();
    rows.extend(routes.iter().map(|r| {
        let err = Style::default().fg(if r.err_pct.unwrap_or(0.0) > 0.0 {
            Color::Red
        } else {
            Color::Reset
        });
        Row::new(vec![
            Cell::from(r.role.as_str()),
            Cell::from(format!("{} {}", r.method, r.route)),
            Cell::from(rate(r.rps)),
            Cell::from(latency(r.p50)),
            Cell::from(latency(r.p99)),
            Cell::from(pct(r.err_pct)).style(err),
        ])
    }));
    // Keeps at least a screenful in view however far it was scrolled.
    let visible = area.height.saturating_sub(3) as usize;
    let skip = app
        .scroll_of(Pane::Routes)
        .min(rows.len().saturating_sub(visible));
    let table = Table::new(
        rows.into_iter().skip(skip),
        [
            Constraint::Length(8),
            Constraint::Fill(1),
            Constraint::Length(7),
            Constraint::Length(7),
            Constraint::Length(7),
            Constraint::Length(6),
        ],
    )
    .header(
        Row::new(["role", "route", "req/s", "p50", "p99", "5xx"])
            .style(Style::default().add_modifier(Modifier::UNDERLINED)),
    )
    .block(b);
    frame.render_widget(table, area);
}
