//! Rendering answers like kubectl: `-o table` (the default), `wide` (every
//! field), `json` and `yaml`; `--no-headers`. Tables are box-drawn only on a
//! terminal: piped into another program they are plain aligned columns, so
//! `awk`, `cut` and `column` read them. Colours (events, load) only on a
//! terminal and never with `NO_COLOR` (no-color.org).

use comfy_table::presets::{NOTHING, UTF8_FULL_CONDENSED};
use comfy_table::{ContentArrangement, Table};
use serde::Serialize;
use serde_json::Value;
use std::io::IsTerminal;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Default)]
pub enum Format {
    /// The main columns
    #[default]
    Table,
    /// Every field as a column
    Wide,
    Json,
    Yaml,
    /// Readable lines (`events tail`; elsewhere the same as `table`)
    Text,
}

/// How this invocation prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Output {
    pub format: Format,
    pub headers: bool,
    /// Box-drawn tables, for a person at a terminal.
    pub boxed: bool,
}

impl Output {
    /// `format` with headers, boxed when stdout is a terminal.
    pub fn detect(format: Format, no_headers: bool) -> Output {
        Output {
            format,
            headers: !no_headers,
            boxed: std::io::stdout().is_terminal(),
        }
    }

    /// Plain, with headers: what a test or a pipe sees.
    pub fn plain(format: Format) -> Output {
        Output {
            format,
            headers: true,
            boxed: false,
        }
    }

    /// A table in this output's style.
    pub fn table(&self) -> Table {
        let mut t = Table::new();
        t.set_content_arrangement(ContentArrangement::Disabled)
            .force_no_tty();
        if self.boxed {
            t.load_preset(UTF8_FULL_CONDENSED);
        } else {
            t.load_preset(NOTHING);
        }
        t
    }

    /// A finished table as text: plain ones lose comfy-table's cell padding
    /// on the left and trailing blanks, so columns start at column 0 and are
    /// separated by two spaces, like kubectl's.
    pub fn finish(&self, mut t: Table) -> String {
        if self.boxed {
            return t.to_string();
        }
        for c in t.column_iter_mut() {
            c.set_padding((0, 2));
        }
        t.trim_fmt()
    }

    /// `json` and `yaml` of any serializable value; `None` for the
    /// tabular formats, which each command lays out itself.
    pub fn structured<T: Serialize + ?Sized>(&self, value: &T) -> Option<String> {
        match self.format {
            Format::Json => {
                Some(serde_json::to_string_pretty(value).unwrap_or_else(|e| format!("\"{e}\"")))
            }
            Format::Yaml => Some(
                serde_yaml_ng::to_string(value)
                    .map(|s| s.trim_end().to_owned())
                    .unwrap_or_else(|e| format!("error: {e}")),
            ),
            Format::Table | Format::Wide | Format::Text => None,
        }
    }
}

/// Whether stdout wants colours: a terminal, and no `NO_COLOR`.
pub fn color_wanted() -> bool {
    no_color_unset() && std::io::stdout().is_terminal()
}

/// Whether stderr wants colours (progress bars, spinners).
pub fn color_wanted_on_stderr() -> bool {
    no_color_unset() && std::io::stderr().is_terminal()
}

fn no_color_unset() -> bool {
    std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// One cell: strings bare, null as `-`, nested values as compact JSON.
pub fn cell(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        other => other.to_string(),
    }
}

/// The columns of a page: `columns` (every field of the first item when
/// empty), and with `wide` every other field of the first item after them.
fn page_columns(items: &[Value], columns: &[&str], wide: bool) -> Vec<String> {
    let mut cols: Vec<String> = columns.iter().map(|c| c.to_string()).collect();
    if cols.is_empty() || wide {
        let first = items.first().and_then(Value::as_object);
        for k in first.into_iter().flat_map(|o| o.keys()) {
            if !cols.contains(k) {
                cols.push(k.clone());
            }
        }
    }
    cols
}

