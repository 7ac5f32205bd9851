//! The monitoring stack checked without a Docker engine: docker-compose.yml,
//! Prometheus' scrape config and the Grafana dashboard are parsed, and every
//! metric a panel queries must be one a live promod serves on /metrics.

use super::helpers::spawn_app;
use serde_json::Value;
use serde_yaml_ng::Value as Yaml;
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};

fn repo(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(path)
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn yaml(path: &str) -> Yaml {
    serde_yaml_ng::from_str(&read(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn strs(v: &Yaml) -> Vec<String> {
    v.as_sequence()
        .map(|s| {
            s.iter()
                .filter_map(|x| x.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn compose_runs_promod_scraped_by_prometheus_under_the_monitoring_profile() {
    let compose = yaml("docker-compose.yml");
    let services = &compose["services"];
    for name in ["promod", "prometheus", "grafana"] {
        assert_eq!(strs(&services[name]["profiles"]), ["monitoring"], "{name}");
    }
    let promod = &services["promod"];
    let dockerfile = promod["build"]["dockerfile"].as_str().expect("built here");
    let df = read(dockerfile);
    assert!(df.matches("\nFROM ").count() + usize::from(df.starts_with("FROM ")) >= 2);
    assert!(
        df.contains("AS build") && df.contains("COPY --from=build"),
        "multi-stage"
    );
    // Scrapable from another container: the listeners bind every interface.
    let env = &promod["environment"];
    for (key, port) in [
        ("PROMO_GATEWAY__HTTP_ADDR", 4000),
        ("PROMO_COUPON__HTTP_ADDR", 3001),
        ("PROMO_POINT__HTTP_ADDR", 3002),
        ("PROMO_TIMESALE__HTTP_ADDR", 3003),
    ] {
        assert_eq!(env[key].as_str(), Some(format!("0.0.0.0:{port}").as_str()));
    }
    // Every file mounted into a container is in the repository.
    for (name, svc) in services.as_mapping().unwrap() {
        for vol in strs(&svc["volumes"]) {
            if let Some(src) = vol.strip_prefix("./") {
                let src = src.split(':').next().unwrap();
                assert!(
                    repo(src).exists(),
                    "{name:?}: {src} is not in the repository"
                );
            }
        }
    }
    let prom = yaml("monitoring/prometheus.yml");
    let targets: Vec<String> = prom["scrape_configs"]
        .as_sequence()
        .unwrap()
        .iter()
        .flat_map(|j| {
            j["static_configs"]
                .as_sequence()
                .cloned()
                .unwrap_or_default()
        })
        .flat_map(|c| strs(&c["targets"]))
        .collect();
    for port in [4000, 3001, 3002, 3003] {
        let t = format!("promod:{port}");
        assert!(targets.contains(&t), "prometheus does not scrape {t}");
    }
}

/// The metric names a PromQL expression reads: identifiers that are not
/// functions, aggregations, keywords, label names (inside `{}` or
/// `by (...)`) or ranges.
fn metric_names(expr: &str) -> BTreeSet<String> {
    const KEYWORDS: &[&str] = &[
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "and",
        "or",
        "unless",
        "offset",
        "bool",
        "sum",
        "min",
        "max",
        "avg",
        "count",
        "group",
        "stddev",
        "stdvar",
        "topk",
        "bottomk",
        "quantile",
        "count_values",
    ];
    let mut out = String::new();
    let mut depth = 0;
    for c in expr.chars() {
        match c {
            '{' | '[' => depth += 1,
            '}' | ']' => depth -= 1,
            _ if depth > 0 => {}
            _ => out.push(c),
        }
    }
    let mut names = BTreeSet::new();
    let mut rest = out.as_str();
    while let Some(start) = rest.find(|c: char| c.is_ascii_alphabetic() || c == '_') {
        let tail = &rest[start..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
            .unwrap_or(tail.len());
        let word = &tail[..end];
        let after = tail[end..].trim_start();
        let grouping = matches!(word, "by" | "without" | "on" | "ignoring");
        if grouping {
            // Skip the label list that follows.
            let close = after.find(')').map_or(after.len(), |i| i + 1);
            rest = &after[close..];
            continue;
        }
        let preceded_by_digit = rest[..start].ends_with(|c: char| c.is_ascii_digit() || c == '.');
        if !after.starts_with('(') && !KEYWORDS.contains(&word) && !preceded_by_digit {
            names.insert(word.to_owned());
        }
        rest = &tail[end..];
    }
    names
}

#[test]
fn promql_names_are_found() {
    let n = metric_names(
        "histogram_quantile(0.99, sum by (le, role) (rate(promo_x_bucket{a=\"b\"}[5m])))",
    );
    assert_eq!(n.into_iter().collect::<Vec<_>>(), ["promo_x_bucket"]);
    let n = metric_names("max by (role, port) (promo_in_flight) / on(role) process_open_fds");
    assert_eq!(
        n.into_iter().collect::<Vec<_>>(),
        ["process_open_fds", "promo_in_flight"]
    );
}

/// The names a /metrics page has series for.
fn exported(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| l.split(['{', ' ']).next().unwrap_or_default().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dashboard_query_names_a_metric_promod_exports() {
    let dashboard: Value =
        serde_json::from_str(&read("monitoring/grafana/dashboards/promo.json")).unwrap();
    let panels = dashboard["panels"].as_array().unwrap();
    let titles: Vec<&str> = panels.iter().filter_map(|p| p["title"].as_str()).collect();
    for want in ["CPU", "memory", "file descriptors", "Tokio"] {
        assert!(
            titles.iter().any(|t| t.contains(want)),
            "no {want} panel: {titles:?}"
        );
    }
    let mut wanted = BTreeSet::new();
    for p in panels {
        let targets = p["targets"].as_array().expect("every panel queries");
        assert!(!targets.is_empty(), "{} has no query", p["title"]);
        for t in targets {
            let names = metric_names(t["expr"].as_str().expect("a PromQL expr"));
            assert!(!names.is_empty(), "{}: {}", p["title"], t["expr"]);
            wanted.extend(names);
        }
    }

    // A promod with traffic: an issue, so that the per-outcome counters exist.
    let app = spawn_app().await;
    let policy = app.create_policy(10, 1).await;
    let (_, token) = app.user_token();
    let (s, b) = app
        .post(
            "/coupons/issue",
            &token,
            serde_json::json!({"policy_id": policy}),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    // The outbox gauges are set by the relay once a second.
    let deadline = Instant::now() + Duration::from_secs(15);
    let missing = loop {
        let have = exported(&app.metrics().await);
        let missing: Vec<&String> = wanted.iter().filter(|m| !have.contains(*m)).collect();
        if missing.is_empty() || Instant::now() > deadline {
            break missing.into_iter().cloned().collect::<Vec<_>>();
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert!(
        missing.is_empty(),
        "panels query what /metrics lacks: {missing:?}"
    );
}
