//! Everything that changes the dashboard's state goes through one of these.

use super::state::Snapshot;
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
