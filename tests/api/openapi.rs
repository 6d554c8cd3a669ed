use castwork::http::middleware::PUBLIC_ROUTES;
use serde_json::Value;

use crate::helpers::spawn_app;

/// Every route the router serves, with its methods (OpenAPI path syntax).
const ROUTES: &[(&str, &[&str])] = &[
    ("/health/live", &["get"]),
    ("/health/ready", &["get"]),
    ("/health", &["get"]),
    ("/metrics", &["get"]),
    ("/api/openapi.json", &["get"]),
    ("/api/v1/auth/login", &["post"]),
    ("/api/v1/auth/refresh", &["post"]),
    ("/api/v1/auth/logout", &["post"]),
    ("/api/v1/auth/me", &["get"]),
    ("/api/v1/explore/items", &["get"]),
    ("/api/v1/explore/items/{id}", &["get"]),
    ("/api/v1/explore/categories", &["get"]),
    ("/api/v1/explore/trending", &["get"]),
    ("/api/v1/explore/search", &["get"]),
    ("/api/v1/items", &["post"]),
    ("/api/v1/items/{id}", &["put", "patch", "delete"]),
    ("/api/v1/admin/users", &["post"]),
    ("/api/v1/admin/auth", &["get"]),
    ("/api/v1/admin/users/{username}/revoke-sessions", &["post"]),
    ("/api/v1/admin/actors", &["get"]),
    ("/api/v1/admin/chaos", &["post"]),
];

const METHODS: &[&str] = &["get", "put", "post", "delete", "options", "head", "patch", "trace"];

async fn document() -> Value {
    let app = spawn_app().await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_is_described_with_its_methods() {
    let doc = document().await;
    for (path, methods) in ROUTES {
        let item = doc["paths"][path].as_object().unwrap_or_else(|| panic!("{path} is missing"));
        let described: Vec<&str> = item.keys().map(String::as_str).filter(|m| METHODS.contains(m)).collect();
        let mut expected = methods.to_vec();
        expected.sort_unstable();
        let mut got = described.clone();
        got.sort_unstable();
        assert_eq!(got, expected, "methods of {path}");
    }
    // and nothing that is not served; operation ids are unique (client generators name methods by them)
    let mut ids = std::collections::HashSet::new();
    for (path, method, operation) in operations(&doc) {
        let served = ROUTES.iter().any(|(p, ms)| *p == path && ms.contains(&method.as_str()));
        assert!(served, "{method} {path} is described but not routed");
        let id =
            operation["operationId"].as_str().unwrap_or_else(|| panic!("{method} {path} has no operationId"));
        assert!(ids.insert(id.to_owned()), "operationId {id} is used twice");
        assert!(operation["tags"].as_array().is_some_and(|t| t.len() == 1), "{method} {path} has one tag");
    }
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
            // the health checks answer 503 with their own report, not an error
            if code >= 400 && !path.starts_with("/health") {
                let schema = &response["content"]["application/json"]["schema"]["$ref"];
                assert_eq!(schema, "#/components/schemas/ErrorBody", "{method} {path} {status}");
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn item_id_parameters_say_how_to_encode_a_slash() {
    let doc = document().await;
    for (path, method, operation) in operations(&doc) {
        if !path.contains("{id}") {
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
