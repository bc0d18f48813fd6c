//! `hyper-echo`: the HTTP transport's ceiling for the benchmark.
//!
//! A bare hyper 1.x HTTP/1.1 server with no MCP logic: a POST to `/mcp` whose
//! JSON body has an `id` gets a canned JSON-RPC tool result echoing
//! `params.arguments.text` (plus an `mcp-session-id` header for `initialize`);
//! one without an `id` gets 202. DELETE gets 200, anything else 405.
//! Listens on `--listen ADDR` (default `127.0.0.1:0`) and prints
//! `listening on http://<addr>/mcp` once bound. Exits on SIGINT.

use std::convert::Infallible;
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode, header};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};

static SESSIONS: AtomicU64 = AtomicU64::new(1);

fn reply(status: StatusCode) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::new()));
    *resp.status_mut() = status;
    resp
}

async fn handle(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    if req.uri().path() != "/mcp" {
        return Ok(reply(StatusCode::NOT_FOUND));
    }
    match *req.method() {
        Method::DELETE => return Ok(reply(StatusCode::OK)),
        Method::POST => {}
        _ => return Ok(reply(StatusCode::METHOD_NOT_ALLOWED)),
    }
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return Ok(reply(StatusCode::BAD_REQUEST)),
    };
    let Ok(msg) = serde_json::from_slice::<Value>(&body) else {
        return Ok(reply(StatusCode::BAD_REQUEST));
    };
    let Some(id) = msg.get("id") else {
        return Ok(reply(StatusCode::ACCEPTED));
    };
    let text = msg
        .pointer("/params/arguments/text")
        .and_then(Value::as_str)
        .unwrap_or("");
    let out = json!({
        "jsonrpc": "2.0",
        "id": id,
        "result": { "content": [ { "type": "text", "text": text } ] },
    });
    let mut resp = Response::new(Full::new(Bytes::from(serde_json::to_vec(&out).unwrap())));
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, header::HeaderValue::from_static("application/json"));
    if msg.get("method").and_then(Value::as_str) == Some("initialize") {
        let sid = format!("{:032x}", SESSIONS.fetch_add(1, Ordering::Relaxed));
        resp.headers_mut()
            .insert("mcp-session-id", sid.parse().expect("hex is a valid header value"));
    }
    Ok(resp)
}

fn listen_addr() -> String {
    let mut args = std::env::args().skip(1);
    let mut addr = "127.0.0.1:0".to_owned();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--listen" => addr = args.next().expect("--listen needs an address"),
            other => panic!("unknown argument {other:?} (usage: hyper-echo [--listen ADDR])"),
        }
    }
    addr
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(listen_addr()).await?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "listening on http://{}/mcp", listener.local_addr()?)?;
    out.flush()?;
    drop(out);

    loop {
        // SIGINT ends the process normally (a profile-instrumented build
        // writes its profile then: `cargo xtask pgo`).
        let accepted = tokio::select! {
            _ = tokio::signal::ctrl_c() => return Ok(()),
            accepted = listener.accept() => accepted,
        };
        let (stream, _) = match accepted {
            Ok(conn) => conn,
            Err(_) => continue,
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let _ = hyper::server::conn::http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), hyper::service::service_fn(handle))
                .await;
        });
    }
}
