//! Authorization as an OAuth resource server, over real HTTP: an
//! authorization server started here on loopback (metadata, a JWKS it can
//! rotate, tokens signed with its EC keys) and the MCP server checking
//! bearer JWTs against it. Valid, expired, not yet valid, wrong audience,
//! wrong issuer, bad signature, unknown key id (fetched again), `alg:
//! none`, a missing scope; the 401 and 403 challenges; and a token of
//! another principal replayed against a session, a handle and a task.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::routing::get;
use base64::Engine as _;
use common::{Client, Modern, TestServer};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use mcp_server::{BearerAuth, HttpConfig, McpServer, ServerConfig, demo};
use parking_lot::Mutex;
use serde_json::{Value, json};

/// Two P-256 keys made for this test (`openssl ecparam -name prime256v1`),
/// with the public points of their JWKs.
const KEY_1: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgmMILVlR/NljIGO46
7nuW7+N2vm06/J8N6cLctHmasNShRANCAARnbDnIl6OdmLAx0GUFxPASvKshk7ku
YtzIDu9GaMwWuxnmC1Vl+s5YG54ZRmHk5nA0feK6E6JxQf2PSLQs545J
-----END PRIVATE KEY-----";
const KEY_1_XY: (&str, &str) = (
    "Z2w5yJejnZiwMdBlBcTwEryrIZO5LmLcyA7vRmjMFrs",
    "GeYLVWX6zlgbnhlGYeTmcDR94roTonFB_Y9ItCznjkk",
);
const KEY_2: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg+TTm0XOaGR6ke6Pq
myHdv8yi9VxNGXAbC8Xm6Nh3sQGhRANCAAQIUrEeCzmN/3Bx/B/3GtQW5aCR6FKb
jadQztiJjBopRvtSeGvWYZ8/6rIjyk5dlvPyOAUAPA6YUwOl4CxbHiRt
-----END PRIVATE KEY-----";
const KEY_2_XY: (&str, &str) = (
    "CFKxHgs5jf9wcfwf9xrUFuWgkehSm42nUM7YiYwaKUY",
    "-1J4a9Zhnz_qsiPKTl2W8_I4BQA8DphTA6XgLFseJG0",
);

const SCOPE: &str = "mcp:tools";

fn jwk(kid: &str, (x, y): (&str, &str)) -> Value {
    json!({"kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig", "kid": kid, "x": x, "y": y})
}

/// The authorization server: its metadata, and a key set that starts with
/// key 1 and can be rotated to add key 2.
struct Issuer {
    url: String,
    keys: Arc<Mutex<Vec<Value>>>,
    fetches: Arc<AtomicUsize>,
    /// What introspection says of each opaque token.
    tokens: Arc<Mutex<std::collections::HashMap<String, Value>>>,
    introspections: Arc<AtomicUsize>,
}

impl Issuer {
    async fn start() -> Issuer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let keys = Arc::new(Mutex::new(vec![jwk("k1", KEY_1_XY)]));
        let fetches = Arc::new(AtomicUsize::new(0));
        let tokens = Arc::new(Mutex::new(std::collections::HashMap::new()));
        let introspections = Arc::new(AtomicUsize::new(0));
        let metadata = json!({
            "issuer": url,
            "jwks_uri": format!("{url}/jwks"),
            "introspection_endpoint": format!("{url}/introspect"),
            "authorization_endpoint": format!("{url}/authorize"),
            "token_endpoint": format!("{url}/token"),
        });
        let (set, counted) = (keys.clone(), fetches.clone());
        let (table, asked) = (tokens.clone(), introspections.clone());
        let app = axum::Router::new()
            .route(
                "/introspect",
                axum::routing::post(move |headers: axum::http::HeaderMap, body: String| {
                    asked.fetch_add(1, Ordering::SeqCst);
                    let table = table.clone();
                    async move {
                        // This server's client credentials, as Basic auth.
                        let expected = format!(
                            "Basic {}",
                            base64::engine::general_purpose::STANDARD.encode("client:secret")
                        );
                        if headers.get("authorization").map(|v| v.to_str().unwrap())
                            != Some(&expected)
                        {
                            return (
                                axum::http::StatusCode::UNAUTHORIZED,
                                json_body(&json!({"error": "invalid_client"})),
                            );
                        }
                        let token = body
                            .split('&')
                            .find_map(|pair| pair.strip_prefix("token="))
                            .unwrap_or_default()
                            .to_string();
                        let answer = table
                            .lock()
                            .get(&token)
                            .cloned()
                            .unwrap_or(json!({"active": false}));
                        (axum::http::StatusCode::OK, json_body(&answer))
                    }
                }),
            )
            .route(
                "/.well-known/oauth-authorization-server",
                get(move || {
                    let metadata = metadata.clone();
                    async move { json_body(&metadata) }
                }),
            )
            .route(
                "/jwks",
                get(move || {
                    counted.fetch_add(1, Ordering::SeqCst);
                    let keys = set.lock().clone();
                    async move { json_body(&json!({"keys": keys})) }
                }),
            );
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Issuer {
            url,
            keys,
            fetches,
            tokens,
            introspections,
        }
    }

    fn rotate(&self) {
        self.keys.lock().push(jwk("k2", KEY_2_XY));
    }
}

