//! The official `openai` Python client (installed by `scripts/test-python.sh`,
//! which `make test` runs) against a node: chat, streaming chat, embeddings, the
//! model list and an error, through the SDK's own parsing.

use std::path::Path;

use serde_json::Value;

use crate::helpers::spawn_inference_app;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openai_python_client_works_against_castwork() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let venv = std::env::var("CASTWORK_TEST_VENV").map_or_else(|_| root.join(".venv-test"), Into::into);
    let python = venv.join("bin/python");
    assert!(python.is_file(), "{} is missing: run scripts/test-python.sh (make test does)", python.display());
    let app = spawn_inference_app(|_| {}).await;
    let token = app.user_token("sdk-user", "viewer").await;
    let mut command = std::process::Command::new(&python);
    command
        .arg(root.join("tests/python/openai_client.py"))
        .arg(app.url("/v1"))
        .arg(&token)
        .arg(super::CHAT)
        .arg(super::EMBED);
    let output = tokio::task::spawn_blocking(move || command.output()).await.unwrap().expect("python runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "the client failed: {stderr}");
    let report: Value = serde_json::from_slice(&output.stdout).expect("one JSON report");
    let models: Vec<&str> = report["models"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
    assert!(models.contains(&super::CHAT) && models.contains(&super::EMBED), "{report}");
    assert!(report["text"].as_str().unwrap().contains("Paris"), "{report}");
    assert!(report["streamed"].as_str().unwrap().contains("Paris"), "{report}");
    assert!(matches!(report["stream_finish"].as_str(), Some("stop" | "length")), "{report}");
    assert!(report["stream_usage"].as_u64().unwrap() > 0, "{report}");
    assert!(report["total_tokens"].as_u64().unwrap() > 0, "{report}");
    assert_eq!(report["dimensions"], 384);
    assert!((report["cosine"].as_f64().unwrap() - 0.755).abs() <= 0.01, "{report}");
    assert_eq!(report["missing_model"], "model_not_found", "{report}");
}
