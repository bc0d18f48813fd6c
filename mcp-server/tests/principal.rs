//! Sessions bound to the authenticated principal that created them.

mod common;

use axum::middleware;
use common::{ACCEPT_BOTH, Client};
use mcp_server::{HttpConfig, McpServer, demo};
use serde_json::json;

#[tokio::test]
async fn another_principal_gets_the_same_404_as_an_unknown_session_even_for_delete() {
    let server = demo::register(McpServer::builder()).build();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = server
        .router(HttpConfig::default(), addr)
        .layer(middleware::from_fn(common::authenticate));
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    let url = format!("http://{addr}/mcp");

    let http = reqwest::Client::new();
    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "x", "version": "1"}}});
    let response = http
        .post(&url)
        .header("accept", ACCEPT_BOTH)
        .header("content-type", "application/json")
        .header("x-user", "alice")
        .body(init.to_string())
        .send()
        .await
        .unwrap();
    let session = response.headers()["mcp-session-id"]
        .to_str()
        .unwrap()
        .to_string();

    let ping = json!({"jsonrpc": "2.0", "id": 2, "method": "ping"}).to_string();
    let as_user = |user: Option<&'static str>, method: reqwest::Method| {
        let mut req = http
            .request(method, &url)
            .header("accept", ACCEPT_BOTH)
            .header("content-type", "application/json")
            .header("mcp-session-id", &session)
            .body(ping.clone());
        if let Some(user) = user {
            req = req.header("x-user", user);
        }
        req.send()
    };
    assert_eq!(
        as_user(Some("alice"), reqwest::Method::POST)
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        as_user(Some("bob"), reqwest::Method::POST)
            .await
            .unwrap()
            .status(),
        404
    );
    assert_eq!(
        as_user(None, reqwest::Method::POST).await.unwrap().status(),
        404
    );
    assert_eq!(
        as_user(Some("bob"), reqwest::Method::GET)
            .await
            .unwrap()
            .status(),
        404,
        "another principal cannot open the session's stream"
    );
    assert_eq!(
        as_user(Some("bob"), reqwest::Method::DELETE)
            .await
            .unwrap()
            .status(),
        404
    );
    assert_eq!(
        as_user(Some("alice"), reqwest::Method::POST)
            .await
            .unwrap()
            .status(),
        200,
        "bob's DELETE did nothing"
    );
    assert_eq!(
        as_user(Some("alice"), reqwest::Method::DELETE)
            .await
            .unwrap()
            .status(),
        200
    );
    let _ = Client::new(&url);
}
