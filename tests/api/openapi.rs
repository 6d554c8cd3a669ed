use std::collections::BTreeSet;
use std::path::Path;

use castwork::http::middleware::PUBLIC_ROUTES;
use castwork::startup::Application;
use reqwest::Method;
use serde_json::Value;

use crate::helpers::{TestApp, spawn_app, test_settings};

const METHODS: &[&str] = &["get", "put", "post", "delete", "options", "head", "patch", "trace"];

async fn document() -> Value {
    get_document(&spawn_app().await).await
}

async fn get_document(app: &TestApp) -> Value {
    let (status, doc) = app.get_json("/api/openapi.json", None).await;
    assert_eq!(status, 200, "the document is public: {doc}");
    doc
}

fn operations(doc: &Value) -> Vec<(String, String, &Value)> {
    let paths = doc["paths"].as_object().expect("paths");
    let mut out = Vec::new();
    for (path, item) in paths {
        for (method, operation) in item.as_object().expect("path item") {
            if METHODS.contains(&method.as_str()) {
                out.push((path.clone(), method.clone(), operation));
            }
        }
    }
    out
}

/// Follows a `{"$ref": "#/..."}` to what it names (one level).
fn resolve<'a>(doc: &'a Value, value: &'a Value) -> &'a Value {
    match value.get("$ref").and_then(Value::as_str) {
        Some(reference) => {
            let pointer = reference.strip_prefix('#').unwrap_or_else(|| panic!("external $ref {reference}"));
            doc.pointer(pointer).unwrap_or_else(|| panic!("dangling $ref {reference}"))
        }
        None => value,
    }
}

