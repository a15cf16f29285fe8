//! The OpenAPI document (`openapi.json`, served at `GET /v1/openapi.json`) cannot drift from the
//! router: every route `mod.rs` registers and every admin act's path is in it, and every path
//! in it, asked with its method, reaches a route of the router (never the 404 fallback, never
//! 405 for the method it names).

use crate::api::{router, AppState};
use crate::config::Config;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use casenote_protocol::ErrorBody;
use http_body_util::BodyExt;
use std::collections::BTreeSet;
use tower::ServiceExt;

fn served() -> (tempfile::TempDir, AppState) {
    let dir = tempfile::tempdir().unwrap();
    let store = crate::store::sled::open(dir.path()).unwrap();
    (dir, AppState::new(store, Config::default()))
}

async fn ask(state: &AppState, method: Method, path: &str) -> (StatusCode, Vec<u8>) {
    let resp = router(state.clone())
        .oneshot(
            Request::builder()
                .method(method)
                .uri(path)
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    let status = resp.status();
    (
        status,
        resp.into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec(),
    )
}

async fn document(state: &AppState) -> serde_json::Value {
    let (status, body) = ask(state, Method::GET, "/v1/openapi.json").await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    serde_json::from_slice(&body).expect("the document is JSON")
}

/// The paths of the `.route("...")` calls in `mod.rs`, and the admin acts' paths.
fn registered() -> BTreeSet<String> {
    let source = include_str!("mod.rs");
    let mut paths: BTreeSet<String> = source
        .split(".route(")
        .skip(1)
        .filter_map(|rest| rest.split('"').nth(1))
        .map(str::to_string)
        .collect();
    for (_, path) in crate::admin::act::PATHS {
        paths.insert(format!("/v1/admin/{path}"));
    }
    paths
}

#[tokio::test]
async fn every_registered_route_is_in_the_openapi_document() {
    let (_dir, state) = served();
    let doc = document(&state).await;
    assert_eq!(doc["openapi"], "3.1.0");
    let documented: BTreeSet<String> = doc["paths"].as_object().unwrap().keys().cloned().collect();
    let routes = registered();
    assert!(routes.len() > 25, "the route list was not read: {routes:?}");
    let missing: Vec<_> = routes.difference(&documented).collect();
    assert!(
        missing.is_empty(),
        "routes missing from openapi.json: {missing:?}"
    );
}

#[tokio::test]
async fn every_path_in_the_openapi_document_is_a_route_of_the_router() {
    let (_dir, state) = served();
    let doc = document(&state).await;
    let random = uuid::Uuid::new_v4().to_string();
    for (path, ops) in doc["paths"].as_object().unwrap() {
        let concrete = path
            .replace("{doc_id}", &random)
            .replace("{device_id}", &random)
            .replace("{file}", "index.html");
        assert!(!concrete.contains('{'), "a path parameter left in {path}");
        for method in ops.as_object().unwrap().keys() {
            let method: Method = method.to_uppercase().parse().unwrap();
            let (status, body) = ask(&state, method.clone(), &concrete).await;
            assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
            if status == StatusCode::NOT_FOUND {
                let e: ErrorBody = serde_json::from_slice(&body).unwrap();
                assert_ne!(e.message, "no such endpoint", "{method} {path} is no route");
            }
        }
        // And a method it does not name is refused by the route (405), not the fallback.
        let (status, _) = ask(&state, Method::DELETE, &concrete).await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "DELETE {path}");
    }
}
