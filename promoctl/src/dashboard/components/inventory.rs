use super::{block, sparkline};
use crate::dashboard::state::{App, Pane, StockKind};
use ratatui::layout::Rect;
use ratatui::style::{Color, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;
use ratatui::Frame;

pub fn render(frame: &mut Frame, area: Rect, app: &App) {
    let b = block(app, Pane::Inventory, "coupons · time sales remaining");
    let Some(s) = &app.snapshot else {
        return super::waiting(frame, area, b);
    };
    let Some(stocks) = &s.inventory else {
        return super::no_data(frame, area, b, "no data (redis unreachable or off)");
    };
    if stocks.is_empty() {
        return frame.render_widget(
            Paragraph::new("no active coupon policy or time sale").block(b),
            area,
        );
    }
    let inner = b.inner(area);
    let rows = inner.height as usize;
    let wide = inner.width >= 80;
    let id_width = if wide { 36 } else { 8 };
    // kind, id, remaining and the spaces between; the sparkline takes the rest.
    let spark_width = (inner.width as usize).saturating_sub(18 + id_width).max(1);
    // The last row says how many more there are when they do not all fit.
    let skip = app
        .scroll_of(Pane::Inventory)
        .min(stocks.len().saturating_sub(rows.saturating_sub(1)));
    let rest = stocks.len() - skip;
    let shown = if rest > rows {
        rows.saturating_sub(1)
    } else {
        rest
    };
    let mut lines: Vec<Line> = stocks
        .iter()
        .skip(skip)
        .take(shown)
        .map(|st| {
            let kind = match st.kind {
                StockKind::Coupon => "coupon",
                StockKind::Sale => "sale",
            };
            let spark = app
                .history_of(st)
                .map(|h| sparkline(h.iter(), spark_width))
                .unwrap_or_default();
            let color = if st.remaining <= 0 {
                Color::Red
            } else {
                Color::Reset
            };
            // UUIDv7s made together share their leading time bits; the tail
            // tells them apart when the whole id does not fit.
            let id = if wide {
                st.id.clone()
            } else {
                let n = st.id.chars().count();
                st.id.chars().skip(n.saturating_sub(8)).collect()
            };
            Line::from(vec![
                Span::raw(format!("{kind:<6} {id:<id_width$} ")),
                Span::styled(format!("{:>9}", st.remaining), Style::default().fg(color)),
                Span::raw(" "),
                Span::styled(spark, Style::default().fg(Color::Cyan)),
            ])
        })
        .collect();
    if shown < rest {
        lines.push(Line::styled(
            format!("… and {} more (tab here, ↓ to scroll)", rest - shown),
            Style::default().fg(Color::DarkGray),
        ));
    }
    frame.render_widget(Paragraph::new(lines).block(b), area);
}