fn collect_refs<'a>(value: &'a Value, at: String, out: &mut Vec<(String, &'a str)>) {
    match value {
        Value::Object(map) => {
            for (key, child) in map {
                if key == "$ref"
                    && let Some(target) = child.as_str()
                {
                    out.push((at.clone(), target));
                } else {
                    collect_refs(child, format!("{at}/{key}"), out);
                }
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                collect_refs(child, format!("{at}/{i}"), out);
            }
        }
        _ => {}
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn document_is_public_and_openapi_3_1() {
    let doc = document().await;
    let version = doc["openapi"].as_str().expect("openapi version");
    assert!(version.starts_with("3.1"), "{version}");
    assert_eq!(doc["info"]["title"], "castwork");
    assert_eq!(doc["info"]["version"], env!("CARGO_PKG_VERSION"));
    let bearer = &doc["components"]["securitySchemes"]["bearer"];
    assert_eq!(
        (&bearer["type"], &bearer["scheme"]),
        (&Value::from("http"), &Value::from("bearer")),
        "{bearer}"
    );
}

/// The path templates a router serves, from its `Debug` output: axum offers no
/// way to list a router's routes, but that output names each one in the route
/// table (`RouteId(3): "/health"`). Only the main table is read, not the
/// fallback's. Callers check that known paths are found, so a change in that
/// output fails the test instead of emptying the list.
fn served_paths(router: &axum::Router) -> BTreeSet<String> {
    let debug = format!("{router:?}");
    let routes = debug.split("fallback_router").next().unwrap_or_default();
    let route = regex::Regex::new(r#"RouteId\(\d+\): "([^"]*)""#).unwrap();
    route.captures_iter(routes).map(|c| c[1].to_owned()).collect()
}

/// The router a node serves, built as the server builds it (not started).
async fn live_router() -> axum::Router {
    let dir = std::env::temp_dir().join(format!("castwork-test-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.join("castwork.db").display());
    let node = Application::build(test_settings(&dir, &url)).await.expect("node builds");
    let router = node.router();
    drop(node);
    let _ = std::fs::remove_dir_all(&dir);
    router
}

/// Every path the live router serves is in the document and every documented
/// path is served: routes are declared once (`castwork::http::api`, with
/// `utoipa_axum::routes!`), and this fails when a route is added around that,
/// e.g. with a plain `.route(...)` in `http::router`. The router is read from
/// its route table (see [`served_paths`]), so a path nobody documented is
/// found without guessing it. Methods are checked by
/// [`every_documented_method_is_served_and_no_other`].
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_router_serves_exactly_the_documented_paths() {
    let mut served = served_paths(&live_router().await);
    // benchmark-only routes (cargo feature `bench-routes`) are served but deliberately undocumented
    if cfg!(feature = "bench-routes") {
        served.retain(|path| !path.starts_with("/bench/"));
    }
    for known in ["/health/live", "/api/v1/items/{id}", "/api/v1/admin/cache/warm"] {
        assert!(served.contains(known), "{known} not found in the router's route table: {served:?}");
    }
    let doc = document().await;
    let documented: BTreeSet<String> = doc["paths"].as_object().expect("paths").keys().cloned().collect();
    assert_eq!(
        served.difference(&documented).collect::<Vec<_>>(),
        Vec::<&String>::new(),
        "served but not in the document"
    );
    assert_eq!(
        documented.difference(&served).collect::<Vec<_>>(),
        Vec::<&String>::new(),
        "in the document but not served"
    );
}

/// On every documented path (the same as the served ones, by the test above),
/// each method is sent to the live node with an admin token and no body: a
/// documented method must reach its route (anything but 405; `HEAD` counts as
/// documented where `GET` is, as axum serves it), any other method must be
/// refused by the route with 405 `method_not_allowed`. So a method added to a
/// route outside the document, or documented but not routed, fails. Bodiless
/// requests stop at the body check (415) on the routes that take one, so
/// nothing is created or deleted; `CONNECT` is left out (OpenAPI has no such
/// operation and axum routes it only when asked to).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_method_is_served_and_no_other() {
    let app = spawn_app().await;
    let token = app.admin_token().await;
    let doc = get_document(&app).await;
    let placeholder = regex::Regex::new(r"\{[^}]+\}").unwrap();
    let paths = doc["paths"].as_object().expect("paths");
    assert!(paths.len() > 20, "{paths:?}");
    for (path, item) in paths {
        let concrete = placeholder.replace_all(path, "probe");
        for method in METHODS {
            let documented = item.get(*method).is_some() || (*method == "head" && item.get("get").is_some());
            let verb = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let response =
                app.client.request(verb, app.url(&concrete)).bearer_auth(&token).send().await.unwrap();
            let status = response.status().as_u16();
            let body: Value = response.json().await.unwrap_or(Value::Null);
            if documented {
                assert_ne!(status, 405, "{method} {path} is documented but not routed: {body}");
            } else {
                assert_eq!(status, 405, "{method} {path} is routed but not documented: {body}");
                if *method != "head" {
                    assert_eq!(body["error"]["code"], "method_not_allowed", "{method} {path}: {body}");
                }
            }
        }
    }
}

/// Operation ids are unique (client generators name methods by them) and
/// stable: the ids the fuzzing setup names exist.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operation_ids_are_unique_and_those_the_fuzzer_names_exist() {
    let doc = document().await;
    let mut ids = BTreeSet::new();
    for (path, method, operation) in operations(&doc) {
        let id =
            operation["operationId"].as_str().unwrap_or_else(|| panic!("{method} {path} has no operationId"));
        assert!(ids.insert(id.to_owned()), "operationId {id} is used twice");
        assert!(operation["tags"].as_array().is_some_and(|t| t.len() == 1), "{method} {path} has one tag");
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts");
    let config = std::fs::read_to_string(root.join("schemathesis.toml")).unwrap();
    let script = std::fs::read_to_string(root.join("fuzz-api.sh")).unwrap();
    let quoted = regex::Regex::new(r#""([A-Za-z]+)""#).unwrap();
    let mut named: Vec<String> = config
        .lines()
        .filter(|line| line.starts_with("include-operation-id"))
        .flat_map(|line| quoted.captures_iter(line).map(|c| c[1].to_owned()).collect::<Vec<_>>())
        .collect();
    let flag = regex::Regex::new(r"-operation-id ([A-Za-z]+)").unwrap();
    named.extend(flag.captures_iter(&script).map(|c| c[1].to_owned()));
    assert!(named.len() >= 6, "{named:?}");
    for id in &named {
        assert!(ids.contains(id), "the fuzzing setup names operationId {id}, which the document lacks");
    }
    for id in ["cacheReport", "cacheFlush", "cacheWarm"] {
        assert!(ids.contains(id), "{id}");
    }
}

/// The message of a 400 `invalid_query` for `GET path?query`.
async fn refused(app: &TestApp, token: &str, path: &str, query: &str) -> String {
    let (status, body) = app.get_json(&format!("{path}?{query}"), Some(token)).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("invalid_query")),
        "{path}?{query}: {body}"
    );
    body["error"]["message"].as_str().unwrap().to_owned()
}

/// The query parameters an operation documents are the ones it accepts: an
/// undocumented one is refused, and so is a documented one given twice unless
/// it is an array (`tag`), each with 400 `invalid_query` naming the parameter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_parameters_are_the_documented_ones() {
    let app = spawn_app().await;
    let token = app.admin_token().await;
    let doc = get_document(&app).await;
    let mut checked = 0;
    for (path, method, operation) in operations(&doc) {
        let Some(params) = operation["parameters"].as_array() else { continue };
        let query: Vec<&Value> = params.iter().filter(|p| p["in"] == "query").collect();
        if method != "get" || path.contains('{') || query.is_empty() {
            continue;
        }
        let message = refused(&app, &token, &path, "zz_undocumented=1").await;
        assert!(message.contains("'zz_undocumented'"), "{path}: {message}");
        for param in query {
            let name = param["name"].as_str().unwrap();
            if param["schema"]["type"] == "array" {
                let value = param["example"][0].as_str().expect("an example value");
                let twice = format!("{name}={value}&{name}={value}");
                let (status, body) = app.get_json(&format!("{path}?{twice}"), Some(&token)).await;
                assert_eq!(status, 200, "{path}?{twice}: {body}");
            } else {
                let twice = format!("{name}=1&{name}=1");
                let message = refused(&app, &token, &path, &twice).await;
                assert!(message.contains(&format!("'{name}' may be given once")), "{path}: {message}");
            }
            checked += 1;
        }
    }
    assert!(checked >= 10, "{checked} parameters checked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_public_operations_need_the_bearer_token() {
    let doc = document().await;
    let schemes = doc["components"]["securitySchemes"].as_object().expect("security schemes");
    for (path, method, operation) in operations(&doc) {
        let security = operation.get("security").and_then(Value::as_array);
        if PUBLIC_ROUTES.contains(&path.as_str()) {
            assert!(
                security.is_none_or(Vec::is_empty),
                "{method} {path} is public but declares {security:?}"
            );
            continue;
        }
        let security = security.unwrap_or_else(|| panic!("{method} {path} has no security requirement"));
        assert!(!security.is_empty(), "{method} {path} has an empty security list");
        for requirement in security {
            let requirement = requirement.as_object().expect("requirement object");
            assert!(!requirement.is_empty(), "{method} {path}: an empty requirement means anonymous access");
            for name in requirement.keys() {
                assert!(schemes.contains_key(name), "{method} {path} names undefined scheme {name}");
            }
        }
        let unauthorized = operation["responses"].get("401");
        assert!(unauthorized.is_some(), "{method} {path} does not document 401");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_ref_resolves_and_errors_use_error_body() {
    let doc = document().await;
    let mut refs = Vec::new();
    collect_refs(&doc, String::new(), &mut refs);
    assert!(!refs.is_empty());
    for (at, target) in &refs {
        let pointer = target.strip_prefix('#').unwrap_or_else(|| panic!("{at}: external $ref {target}"));
        assert!(pointer.starts_with("/components/"), "{at}: $ref {target} is not a component");
        assert!(doc.pointer(pointer).is_some(), "{at}: $ref {target} does not resolve");
    }

    for (path, method, operation) in operations(&doc) {
        let responses = operation["responses"].as_object().expect("responses");
        assert!(!responses.is_empty(), "{method} {path} has no responses");
        for (status, response) in responses {
            let code: u16 = status.parse().unwrap_or_else(|_| panic!("{method} {path}: status {status}"));
            let response = resolve(&doc, response);
            assert!(
                response["description"].as_str().is_some_and(|d| !d.is_empty()),
                "{method} {path} {status}"
            );
            // the health checks answer 503 with their own report, not an error; the
            // OpenAI-compatible routes answer errors in OpenAI's shape
            if code >= 400 && !path.starts_with("/health") {
                let schema = &response["content"]["application/json"]["schema"]["$ref"];
                // (a 401 comes from the authentication layer, in castwork's shape, on every route)
                let expected =
                    if path.starts_with("/v1/") && code != 401 { "V1ErrorBody" } else { "ErrorBody" };
                assert_eq!(schema, &format!("#/components/schemas/{expected}"), "{method} {path} {status}");
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn item_id_parameters_say_how_to_encode_a_slash() {
    let doc = document().await;
    for (path, method, operation) in operations(&doc) {
        // item ids may hold a `/`; job ids are UUIDs
        if !path.contains("/items/{id}") {
            continue;
        }
        let params = operation["parameters"].as_array().expect("parameters");
        let id = params.iter().find(|p| p["name"] == "id" && p["in"] == "path").expect("id parameter");
        assert_eq!(id["required"], true, "{method} {path}");
        assert!(id["description"].as_str().is_some_and(|d| d.contains("%2F")), "{method} {path}");
    }
    let list = doc["paths"]["/api/v1/explore/items"]["get"]["parameters"].as_array().expect("parameters");
    let names: Vec<&str> = list.iter().filter_map(|p| p["name"].as_str()).collect();
    assert_eq!(names, ["category", "tag", "group", "q", "from", "to", "sort", "limit", "cursor"]);
    let tag = list.iter().find(|p| p["name"] == "tag").expect("tag");
    assert_eq!(tag["explode"], true, "tag is repeatable: {tag}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_patch_body_says_which_fields_may_be_null() {
    let doc = document().await;
    let schema = &doc["components"]["schemas"]["ItemPatch"];
    assert!(schema.get("required").is_none(), "every field may be left out: {schema}");
    let properties = schema["properties"].as_object().expect("properties");
    let may_be_null = |field: &str| {
        let types = &properties[field]["type"];
        types.as_array().is_some_and(|t| t.iter().any(|t| t == "null"))
    };
    for field in ["body", "tags", "source_url"] {
        assert!(may_be_null(field), "{field} may be null (cleared): {schema}");
    }
    for field in ["title", "category", "category_code", "group", "published_at"] {
        assert!(!may_be_null(field), "{field} may not be null: {schema}");
        assert!(properties[field]["type"] == "string", "{field}: {schema}");
    }
    assert_eq!(properties["published_at"]["format"], "date-time");
    assert_eq!(properties.len(), 8, "{schema}");
}