/// A JSON answer.
fn json_body(value: &Value) -> ([(&'static str, &'static str); 1], String) {
    ([("content-type", "application/json")], value.to_string())
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A token signed with `key`, naming `kid`, with `claims` over sensible
/// defaults.
fn token(key: &str, kid: &str, claims: Value) -> String {
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some(kid.into());
    jsonwebtoken::encode(
        &header,
        &claims,
        &EncodingKey::from_ec_pem(key.as_bytes()).unwrap(),
    )
    .unwrap()
}

struct Setup {
    issuer: Issuer,
    server: TestServer,
    audience: String,
}

impl Setup {
    /// `server` behind `auth` on `listener`, `audience` its canonical URI.
    async fn serve(
        issuer: Issuer,
        listener: tokio::net::TcpListener,
        audience: String,
        auth: BearerAuth,
        server: McpServer,
    ) -> Setup {
        let mut http = HttpConfig::default();
        http.auth = Some(auth);
        let server = TestServer::serve_on(server, http, listener).await;
        Setup {
            issuer,
            server,
            audience,
        }
    }

    async fn start() -> Setup {
        let issuer = Issuer::start().await;
        // The audience names the server's own address: start on a port
        // picked first.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let audience = format!("http://{addr}/mcp");
        let auth = BearerAuth::jwt(&issuer.url, &audience)
            .unwrap()
            .required_scopes(&[SCOPE])
            .leeway(Duration::from_secs(5))
            .refresh_interval(Duration::ZERO);
        let mut http = HttpConfig::default();
        http.auth = Some(auth);
        let server = demo::register(McpServer::builder())
            .config(ServerConfig::default())
            .build();
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        let server = TestServer::serve_on(server, http, listener).await;
        Setup {
            issuer,
            server,
            audience,
        }
    }

    /// A valid token of `subject` with `scope`.
    fn token_of(&self, subject: &str, scope: &str) -> String {
        token(
            KEY_1,
            "k1",
            json!({"iss": self.issuer.url, "aud": self.audience, "sub": subject,
                   "exp": now() + 600, "nbf": now() - 10, "scope": scope}),
        )
    }

    /// A POST of `initialize` with `authorization` (if any).
    async fn initialize(&self, authorization: Option<&str>) -> reqwest::Response {
        let mut request = reqwest::Client::new()
            .post(&self.server.url)
            .header("accept", common::ACCEPT_BOTH)
            .header("content-type", "application/json")
            .body(
                json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
                    "protocolVersion": "2025-11-25", "capabilities": {},
                    "clientInfo": {"name": "t", "version": "1"}}})
                .to_string(),
            );
        if let Some(authorization) = authorization {
            request = request.header("authorization", authorization);
        }
        request.send().await.unwrap()
    }
}

