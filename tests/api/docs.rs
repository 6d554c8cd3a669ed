//! The operator documentation names everything an operator can set or watch: every
//! configuration key of `config/default.toml` and every metric of `src/metrics.rs`
//! appears in `docs/OPERATIONS.md`.

use std::path::Path;

fn read(relative: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// Every leaf key of a TOML table as its dotted path (`server.port`,
/// `cache.redis.breaker.open_ms`), nested tables included.
fn dotted_keys(table: &toml::Table, prefix: &str, out: &mut Vec<String>) {
    for (key, value) in table {
        let path = if prefix.is_empty() { key.clone() } else { format!("{prefix}.{key}") };
        match value {
            toml::Value::Table(nested) => dotted_keys(nested, &path, out),
            _ => out.push(path),
        }
    }
}

/// The `castwork_*` names `src/metrics.rs` defines as string constants.
fn metric_names(source: &str) -> Vec<String> {
    let constant = regex::Regex::new(r#"pub const [A-Z0-9_]+: &str = "(castwork_[a-z0-9_]+)";"#).unwrap();
    constant.captures_iter(source).map(|c| c[1].to_owned()).collect()
}

/// Whether `doc` names `name` as code: `` `name` ``, or `` `name{…}` `` for a metric
/// shown with its labels.
fn documented(doc: &str, name: &str) -> bool {
    doc.contains(&format!("`{name}`")) || doc.contains(&format!("`{name}{{"))
}

#[test]
fn every_configuration_key_is_documented() {
    let defaults: toml::Table = read("config/default.toml").parse().unwrap();
    let doc = read("docs/OPERATIONS.md");
    let mut keys = Vec::new();
    dotted_keys(&defaults, "", &mut keys);
    assert!(keys.len() > 50, "config/default.toml was not read: {keys:?}");
    assert!(keys.iter().any(|k| k == "cache.redis.breaker.open_ms"), "nested tables are walked");
    let missing: Vec<&String> = keys.iter().filter(|key| !documented(&doc, key)).collect();
    assert!(missing.is_empty(), "configuration keys missing from docs/OPERATIONS.md: {missing:?}");
}

#[test]
fn every_metric_is_documented() {
    let names = metric_names(&read("src/metrics.rs"));
    let doc = read("docs/OPERATIONS.md");
    assert!(names.len() > 30, "src/metrics.rs was not read: {names:?}");
    let missing: Vec<&String> = names.iter().filter(|name| !documented(&doc, name)).collect();
    assert!(missing.is_empty(), "metrics missing from docs/OPERATIONS.md: {missing:?}");
}

#[test]
fn the_checks_see_what_is_missing() {
    let doc = "| `server.port` | … | `castwork_http_requests_total{route}` |";
    assert!(documented(doc, "server.port"));
    assert!(documented(doc, "castwork_http_requests_total"));
    assert!(!documented(doc, "server.host"));
    // a name that is only a prefix of a documented one is not documented
    assert!(!documented(doc, "castwork_http_requests"));
    let source = "pub const A_TOTAL: &str = \"castwork_a_total\";\nconst B: &str = \"castwork_b\";";
    assert_eq!(metric_names(source), ["castwork_a_total"]);
}
