//! The topic list is written once (`promo-store/topics.txt`); these tests
//! fail when a reader of it drifts: the events doc, or services.sh.

use promo_store::topics;
use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap()
}

fn is_topic(s: &str) -> bool {
    let Some((role, name)) = s.split_once('.') else {
        return false;
    };
    ["coupon", "point", "order", "timesale"].contains(&role)
        && !name.is_empty()
        && name.chars().all(|c| c.is_ascii_lowercase() || c == '_')
}

/// Topic names in backticks under the doc's `## Topics` heading.
fn documented(doc: &str) -> BTreeSet<String> {
    let doc = format!("\n{doc}");
    let section = doc
        .split("\n## ")
        .find(|s| s.starts_with("Topics\n"))
        .expect("docs/events.md has a \"## Topics\" section");
    section
        .split('`')
        .skip(1)
        .step_by(2)
        .filter(|s| is_topic(s))
        .map(str::to_owned)
        .collect()
}

#[test]
fn events_doc_documents_exactly_the_listed_topics() {
    let doc = std::fs::read_to_string(repo().join("docs/events.md")).unwrap();
    let doc = documented(&doc);
    let listed: BTreeSet<String> = topics::ALL.iter().map(|t| t.to_string()).collect();
    let undocumented: Vec<_> = listed.difference(&doc).collect();
    let unlisted: Vec<_> = doc.difference(&listed).collect();
    assert!(
        undocumented.is_empty() && unlisted.is_empty(),
        "docs/events.md misses {undocumented:?} and documents {unlisted:?}, \
         which promo-store/topics.txt does not list"
    );
}

#[test]
fn only_topics_in_backticks_under_the_heading_count() {
    let doc =
        "## Topics\n\n**`coupon.issued`**: `aggregate_id`, `data.x`\n\n## Other\n`point.used`\n";
    assert_eq!(
        documented(doc),
        BTreeSet::from(["coupon.issued".to_owned()])
    );
}

fn services_topics(file: Option<&Path>) -> Vec<String> {
    let mut cmd = Command::new("bash");
    cmd.arg(repo().join("scripts/services.sh")).arg("topics");
    match file {
        Some(f) => cmd.env("PROMO_TOPICS_FILE", f),
        None => cmd.env_remove("PROMO_TOPICS_FILE"),
    };
    let out = cmd.output().expect("bash runs scripts/services.sh");
    assert!(
        out.status.success(),
        "services.sh topics: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

#[test]
fn services_sh_creates_the_listed_topics() {
    assert_eq!(services_topics(None), topics::ALL);
}

#[test]
fn services_sh_reads_the_file_rather_than_a_list_of_its_own() {
    // A list of its own would still print the real topics for another file.
    let dir = std::env::temp_dir().join(format!("promo-topics-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("topics.txt");
    std::fs::write(&file, "coupon.only_in_this_file\npoint.and_this\n").unwrap();
    let got = services_topics(Some(&file));
    std::fs::remove_dir_all(&dir).ok();
    assert_eq!(got, ["coupon.only_in_this_file", "point.and_this"]);
}