fn challenge(response: &reqwest::Response) -> String {
    response
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_and_challenges_are_as_the_specification_says() {
    let setup = Setup::start().await;
    let addr = setup.server.addr;
    let metadata_url = format!("http://{addr}/.well-known/oauth-protected-resource/mcp");
    for path in [
        "/.well-known/oauth-protected-resource/mcp",
        "/.well-known/oauth-protected-resource",
    ] {
        let document: Value = reqwest::get(format!("http://{addr}{path}"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(document["resource"], setup.audience.as_str());
        assert_eq!(document["authorization_servers"], json!([setup.issuer.url]));
        assert_eq!(document["scopes_supported"], json!([SCOPE]));
    }

    // No token: 401, the metadata and the scope named, no error code.
    let missing = setup.initialize(None).await;
    assert_eq!(missing.status(), 401);
    assert_eq!(
        challenge(&missing),
        format!("Bearer resource_metadata=\"{metadata_url}\", scope=\"{SCOPE}\"")
    );
    let body: Value = missing.json().await.unwrap();
    assert_eq!(body["error"], "unauthorized");

    // Another scheme is no bearer token: 401 as with none, no error code.
    let basic = setup.initialize(Some("Basic dXNlcjpwYXNz")).await;
    assert_eq!(basic.status(), 401);
    assert!(
        !challenge(&basic).contains("error="),
        "{}",
        challenge(&basic)
    );
    // A bearer token that is not a JWT: 401 invalid_token.
    for authorization in ["Bearer not.a.jwt", "Bearer", "Bearer   "] {
        let refused = setup.initialize(Some(authorization)).await;
        assert_eq!(refused.status(), 401, "{authorization}");
        let header = challenge(&refused);
        assert!(
            header.starts_with("Bearer error=\"invalid_token\""),
            "{header}"
        );
        assert!(header.contains(&format!("resource_metadata=\"{metadata_url}\"")));
    }

    // What a token says never makes the challenge leave visible ASCII.
    let odd = format!(
        "Bearer {}.e30.sig",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(r#"{"alg":"ES256é","kid":"\"x"}"#)
    );
    let refused = setup.initialize(Some(&odd)).await;
    assert_eq!(refused.status(), 401);
    assert!(challenge(&refused).is_ascii(), "{}", challenge(&refused));

    // A valid token without the scope: 403 insufficient_scope, naming it.
    let narrow = setup.token_of("alice", "other:scope");
    let forbidden = setup.initialize(Some(&format!("Bearer {narrow}"))).await;
    assert_eq!(forbidden.status(), 403);
    let header = challenge(&forbidden);
    assert!(
        header.starts_with("Bearer error=\"insufficient_scope\""),
        "{header}"
    );
    assert!(header.contains(&format!("scope=\"{SCOPE}\"")), "{header}");
    assert!(header.contains(&format!("resource_metadata=\"{metadata_url}\"")));
    let body: Value = forbidden.json().await.unwrap();
    assert_eq!(body["error"], "insufficient_scope");

    // The probes need no token.
    let health = reqwest::get(format!("http://{addr}/healthz"))
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    setup.server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_valid_tokens_for_this_server_are_accepted() {
    let setup = Setup::start().await;
    let (iss, aud) = (setup.issuer.url.clone(), setup.audience.clone());
    let good = |extra: Value| {
        let mut claims = json!({"iss": iss, "aud": aud, "sub": "alice",
                                "exp": now() + 600, "scope": SCOPE});
        for (k, v) in extra.as_object().unwrap() {
            claims[k] = v.clone();
        }
        claims
    };
    let accepted = setup
        .initialize(Some(&format!(
            "Bearer {}",
            token(KEY_1, "k1", good(json!({})))
        )))
        .await;
    assert_eq!(accepted.status(), 200);
    assert!(accepted.headers().contains_key("mcp-session-id"));
    // `scp` as a list counts as scopes too.
    let scp = token(KEY_1, "k1", good(json!({"scope": null, "scp": [SCOPE]})));
    assert_eq!(
        setup
            .initialize(Some(&format!("Bearer {scp}")))
            .await
            .status(),
        200
    );

    let refused = [
        (
            "expired",
            token(KEY_1, "k1", good(json!({"exp": now() - 120}))),
        ),
        (
            "not yet valid",
            token(KEY_1, "k1", good(json!({"nbf": now() + 120}))),
        ),
        (
            "wrong audience",
            token(KEY_1, "k1", good(json!({"aud": "http://elsewhere/mcp"}))),
        ),
        (
            "wrong issuer",
            token(KEY_1, "k1", good(json!({"iss": "http://127.0.0.1:1"}))),
        ),
        ("no subject", token(KEY_1, "k1", good(json!({"sub": null})))),
        (
            "empty subject",
            token(KEY_1, "k1", good(json!({"sub": ""}))),
        ),
        // Signed with key 2 but naming key 1.
        ("bad signature", token(KEY_2, "k1", good(json!({})))),
    ];
    for (what, token) in refused {
        let response = setup.initialize(Some(&format!("Bearer {token}"))).await;
        assert_eq!(response.status(), 401, "{what}");
        assert!(challenge(&response).contains("invalid_token"), "{what}");
    }

    // `alg: none`, unsigned.
    let encode = |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    let unsigned = format!(
        "{}.{}.",
        encode(&json!({"alg": "none", "typ": "JWT"})),
        encode(&good(json!({})))
    );
    let response = setup.initialize(Some(&format!("Bearer {unsigned}"))).await;
    assert_eq!(response.status(), 401, "alg none");

    // Key 2 before the issuer publishes it: refused after fetching the
    // set again; once rotated in, accepted (fetched again).
    let rotated = token(KEY_2, "k2", good(json!({})));
    let before = setup.issuer.fetches.load(Ordering::SeqCst);
    let early = setup.initialize(Some(&format!("Bearer {rotated}"))).await;
    assert_eq!(early.status(), 401);
    assert!(
        setup.issuer.fetches.load(Ordering::SeqCst) > before,
        "fetched again"
    );
    setup.issuer.rotate();
    let late = setup.initialize(Some(&format!("Bearer {rotated}"))).await;
    assert_eq!(late.status(), 200);
    setup.server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_principal_sees_nothing_of_alices_sessions_handles_and_tasks() {
    let setup = Setup::start().await;
    let alice = setup.token_of("alice", SCOPE);
    let bob = setup.token_of("bob", SCOPE);

    // A legacy session of Alice's, replayed with Bob's token: not found.
    let mut mine = Client::with_token(&setup.server.url, &alice);
    mine.connect().await;
    mine.tool("counter", json!({"by": 1})).await;
    let mut theirs = Client::with_token(&setup.server.url, &bob);
    theirs.session = mine.session.clone();
    let replayed = theirs
        .post(&json!({"jsonrpc": "2.0", "id": 9, "method": "ping"}))
        .send()
        .await
        .unwrap();
    assert_eq!(replayed.status(), 404);
    // Nor can Bob end it (nor anyone without a token).
    let session = mine.session.clone().unwrap();
    for authorization in [Some(format!("Bearer {bob}")), None] {
        let mut delete = reqwest::Client::new()
            .delete(&setup.server.url)
            .header("mcp-session-id", &session)
            .header("mcp-protocol-version", "2025-11-25");
        if let Some(authorization) = authorization.clone() {
            delete = delete.header("authorization", authorization);
        }
        let status = delete.send().await.unwrap().status().as_u16();
        assert!(
            status == 404 || status == 401,
            "{authorization:?}: {status}"
        );
    }
    assert_eq!(
        mine.tool("counter", json!({"by": 1})).await["structuredContent"]["counter"],
        2,
        "Alice's session lives on"
    );

    // A handle of Alice's, named by Bob: a tool error.
    let mut alice_modern = Modern::new(&setup.server.url);
    alice_modern
        .headers
        .push(("authorization", format!("Bearer {alice}")));
    alice_modern.capabilities = json!({"extensions": {"io.modelcontextprotocol/tasks": {}}});
    let mut bob_modern = Modern::new(&setup.server.url);
    bob_modern
        .headers
        .push(("authorization", format!("Bearer {bob}")));
    bob_modern.capabilities = alice_modern.capabilities.clone();
    let counted = alice_modern.tool("counter", json!({"by": 5})).await;
    let handle = counted["structuredContent"]["counter_id"]
        .as_str()
        .unwrap()
        .to_string();
    let foreign = bob_modern
        .tool("counter", json!({"by": 1, "counter_id": handle}))
        .await;
    assert_eq!(foreign["isError"], true, "{foreign}");

    // A task of Alice's, polled or cancelled by Bob: unknown.
    let created = alice_modern
        .call(
            "tools/call",
            json!({"name": "slow", "arguments": {"steps": 20, "delay_ms": 50}}),
        )
        .await;
    let task = created.result()["taskId"].as_str().unwrap().to_string();
    for method in ["tasks/get", "tasks/cancel"] {
        let answer = bob_modern.call(method, json!({"taskId": task})).await;
        assert!(
            answer.response().get("error").is_some(),
            "{method}: {answer:?}"
        );
    }
    let own = alice_modern
        .call("tasks/get", json!({"taskId": task}))
        .await;
    assert_eq!(
        own.result()["status"],
        "working",
        "Bob's cancel did nothing"
    );
    setup.server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_issuer_that_fails_is_asked_again_only_after_the_interval() {
    // An issuer whose metadata answers 500.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let hits = Arc::new(AtomicUsize::new(0));
    let counted = hits.clone();
    let app = axum::Router::new().fallback(move || {
        counted.fetch_add(1, Ordering::SeqCst);
        async { axum::http::StatusCode::INTERNAL_SERVER_ERROR }
    });
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let auth = BearerAuth::jwt(&url, "http://127.0.0.1:1/mcp")
        .unwrap()
        .refresh_interval(Duration::from_secs(3600));
    let mut http = HttpConfig::default();
    http.auth = Some(auth);
    let server = TestServer::start_with(
        demo::register(McpServer::builder()),
        ServerConfig::default(),
        http,
    )
    .await;
    let forged = token(
        KEY_1,
        "any",
        json!({"iss": url, "aud": "x", "sub": "s", "exp": now() + 60}),
    );
    let started = std::time::Instant::now();
    for _ in 0..20 {
        let response = reqwest::Client::new()
            .post(&server.url)
            .header("authorization", format!("Bearer {forged}"))
            .header("content-type", "application/json")
            .header("accept", common::ACCEPT_BOTH)
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(
            response.status(),
            503,
            "the keys cannot be had: not the token's fault"
        );
        assert_eq!(response.headers()["retry-after"], "1");
        let body = response.text().await.unwrap();
        assert!(
            !body.contains(&url),
            "no internal address in the answer: {body}"
        );
    }
    // One attempt (metadata, then the OpenID form) for all twenty, at once.
    assert!(
        hits.load(Ordering::SeqCst) <= 2,
        "{}",
        hits.load(Ordering::SeqCst)
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    server.stop().await;
}

#[test]
fn a_plain_http_issuer_is_refused_unless_on_loopback() {
    assert!(BearerAuth::jwt("http://login.example.com", "https://mcp.example.com/mcp").is_err());
    assert!(BearerAuth::jwt("https://login.example.com", "https://mcp.example.com/mcp").is_ok());
    assert!(BearerAuth::jwt("http://127.0.0.1:9000", "http://127.0.0.1:8080/mcp").is_ok());
    assert!(BearerAuth::jwt("http://localhost:9000", "http://localhost:8080/mcp").is_ok());
    assert!(BearerAuth::jwt("not a url", "https://mcp.example.com/mcp").is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opaque_tokens_are_checked_by_introspection_and_the_answer_reused() {
    let issuer = Issuer::start().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let audience = format!("http://{}/mcp", listener.local_addr().unwrap());
    let active = |sub: &str, aud: &str, scope: &str| {
        json!({"active": true, "sub": sub, "aud": aud, "scope": scope,
               "iss": issuer.url, "exp": now() + 600})
    };
    {
        let mut tokens = issuer.tokens.lock();
        tokens.insert("alice-token".into(), active("alice", &audience, SCOPE));
        tokens.insert("bob-token".into(), active("bob", &audience, SCOPE));
        tokens.insert(
            "other-audience".into(),
            active("alice", "http://elsewhere/mcp", SCOPE),
        );
        tokens.insert("narrow".into(), active("alice", &audience, "other"));
        tokens.insert(
            "expired".into(),
            json!({"active": true, "sub": "alice", "aud": audience,
                                               "scope": SCOPE, "exp": now() - 600}),
        );
    }
    let auth = BearerAuth::introspection(&issuer.url, &audience, "client", "secret")
        .unwrap()
        .required_scopes(&[SCOPE]);
    let server = demo::register(McpServer::builder()).build();
    let setup = Setup::serve(issuer, listener, audience, auth, server).await;
    let status = |response: &reqwest::Response| response.status().as_u16();
    let accepted = setup.initialize(Some("Bearer alice-token")).await;
    assert_eq!(status(&accepted), 200);
    let asked = setup.issuer.introspections.load(Ordering::SeqCst);
    assert_eq!(
        setup.initialize(Some("Bearer alice-token")).await.status(),
        200
    );
    assert_eq!(
        setup.issuer.introspections.load(Ordering::SeqCst),
        asked,
        "the answer is reused"
    );
    for (token, expected) in [
        ("unknown", 401),
        ("other-audience", 401),
        ("expired", 401),
        ("narrow", 403),
    ] {
        let response = setup.initialize(Some(&format!("Bearer {token}"))).await;
        assert_eq!(status(&response), expected, "{token}");
    }
    // Alice's session is not Bob's.
    let mut mine = Client::with_token(&setup.server.url, "alice-token");
    mine.connect().await;
    let mut theirs = Client::with_token(&setup.server.url, "bob-token");
    theirs.session = mine.session.clone();
    let replayed = theirs
        .post(&json!({"jsonrpc": "2.0", "id": 9, "method": "ping"}))
        .send()
        .await
        .unwrap();
    assert_eq!(replayed.status(), 404);
    setup.server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_issuer_refusing_our_client_credentials_is_a_503_not_a_401() {
    let issuer = Issuer::start().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let audience = format!("http://{}/mcp", listener.local_addr().unwrap());
    let auth = BearerAuth::introspection(&issuer.url, &audience, "client", "wrong").unwrap();
    let server = demo::register(McpServer::builder()).build();
    let setup = Setup::serve(issuer, listener, audience, auth, server).await;
    let response = setup.initialize(Some("Bearer whatever")).await;
    assert_eq!(response.status(), 503);
    setup.server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tool_can_require_scopes_of_its_own() {
    let issuer = Issuer::start().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let audience = format!("http://{}/mcp", listener.local_addr().unwrap());
    let auth = BearerAuth::jwt(&issuer.url, &audience)
        .unwrap()
        .required_scopes(&[SCOPE]);
    let server = demo::register(McpServer::builder())
        .tool_scopes("counter", &["counter:write"])
        .build();
    let setup = Setup::serve(issuer, listener, audience, auth, server).await;
    let metadata_url = format!(
        "http://{}/.well-known/oauth-protected-resource/mcp",
        setup.server.addr
    );

    // The server's scope alone: echo yes, counter no (403 naming its scope).
    let narrow = setup.token_of("alice", SCOPE);
    let mut client = Client::with_token(&setup.server.url, &narrow);
    client.connect().await;
    assert_eq!(
        client.tool("echo", json!({"text": "hi"})).await["content"][0]["text"],
        "hi"
    );
    let call = json!({"jsonrpc": "2.0", "id": 3, "method": "tools/call",
                      "params": {"name": "counter", "arguments": {"by": 1}}});
    let refused = client.post(&call).send().await.unwrap();
    assert_eq!(refused.status(), 403);
    assert_eq!(
        challenge(&refused),
        format!(
            "Bearer error=\"insufficient_scope\", scope=\"{SCOPE} counter:write\", resource_metadata=\"{metadata_url}\", error_description=\"the token lacks a required scope\""
        )
    );
    // Not with positional params, which the dispatcher would also take.
    let positional = json!({"jsonrpc": "2.0", "id": 5, "method": "tools/call",
                            "params": ["counter", {"by": 1}]});
    assert_eq!(client.post(&positional).send().await.unwrap().status(), 403);
    // Not through a batch either (revision 2025-03-26), even beside an
    // item that is not a request at all.
    let mut old = Client::with_token(&setup.server.url, &narrow);
    old.version = "2025-03-26".into();
    old.connect().await;
    for batch in [
        json!([{"jsonrpc": "2.0", "id": 4, "method": "ping"}, call]),
        json!([call, 1]),
    ] {
        let answer = old.post(&batch).send().await.unwrap();
        assert_eq!(answer.status(), 403, "{batch}");
    }
    // Nor in the modern era.
    let mut modern = Modern::new(&setup.server.url);
    modern
        .headers
        .push(("authorization", format!("Bearer {narrow}")));
    let answer = modern
        .call("tools/call", json!({"name": "counter", "arguments": {}}))
        .await;
    assert_eq!(answer.status, 403);

    // With the tool's scope too: allowed.
    let wide = setup.token_of("alice", &format!("{SCOPE} counter:write"));
    let mut client = Client::with_token(&setup.server.url, &wide);
    client.connect().await;
    assert_eq!(
        client.tool("counter", json!({"by": 2})).await["structuredContent"]["counter"],
        2
    );
    setup.server.stop().await;
}
