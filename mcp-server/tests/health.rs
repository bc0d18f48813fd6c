//! The probes beside the MCP endpoint: `/healthz` (alive while serving
//! HTTP) and `/readyz` (the stores accept writes), on a real server on a
//! loopback port over real HTTP, with a real `redis-server` that the test
//! kills and restarts.

mod common;
#[path = "common/stores.rs"]
mod stores;

use std::time::{Duration, Instant};

use common::{Client, TestServer};
use mcp_server::{HttpConfig, McpServer, demo};
use serde_json::{Value, json};
use session_store::testkit::redis::RedisServer;
use stores::{on_redis, redis_calls};

/// A GET of `path` on `server`: the status and the JSON body (`Null` if
/// none).
async fn probe(server: &TestServer, path: &str, origin: Option<&str>) -> (u16, Value) {
    let mut request = reqwest::Client::new().get(format!("http://{}{path}", server.addr));
    if let Some(origin) = origin {
        request = request.header("origin", origin);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    if status == 200 || status == 503 {
        assert_eq!(common::content_type(&response), "application/json");
        assert_eq!(
            response.headers()["cache-control"],
            "no-store",
            "a probe's answer is never cached"
        );
    }
    let text = response.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// Polls `path` until it answers `status` (up to 15 s: the verdict is kept
/// a second, and Redis takes a moment to come back).
async fn until(server: &TestServer, path: &str, status: u16) -> Value {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (got, body) = probe(server, path, None).await;
        if got == status {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "{path} still answers {got} {body}, not {status}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn on(redis: &RedisServer, http: HttpConfig) -> TestServer {
    let server = on_redis(demo::register(McpServer::builder()), redis, None).build();
    TestServer::serve(server, http).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_follows_the_store_while_alive_stays_200() {
    let mut redis = RedisServer::start();
    let server = on(&redis, HttpConfig::default()).await;
    assert_eq!(
        probe(&server, "/healthz", None).await,
        (200, json!({"status": "ok"}))
    );
    assert_eq!(
        probe(&server, "/readyz", None).await,
        (200, json!({"status": "ready"}))
    );
    // Probes need no session and no MCP headers, and do not count as one.
    assert_eq!(server.server.sessions().count().await.unwrap(), 0);

    redis.kill();
    let body = until(&server, "/readyz", 503).await;
    assert_eq!(body["status"], "unavailable", "{body}");
    let reason = body["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("store"),
        "the reason names the store: {body}"
    );
    assert_eq!(
        probe(&server, "/healthz", None).await,
        (200, json!({"status": "ok"})),
        "alive while the store is down"
    );

    redis.restart();
    assert_eq!(
        until(&server, "/readyz", 200).await,
        json!({"status": "ready"})
    );
    let mut client = Client::new(&server.url);
    client.connect().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_readiness_probes_shares_one_verdict() {
    let redis = RedisServer::start();
    let server = on(&redis, HttpConfig::default()).await;
    let pings = redis_calls(redis.port(), "ping");
    let started = Instant::now();
    let probes: Vec<_> = (0..100)
        .map(|_| {
            let url = format!("http://{}/readyz", server.addr);
            tokio::spawn(async move { reqwest::get(url).await.unwrap().status().as_u16() })
        })
        .collect();
    for probe in probes {
        assert_eq!(probe.await.unwrap(), 200);
    }
    let took = started.elapsed();
    assert!(took < Duration::from_secs(10), "{took:?}");
    // The three stores are probed once per verdict, a verdict lasts a
    // second: a few probes of Redis, not 100 of each.
    let verdicts = took.as_secs() + 2;
    let probed = redis_calls(redis.port(), "ping") - pings;
    assert!(
        (1..=3 * verdicts).contains(&probed),
        "{probed} PINGs for 100 probes in {took:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_pass_the_origin_and_host_checks() {
    let redis = RedisServer::start();
    let server = on(&redis, HttpConfig::default()).await;
    for path in ["/healthz", "/readyz"] {
        let (status, body) = probe(&server, path, Some("https://evil.example")).await;
        assert_eq!(status, 403, "{path}: {body}");
        let (status, _) = probe(&server, path, Some("http://localhost:3000")).await;
        assert_eq!(status, 200, "{path}: a loopback origin is allowed");
        // A name that is not loopback, on a loopback listener: DNS rebinding.
        let response = reqwest::Client::new()
            .get(format!("http://{}{path}", server.addr))
            .header("host", "attacker.example")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 403, "{path}");
    }
    // Only GET (and HEAD) are probes.
    let posted = reqwest::Client::new()
        .post(format!("http://{}/healthz", server.addr))
        .send()
        .await
        .unwrap();
    assert_eq!(posted.status(), 405);
    assert_eq!(posted.headers()["allow"], "GET, HEAD");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_paths_are_configurable_or_off() {
    let redis = RedisServer::start();
    let mut http = HttpConfig::default();
    http.health_path = Some("/live".into());
    http.ready_path = Some("/ops/ready".into());
    let server = on(&redis, http).await;
    assert_eq!(probe(&server, "/live", None).await.0, 200);
    assert_eq!(probe(&server, "/ops/ready", None).await.0, 200);
    assert_eq!(probe(&server, "/healthz", None).await.0, 404);
    assert_eq!(probe(&server, "/readyz", None).await.0, 404);

    let mut off = HttpConfig::default();
    off.health_path = None;
    off.ready_path = None;
    let server = on(&redis, off).await;
    assert_eq!(probe(&server, "/healthz", None).await.0, 404);
    assert_eq!(probe(&server, "/readyz", None).await.0, 404);
    // The MCP endpoint is unaffected.
    let mut client = Client::new(&server.url);
    client.connect().await;

    // A probe on the endpoint's path is refused at start.
    let mut clash = HttpConfig::default();
    clash.ready_path = Some(clash.path.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let refused = on_redis(demo::register(McpServer::builder()), &redis, None)
        .build()
        .serve_http(listener, clash, async {})
        .await;
    assert!(
        matches!(refused, Err(mcp_server::Error::Config(_))),
        "{refused:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_router_serves_the_probes_too() {
    let redis = RedisServer::start();
    let server = on_redis(demo::register(McpServer::builder()), &redis, None).build();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = server.router(HttpConfig::default(), addr);
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    for (path, body) in [
        ("/healthz", json!({"status": "ok"})),
        ("/readyz", json!({"status": "ready"})),
    ] {
        let response = reqwest::get(format!("http://{addr}{path}")).await.unwrap();
        assert_eq!(response.status(), 200, "{path}");
        assert_eq!(response.json::<Value>().await.unwrap(), body);
    }
    assert_eq!(server.readiness().await, Ok(()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_takes_its_probe_paths_from_the_command_line() {
    let base = |process: &common::Process| process.url.trim_end_matches("/mcp").to_string();
    let status = async |url: String| reqwest::get(url).await.unwrap().status().as_u16();
    let defaults = common::start(&["--store", "memory"]);
    assert_eq!(status(format!("{}/healthz", base(&defaults))).await, 200);
    assert_eq!(status(format!("{}/readyz", base(&defaults))).await, 200);
    let moved = common::start(&[
        "--store",
        "memory",
        "--health-path",
        "/alive",
        "--ready-path",
        "none",
    ]);
    let base = base(&moved);
    assert_eq!(status(format!("{base}/alive")).await, 200);
    assert_eq!(status(format!("{base}/healthz")).await, 404);
    assert_eq!(status(format!("{base}/readyz")).await, 404);
}
