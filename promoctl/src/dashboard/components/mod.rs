//! The panes. Each draws one part of the [`App`] into its area and says
//! "no data" for a part whose source is down, rather than stale numbers.

pub mod breakers;
pub mod flow;
pub mod inventory;
pub mod roles;
pub mod routes;

use super::state::{App, Pane};
use ratatui::layout::Rect;
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::Line;
use ratatui::widgets::{Block, Paragraph};
use ratatui::Frame;

pub fn block(app: &App, pane: Pane, title: &str) -> Block<'static> {
    let focused = app.focus == pane;
    let style = if focused {
        Style::default()
            .fg(Color::Cyan)
            .add_modifier(Modifier::BOLD)
    } else {
        Style::default().fg(Color::DarkGray)
    };
    Block::bordered()
        .border_style(style)
        .title(Line::styled(format!(" {title} "), style))
}

pub fn no_data(frame: &mut Frame, area: Rect, block: Block<'_>, why: &str) {
    frame.render_widget(
        Paragraph::new(Line::styled(
            why.to_owned(),
            Style::default().fg(Color::Red),
        ))
        .block(block),
        area,
    );
}

pub fn waiting(frame: &mut Frame, area: Rect, block: Block<'_>) {
    frame.render_widget(
        Paragraph::new(Line::styled(
            "collecting…",
            Style::default().fg(Color::DarkGray),
        ))
        .block(block),
        area,
    );
}

pub fn rate(v: Option<f64>) -> String {
    match v {
        None => "-".into(),
        Some(r) if r >= 1000.0 => format!("{:.1}k", r / 1000.0),
        Some(r) => format!("{r:.1}"),
    }
}

pub fn pct(v: Option<f64>) -> String {
    v.map_or("-".into(), |p| format!("{p:.1}%"))
}

pub fn latency(secs: Option<f64>) -> String {
    match secs {
        None => "-".into(),
        Some(s) if s < 0.01 => format!("{:.1}ms", s * 1000.0),
        Some(s) if s < 1.0 => format!("{:.0}ms", s * 1000.0),
        Some(s) => format!("{s:.2}s"),
    }
}

/// A one-line sparkline of the last `width` values, scaled between their
/// minimum and maximum so that a slow drain still shows.
pub fn sparkline<'a>(values: impl DoubleEndedIterator<Item = &'a u64>, width: usize) -> String {
    const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    let mut last: Vec<u64> = values.rev().take(width).copied().collect();
    last.reverse();
    let (Some(&min), Some(&max)) = (last.iter().min(), last.iter().max()) else {
        return String::new();
    };
    last.iter()
        .map(|&v| {
            if max == min {
                BARS[3]
            } else {
                BARS[((v - min) * 7 / (max - min)) as usize]
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn sparkline_scales_between_min_and_max_and_keeps_the_newest() {
        let v = [100u64, 100, 93, 86, 79, 72, 65, 58, 51];
        assert_eq!(super::sparkline(v.iter(), 8), "█▇▆▅▄▃▂▁");
        assert_eq!(super::sparkline([5u64, 5].iter(), 8), "▄▄");
        assert_eq!(super::sparkline([].iter(), 8), "");
    }

    #[test]
    fn numbers_are_short() {
        assert_eq!(super::latency(Some(0.0004)), "0.4ms");
        assert_eq!(super::latency(Some(0.25)), "250ms");
        assert_eq!(super::latency(Some(2.5)), "2.50s");
        assert_eq!(super::rate(Some(12345.0)), "12.3k");
        assert_eq!(super::rate(None), "-");
    }
}
