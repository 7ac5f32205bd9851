use super::{block, rate};
use crate::dashboard::state::{App, Pane};
use ratatui::layout::Rect;
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::Line;
use ratatui::widgets::Paragraph;
use ratatui::Frame;

pub fn render(frame: &mut Frame, area: Rect, app: &App) {
    let b = block(app, Pane::Flow, "points · outbox · kafka");
    let Some(s) = &app.snapshot else {
        return super::waiting(frame, area, b);
    };
    let bold = Style::default().add_modifier(Modifier::BOLD);
    let red = Style::default().fg(Color::Red);
    let mut lines = Vec::new();
    match &s.points {
        None => lines.push(Line::styled("point ops  no data", red)),
        Some(p) => {
            lines.push(Line::styled(format!("point ops  {}/s", rate(p.rps)), bold));
            let ops: Vec<String> = p
                .ops
                .iter()
                .map(|(op, r, _)| format!("{} {}", op.to_lowercase(), rate(*r)))
                .collect();
            if !ops.is_empty() {
                lines.push(Line::from(format!("  {}", ops.join("  "))));
            }
        }
    }
    match &s.outbox {
        None => lines.push(Line::styled("outbox  no data", red)),
        Some(o) => {
            lines.push(Line::styled(
                format!(
                    "kafka events  {}/s  total {:.0}",
                    rate(o.published_rps),
                    o.published_total
                ),
                bold,
            ));
            for (svc, backlog, age) in &o.backlog {
                let style = if *backlog > 0.0 && *age > 10.0 {
                    Style::default().fg(Color::Yellow)
                } else {
                    Style::default()
                };
                lines.push(Line::styled(
                    format!("  {svc:<8} backlog {backlog:<5.0} oldest {age:.1}s"),
                    style,
                ));
            }
        }
    }
    frame.render_widget(Paragraph::new(lines).block(b), area);
}
