//! Everything that changes the dashboard's state goes through one of these,
//! and [`App::apply`] is the one place that applies them.

use super::state::{App, Snapshot};
use crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};

#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Tick,
    Quit,
    NextPane,
    TogglePause,
    ToggleHelp,
    /// Scrolls the focused pane's list by this many rows.
    Scroll(i32),
    Data(Box<Snapshot>),
}

impl Action {
    /// The action of a key press, if it has one.
    pub fn from_key(key: KeyEvent) -> Option<Action> {
        // Some terminals also report releases; acting on both would toggle twice.
        if key.kind == KeyEventKind::Release {
            return None;
        }
        // Raw mode turns Ctrl-C into a key instead of a SIGINT.
        if key.modifiers.contains(KeyModifiers::CONTROL) {
            return matches!(key.code, KeyCode::Char('c') | KeyCode::Char('d'))
                .then_some(Action::Quit);
        }
        match key.code {
            KeyCode::Char('q') => Some(Action::Quit),
            KeyCode::Tab => Some(Action::NextPane),
            KeyCode::Char('p') => Some(Action::TogglePause),
            KeyCode::Char('?') => Some(Action::ToggleHelp),
            KeyCode::Down | KeyCode::Char('j') => Some(Action::Scroll(1)),
            KeyCode::Up | KeyCode::Char('k') => Some(Action::Scroll(-1)),
            KeyCode::PageDown => Some(Action::Scroll(10)),
            KeyCode::PageUp => Some(Action::Scroll(-10)),
            _ => None,
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dashboard::state::tests::{empty_snapshot, stock};
    use crate::dashboard::state::{Pane, StockKind, HISTORY};

    #[test]
    fn keys_map_to_actions() {
        let k = |c| KeyEvent::new(c, KeyModifiers::NONE);
        assert_eq!(Action::from_key(k(KeyCode::Char('q'))), Some(Action::Quit));
        assert_eq!(Action::from_key(k(KeyCode::Tab)), Some(Action::NextPane));
        assert_eq!(
            Action::from_key(k(KeyCode::Char('p'))),
            Some(Action::TogglePause)
        );
        assert_eq!(
            Action::from_key(k(KeyCode::Char('?'))),
            Some(Action::ToggleHelp)
        );
        assert_eq!(Action::from_key(k(KeyCode::Down)), Some(Action::Scroll(1)));
        assert_eq!(Action::from_key(k(KeyCode::Char('x'))), None);
        assert_eq!(
            Action::from_key(KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL)),
            Some(Action::Quit)
        );
        let mut release = k(KeyCode::Char('p'));
        release.kind = KeyEventKind::Release;
        assert_eq!(Action::from_key(release), None);
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
