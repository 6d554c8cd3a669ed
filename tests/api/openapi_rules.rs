//! The OpenAPI document states the input rules the server enforces: every
//! `pattern`, `minLength` and `maxLength` on an item field agrees with
//! `explore::validate` on generated strings, and the login, cursor and
//! `If-Match` constraints match what the handlers accept. (`scripts/fuzz-api.sh`
//! checks the same against a running node, over the whole API.)

use castwork::explore::cursor::{CursorCodec, Position};
use castwork::explore::model::{ItemInput, Sort};
use castwork::explore::validate::validate_input;
use proptest::prelude::*;
use serde_json::Value;

fn document() -> Value {
    serde_json::to_value(castwork::http::openapi::document()).unwrap()
}

/// What the document says a string must be: `(pattern, minLength, maxLength)`.
fn string_rules(schema: &Value) -> (regex::Regex, usize, usize) {
    let pattern = schema["pattern"].as_str().unwrap_or("");
    let min = schema["minLength"].as_u64().unwrap_or(0) as usize;
    let max = schema["maxLength"].as_u64().unwrap_or(u64::MAX) as usize;
    (regex::Regex::new(pattern).unwrap(), min, max)
}

fn allowed(rules: &(regex::Regex, usize, usize), value: &str) -> bool {
    let chars = value.chars().count();
    rules.0.is_match(value) && (rules.1..=rules.2).contains(&chars)
}

fn item() -> ItemInput {
    serde_json::from_value(serde_json::json!({
        "title": "A title", "body": "", "category": "Computer Vision", "category_code": "cs.CV",
        "group": "Computer Science", "published_at": "2025-06-01T00:00:00Z",
    }))
    .unwrap()
}

fn set(input: &mut ItemInput, field: &str, value: &str) {
    match field {
        "id" => input.id = Some(value.to_owned()),
        "title" => input.title = value.to_owned(),
        "body" => input.body = value.to_owned(),
        "category" => input.category = value.to_owned(),
        "category_code" => input.category_code = value.to_owned(),
        "group" => input.group = value.to_owned(),
        "source_url" => input.source_url = Some(value.to_owned()),
        "tags" => input.tags = vec![value.to_owned()],
        other => panic!("no field {other}"),
    }
}

/// Pieces that land on both sides of every rule: white space the two regex
/// dialects disagree on, the reserved characters, URL prefixes, code characters.
fn text() -> impl Strategy<Value = String> {
    let pieces = prop::sample::select(vec![
        "", " ", "\t", "\n", "\u{85}", "\u{a0}", "\u{1c}", "\u{200b}", "\u{3000}", "\u{feff}", "\u{e000}",
        "\u{e001}", "a", "Z", "0", "9", ".", "-", "_", "/", ":", "é", "😀", "https://", "http://", "cs.CV",
    ]);
    prop::collection::vec(pieces, 0..8).prop_map(|parts| parts.concat())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn item_field_rules_in_the_document_match_validation(value in text()) {
        let doc = document();
        let properties = &doc["components"]["schemas"]["ItemInput"]["properties"];
        for field in ["id", "title", "body", "category", "category_code", "group", "source_url", "tags"] {
            let schema = if field == "tags" { &properties[field]["items"] } else { &properties[field] };
            let rules = string_rules(schema);
            let mut input = item();
            set(&mut input, field, &value);
            let accepted = match validate_input(&input) {
                Ok(()) => true,
                Err(errors) => !errors.contains_key(field),
            };
            prop_assert_eq!(accepted, allowed(&rules, &value), "{} = {:?}", field, value);
        }
    }
}

#[test]
fn login_fields_must_not_be_empty() {
    let doc = document();
    let login = &doc["components"]["schemas"]["LoginRequest"]["properties"];
    assert_eq!(login["username"]["minLength"], 1, "{login}");
    assert_eq!(login["password"]["minLength"], 1, "{login}");
}

fn parameter<'a>(doc: &'a Value, path: &str, method: &str, name: &str) -> &'a Value {
    doc["paths"][path][method]["parameters"]
        .as_array()
        .and_then(|params| params.iter().find(|p| p["name"] == name))
        .unwrap_or_else(|| panic!("{method} {path} has no parameter {name}"))
}

#[test]
fn the_cursor_shape_is_stated_and_real_cursors_fit_it() {
    let doc = document();
    let token = CursorCodec::new(b"any key").encode(&Position {
        sort: Sort::New,
        filter: 7,
        published_at: None,
        trend: None,
        score: None,
        id: "cond-mat/9909265".into(),
    });
    for path in ["/api/v1/explore/items", "/api/v1/explore/search"] {
        let rules = string_rules(&parameter(&doc, path, "get", "cursor")["schema"]);
        assert!(allowed(&rules, &token), "{path}: {token}");
        assert!(!allowed(&rules, ""), "{path}: an empty cursor is refused");
    }
}

#[test]
fn if_match_states_the_etag_format_the_handlers_parse() {
    let doc = document();
    for method in ["put", "patch", "delete"] {
        let param = parameter(&doc, "/api/v1/items/{id}", method, "If-Match");
        assert_eq!(param["required"], method != "delete", "{method}: {param}");
        assert_eq!(param["schema"]["type"], "string", "{method}: not nullable: {param}");
        let rules = string_rules(&param["schema"]);
        for good in ["*", "\"3\"", "W/\"3\"", "3"] {
            assert!(allowed(&rules, good), "{method}: {good}");
        }
        for bad in ["", "null", "\"abc\"", "W/", "\"3\", \"4\""] {
            assert!(!allowed(&rules, bad), "{method}: {bad}");
        }
    }
    for method in ["put", "patch"] {
        let responses = &doc["paths"]["/api/v1/items/{id}"][method]["responses"];
        assert!(responses.get("428").is_some(), "{method} documents 428");
    }
}
