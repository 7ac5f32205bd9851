//! Rendering answers: a table by default (comfy-table), JSON with `-o json`.

use comfy_table::{presets::UTF8_FULL_CONDENSED, ContentArrangement, Table};
use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Default)]
pub enum Format {
    #[default]
    Table,
    Json,
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

fn table() -> Table {
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Disabled);
    t
}

/// A page `{items, page, size, total}` as rows with `columns`; an object as
/// field/value rows (`columns` first, then the rest in order); anything else
/// as JSON.
pub fn render(value: &Value, columns: &[&str], format: Format) -> String {
    if format == Format::Json {
        return serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string());
    }
    match value {
        Value::Null => "ok".into(),
        Value::Object(map) => match map.get("items").and_then(Value::as_array) {
            Some(items) => {
                let mut t = table();
                let cols: Vec<String> = if columns.is_empty() {
                    items
                        .first()
                        .and_then(Value::as_object)
                        .map(|o| o.keys().cloned().collect())
                        .unwrap_or_default()
                } else {
                    columns.iter().map(|c| c.to_string()).collect()
                };
                t.set_header(cols.clone());
                for item in items {
                    t.add_row(
                        cols.iter()
                            .map(|c| cell(item.get(c).unwrap_or(&Value::Null))),
                    );
                }
                let footer = format!(
                    "page {} (size {}), {} of {} total",
                    cell(map.get("page").unwrap_or(&Value::Null)),
                    cell(map.get("size").unwrap_or(&Value::Null)),
                    items.len(),
                    cell(map.get("total").unwrap_or(&Value::Null)),
                );
                format!("{t}\n{footer}")
            }
            None => {
                let mut t = table();
                t.set_header(vec!["field", "value"]);
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
                t.to_string()
            }
        },
        other => serde_json::to_string_pretty(other).unwrap_or_else(|_| other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn pages_become_tables_with_a_footer() {
        let page = json!({"items":[{"id":"a","name":"x","extra":null},{"id":"b","name":"y"}],"page":1,"size":20,"total":2});
        let out = render(&page, &["id", "name", "extra"], Format::Table);
        let lines: Vec<&str> = out.lines().collect();
        assert!(
            lines[1].contains("id") && lines[1].contains("name"),
            "{out}"
        );
        assert!(out.contains("│ a  ┆ x    ┆ -     │"), "{out}");
        assert!(out.ends_with("page 1 (size 20), 2 of 2 total"), "{out}");
    }

    #[test]
    fn objects_become_field_value_rows_preferred_first() {
        let obj = json!({"b": 2, "a": {"n": 1}, "id": "z"});
        let out = render(&obj, &["id"], Format::Table);
        let id_at = out.find("id").unwrap();
        let a_at = out.find("{\"n\":1}").unwrap();
        assert!(id_at < a_at, "{out}");
    }

    #[test]
    fn json_is_the_answer_verbatim() {
        let obj = json!({"items": [], "total": 0});
        let out = render(&obj, &["id"], Format::Json);
        assert_eq!(serde_json::from_str::<Value>(&out).unwrap(), obj);
        assert_eq!(render(&Value::Null, &[], Format::Table), "ok");
    }
}