/// A page `{items, page, size, total}` as rows with `columns`; an object as
/// field/value rows (`columns` first, then the rest in order); anything else
/// as JSON.
pub fn render(value: &Value, columns: &[&str], out: &Output) -> String {
    if let Some(s) = out.structured(value) {
        return s;
    }
    match value {
        Value::Null => "ok".into(),
        Value::Object(map) => match map.get("items").and_then(Value::as_array) {
            Some(items) => render_page(map, items, columns, out),
            None => {
                let mut t = out.table();
                if out.headers {
                    t.set_header(vec!["field", "value"]);
                }
                for c in columns {
                    if let Some(v) = map.get(*c) {
                        t.add_row(vec![c.to_string(), cell(v)]);
                    }
                }
                for (k, v) in map {
                    if !columns.contains(&k.as_str()) {
                        t.add_row(vec![k.clone(), cell(v)]);
                    }
                }
                out.finish(t)
            }
        },
        other => serde_json::to_string_pretty(other).unwrap_or_else(|_| other.to_string()),
    }
}

fn render_page(
    map: &serde_json::Map<String, Value>,
    items: &[Value],
    columns: &[&str],
    out: &Output,
) -> String {
    let mut t = out.table();
    let cols = page_columns(items, columns, out.format == Format::Wide);
    if out.headers {
        t.set_header(cols.clone());
    }
    for item in items {
        t.add_row(
            cols.iter()
                .map(|c| cell(item.get(c).unwrap_or(&Value::Null))),
        );
    }
    let table = out.finish(t);
    if !out.headers {
        // Rows only: what `--no-headers` is for (`| while read`).
        return table;
    }
    let footer = format!(
        "page {} (size {}), {} of {} total",
        cell(map.get("page").unwrap_or(&Value::Null)),
        cell(map.get("size").unwrap_or(&Value::Null)),
        items.len(),
        cell(map.get("total").unwrap_or(&Value::Null)),
    );
    format!("{table}\n{footer}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const BOXED: Output = Output {
        format: Format::Table,
        headers: true,
        boxed: true,
    };

    fn page() -> Value {
        json!({"items":[{"id":"a","name":"x","extra":null},{"id":"b","name":"y","extra":3}],
               "page":1,"size":20,"total":2})
    }

    #[test]
    fn pages_become_tables_with_a_footer() {
        let out = render(&page(), &["id", "name"], &BOXED);
        let lines: Vec<&str> = out.lines().collect();
        assert!(
            lines[1].contains("id") && lines[1].contains("name"),
            "{out}"
        );
        assert!(out.contains("│ a  ┆ x    │"), "{out}");
        assert!(!out.contains("extra"), "{out}");
        assert!(out.ends_with("page 1 (size 20), 2 of 2 total"), "{out}");
    }

    #[test]
    fn off_a_terminal_tables_are_plain_aligned_columns() {
        let out = render(&page(), &["id", "name"], &Output::plain(Format::Table));
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[0], "id  name", "{out}");
        assert_eq!(lines[1], "a   x", "{out}");
        assert_eq!(lines[2], "b   y", "{out}");
        assert!(!out.contains('│') && !out.contains('─'), "{out}");
    }

    #[test]
    fn wide_adds_every_field_and_no_headers_drops_header_and_footer() {
        let wide = render(&page(), &["id"], &Output::plain(Format::Wide));
        assert_eq!(wide.lines().next(), Some("id  extra  name"), "{wide}");
        let bare = Output {
            headers: false,
            ..Output::plain(Format::Table)
        };
        let rows = render(&page(), &["id", "name"], &bare);
        assert_eq!(rows, "a  x\nb  y");
    }

    #[test]
    fn objects_become_field_value_rows_preferred_first() {
        let obj = json!({"b": 2, "a": {"n": 1}, "id": "z"});
        let out = render(&obj, &["id"], &BOXED);
        let id_at = out.find("id").unwrap();
        let a_at = out.find("{\"n\":1}").unwrap();
        assert!(id_at < a_at, "{out}");
    }

    #[test]
    fn json_and_yaml_are_the_answer_verbatim() {
        let obj = json!({"items": [{"id": "a"}], "total": 1});
        let out = render(&obj, &["id"], &Output::plain(Format::Json));
        assert_eq!(serde_json::from_str::<Value>(&out).unwrap(), obj);
        let out = render(&obj, &["id"], &Output::plain(Format::Yaml));
        assert_eq!(serde_yaml_ng::from_str::<Value>(&out).unwrap(), obj);
        assert_eq!(render(&Value::Null, &[], &BOXED), "ok");
    }
}
