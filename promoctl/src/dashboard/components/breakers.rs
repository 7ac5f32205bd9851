use super::{block, rate};
use crate::dashboard::state::{App, BreakerState, Pane, Role};
use ratatui::layout::Rect;
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;
use ratatui::Frame;

pub fn render(frame: &mut Frame, area: Rect, app: &App) {
    let b = block(app, Pane::Gateway, "breakers · rate limit");
    let Some(s) = &app.snapshot else {
        return super::waiting(frame, area, b);
    };
    let Some(g) = s.gateway.as_ref().filter(|_| s.is_up(Role::Gateway)) else {
        return super::no_data(frame, area, b, "no data (gateway down)");
    };
    let mut lines = Vec::new();
    if g.breakers.is_empty() {
        lines.push(Line::from("no breakers (services in process)"));
    }
    for (service, state) in &g.breakers {
        let (text, color) = match state {
            BreakerState::Closed => ("closed".to_owned(), Color::Green),
            BreakerState::Open => ("OPEN".to_owned(), Color::Red),
            BreakerState::HalfOpen => ("half-open".to_owned(), Color::Yellow),
            BreakerState::Unknown(v) => (format!("state {v}"), Color::Magenta),
        };
        lines.push(Line::from(vec![
            Span::raw(format!("{service:<10}")),
            Span::styled(
                text,
                Style::default().fg(color).add_modifier(Modifier::BOLD),
            ),
        ]));
    }
    if g.rate_limited.is_empty() {
        lines.push(Line::from("rate limited  none"));
    }
    for (group, per_sec, total) in &g.rate_limited {
        let style = if per_sec.unwrap_or(0.0) > 0.0 {
            Style::default().fg(Color::Yellow)
        } else {
            Style::default()
        };
        lines.push(Line::styled(
            format!("429 {group:<6} {}/s  total {total:.0}", rate(*per_sec)),
            style,
        ));
    }
    frame.render_widget(Paragraph::new(lines).block(b), area);
}
