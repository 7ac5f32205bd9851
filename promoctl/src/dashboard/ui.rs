//! The layout. Sized for 80×24 first: every pane keeps its header and a few
//! rows there, and larger terminals give the extra room to routes and stock.

use super::components::{breakers, flow, inventory, roles, routes};
use super::state::App;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Clear, Paragraph};
use ratatui::Frame;

pub fn render(frame: &mut Frame, app: &App) {
    let [title, top, middle, bottom] = Layout::vertical([
        Constraint::Length(1),
        // Header and the four roles inside a border.
        Constraint::Length(7),
        Constraint::Fill(1),
        Constraint::Fill(1),
    ])
    .areas(frame.area());
    let [roles_a, gateway_a] =
        Layout::horizontal([Constraint::Percentage(50), Constraint::Percentage(50)]).areas(top);
    let [stock_a, flow_a] =
        Layout::horizontal([Constraint::Percentage(50), Constraint::Percentage(50)]).areas(bottom);

    status_line(frame, title, app);
    roles::render(frame, roles_a, app);
    breakers::render(frame, gateway_a, app);
    routes::render(frame, middle, app);
    inventory::render(frame, stock_a, app);
    flow::render(frame, flow_a, app);
    if app.help {
        help(frame);
    }
}

fn status_line(frame: &mut Frame, area: Rect, app: &App) {
    let mut spans = vec![Span::styled(
        "promo dashboard",
        Style::default().add_modifier(Modifier::BOLD),
    )];
    if let Some(s) = &app.snapshot {
        spans.push(Span::raw(format!(
            " · {}",
            s.taken_at.format("%H:%M:%S UTC")
        )));
    }
    if app.paused {
        spans.push(Span::styled(
            " · PAUSED",
            Style::default()
                .fg(Color::Yellow)
                .add_modifier(Modifier::BOLD),
        ));
    }
    spans.push(Span::styled(
        " · ? help · q quit",
        Style::default().fg(Color::DarkGray),
    ));
    if let Some(p) = app.snapshot.as_ref().and_then(|s| s.problems.first()) {
        spans.push(Span::styled(
            format!(" · {p}"),
            Style::default().fg(Color::Red),
        ));
    }
    frame.render_widget(Paragraph::new(Line::from(spans)), area);
}

fn help(frame: &mut Frame) {
    let text = vec![
        Line::from("q, ctrl-c  quit"),
        Line::from("tab        focus the next pane"),
        Line::from("p          pause or resume refreshing"),
        Line::from("↑↓ j k     scroll routes or stock (focused)"),
        Line::from("?          show or hide this help"),
        Line::from(""),
        Line::from("rates are per second between the last two"),
        Line::from("scrapes; p50/p99 come from the latency"),
        Line::from("histogram over that second; 5xx is the"),
        Line::from("share of server errors. a role that does"),
        Line::from("not answer /healthz is down: no data."),
        Line::from("up 12%: its busiest port holds 12% of its"),
        Line::from("in-flight bound; shed: it refuses (503)."),
    ];
    let area = centered(frame.area(), 48, text.len() as u16 + 2);
    frame.render_widget(Clear, area);
    frame.render_widget(
        Paragraph::new(text).block(
            Block::bordered()
                .title(" help ")
                .border_style(Style::default().fg(Color::Yellow)),
        ),
        area,
    );
}

fn centered(area: Rect, width: u16, height: u16) -> Rect {
    let w = width.min(area.width);
    let h = height.min(area.height);
    Rect {
        x: area.x + (area.width - w) / 2,
        y: area.y + (area.height - h) / 2,
        width: w,
        height: h,
    }
}
