use super::{block, pct, rate};
use crate::dashboard::state::{App, Health, Pane};
use ratatui::layout::{Constraint, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::widgets::{Cell, Row, Table};
use ratatui::Frame;

pub fn render(frame: &mut Frame, area: Rect, app: &App) {
    let b = block(app, Pane::Roles, "roles");
    let Some(s) = &app.snapshot else {
        return super::waiting(frame, area, b);
    };
    // The url only helps when it fits; a sliver of it is noise.
    let with_url = area.width >= 56;
    let rows = s.roles.iter().map(|r| {
        let (status, color) = match &r.health {
            // Refusing requests matters more than how full the port is.
            Health::Up if r.shed_rps.is_some_and(|s| s > 0.0) => ("shed".to_owned(), Color::Yellow),
            Health::Up => match r.busy {
                Some((n, limit)) => (format!("up {:.0}%", 100.0 * n / limit), Color::Green),
                None => ("up".to_owned(), Color::Green),
            },
            Health::Unready => ("unready".to_owned(), Color::Yellow),
            Health::Down(_) => ("down".to_owned(), Color::Red),
        };
        let down = matches!(r.health, Health::Down(_));
        let etcd = r.instances.map_or("-".to_owned(), |n| n.to_string());
        let detail = match &r.health {
            Health::Down(why) => why.clone(),
            _ => r.url.clone(),
        };
        let (rps, err) = if down {
            ("no data".to_owned(), String::new())
        } else {
            (rate(r.rps), pct(r.err_pct))
        };
        let mut cells = vec![
            Cell::from(r.role.as_str()),
            Cell::from(status).style(Style::default().fg(color).add_modifier(Modifier::BOLD)),
            Cell::from(etcd),
            Cell::from(rps),
            Cell::from(err),
        ];
        if with_url {
            cells.push(Cell::from(detail).style(Style::default().fg(Color::DarkGray)));
        }
        Row::new(cells)
    });
    let table = Table::new(
        rows,
        [
            Constraint::Length(8),
            Constraint::Length(7),
            Constraint::Length(4),
            Constraint::Length(7),
            Constraint::Length(6),
            Constraint::Fill(1),
        ],
    )
    .header(
        Row::new([
            "role",
            "status",
            "etcd",
            "req/s",
            "5xx",
            if with_url { "url" } else { "" },
        ])
        .style(Style::default().add_modifier(Modifier::UNDERLINED)),
    )
    .block(b);
    frame.render_widget(table, area);
}
