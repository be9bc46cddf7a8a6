//! The OpenAPI file lists exactly the routes the router serves.

mod common;

use std::collections::BTreeSet;

use ingest::api::ROUTES;

/// The (method, path) pairs under `paths:` of the OpenAPI file: paths at
/// two spaces of indentation, methods at four.
fn documented() -> BTreeSet<(String, String)> {
    let text = include_str!("../openapi.yaml");
    let mut out = BTreeSet::new();
    let mut in_paths = false;
    let mut path = None;
    for line in text.lines() {
        if !line.starts_with(' ') {
            in_paths = line.trim_end() == "paths:";
            continue;
        }
        if !in_paths {
            continue;
        }
        if let Some(p) = line.strip_prefix("  /") {
            path = Some(format!("/{}", p.trim_end().trim_end_matches(':')));
        } else if let (Some(m), Some(p)) = (line.strip_prefix("    "), &path) {
            let m = m.trim_end().trim_end_matches(':');
            if ["get", "post", "put", "patch", "delete"].contains(&m) {
                out.insert((m.to_string(), p.clone()));
            }
        }
    }
    out
}

#[test]
fn the_openapi_file_documents_every_route_and_no_other() {
    let routes: BTreeSet<(String, String)> = ROUTES
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    assert_eq!(documented(), routes);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_router_serves_every_listed_route() {
    let t = common::start("openapi").await;
    for (method, path) in ROUTES {
        let concrete = path
            .replace("{message_id}", &uuid::Uuid::nil().to_string())
            .replace("{request_id}", "r1")
            .replace("{phone}", "13012345678");
        let response = t
            .bearer(common::TOKEN, &method.to_uppercase(), &concrete, "{}")
            .await;
        let status = response.status().as_u16();
        let body = response.text().await.unwrap_or_default();
        assert!(
            status != 405 && !body.contains("no such route"),
            "{method} {path} is not served: {status} {body}"
        );
    }
    t.service.stop().await;
}
