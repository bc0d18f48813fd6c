//! Connections under abuse: half-sent and silent connections time out, idle
//! keep-alive connections time out, requests in progress are never cut, and
//! a client holding more idle connections than the server can keep locks
//! nobody else out (the oldest idle ones make room; only busy ones refuse).

mod common;

use std::time::Duration;

use common::{BIN, Modern, Process, TestServer};
use mcp_server::{HttpConfig, McpServer, ServerConfig, demo};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Well past every short timeout these tests configure, so that a
/// connection not closed by then was not going to be.
const PATIENCE: Duration = Duration::from_secs(5);

async fn serve(http: HttpConfig) -> TestServer {
    TestServer::serve(
        demo::register(McpServer::builder())
            .config(ServerConfig::default())
            .build(),
        http,
    )
    .await
}

fn http(header: Duration, idle: Duration, max: Option<usize>) -> HttpConfig {
    let mut http = HttpConfig::default();
    http.header_timeout = header;
    http.idle_connection_timeout = idle;
    http.max_connections = max;
    http
}

/// Reads until the server closes the connection (or resets it); returns
/// what was read, or `None` if it was still open after `PATIENCE`.
async fn until_closed(tcp: &mut TcpStream) -> Option<Vec<u8>> {
    let mut seen = Vec::new();
    let read = async {
        let mut buf = [0u8; 4096];
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => seen.extend_from_slice(&buf[..n]),
            }
        }
    };
    tokio::time::timeout(PATIENCE, read).await.ok()?;
    Some(seen)
}

/// A whole 2026-07-28 `tools/call` of `echo`, as raw HTTP/1.1.
fn modern_echo(addr: &str) -> Vec<u8> {
    let body = json!({
        "jsonrpc": "2.0", "id": 1, "method": "tools/call",
        "params": {
            "name": "echo", "arguments": {"text": "hi"},
            "_meta": {
                "io.modelcontextprotocol/protocolVersion": "2026-07-28",
                "io.modelcontextprotocol/clientCapabilities": {}
            }
        }
    })
    .to_string();
    format!(
        "POST /mcp HTTP/1.1\r\nHost: {addr}\r\nAccept: application/json, text/event-stream\r\n\
         Content-Type: application/json\r\nMCP-Protocol-Version: 2026-07-28\r\n\
         Mcp-Method: tools/call\r\nMcp-Name: echo\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Reads one response with a `content-length` body off `tcp`.
async fn read_response(tcp: &mut TcpStream) -> String {
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    let read = async {
        loop {
            let n = tcp.read(&mut buf).await.expect("the response");
            assert!(n > 0, "closed before a whole response");
            seen.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&seen).to_string();
            if let Some(end) = text.find("\r\n\r\n") {
                let length: usize = text[..end]
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().parse().unwrap())
                    })
                    .expect("a content-length");
                if seen.len() >= end + 4 + length {
                    return text;
                }
            }
        }
    };
    tokio::time::timeout(PATIENCE, read)
        .await
        .expect("a response in time")
}

fn echo_ok(client: &Modern) -> impl std::future::Future<Output = serde_json::Value> + '_ {
    client.tool("echo", json!({"text": "still served"}))
}

#[tokio::test]
async fn half_sent_and_silent_connections_are_closed_after_the_header_timeout() {
    let server = serve(http(
        Duration::from_millis(200),
        Duration::from_secs(60),
        None,
    ))
    .await;
    let addr = server.addr.to_string();
    let mut half = TcpStream::connect(&addr).await.unwrap();
    half.write_all(b"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nCont")
        .await
        .unwrap();
    let mut silent = TcpStream::connect(&addr).await.unwrap();
    // A prompt client on another connection is answered meanwhile.
    let mut prompt = TcpStream::connect(&addr).await.unwrap();
    prompt.write_all(&modern_echo(&addr)).await.unwrap();
    assert!(read_response(&mut prompt).await.starts_with("HTTP/1.1 200"));
    let (half_seen, silent_seen) = tokio::join!(until_closed(&mut half), until_closed(&mut silent));
    assert!(half_seen.is_some(), "a half-sent head is closed");
    assert!(
        silent_seen.is_some(),
        "a connection that sends nothing is closed"
    );
    server.stop().await;
}

#[tokio::test]
async fn idle_keep_alive_connections_time_out_but_requests_in_progress_are_never_cut() {
    let server = serve(http(
        Duration::from_millis(200),
        Duration::from_millis(300),
        None,
    ))
    .await;
    let addr = server.addr.to_string();
    // Answered, then idle: closed after the idle timeout.
    let mut tcp = TcpStream::connect(&addr).await.unwrap();
    tcp.write_all(&modern_echo(&addr)).await.unwrap();
    assert!(read_response(&mut tcp).await.starts_with("HTTP/1.1 200"));
    assert!(
        until_closed(&mut tcp).await.is_some(),
        "an idle keep-alive connection is closed"
    );
    // A request that runs for four idle timeouts (and five header
    // timeouts) is answered whole, with its progress on the stream.
    let client = Modern::new(&server.url);
    let answer = Modern::send(client.request(
        "tools/call",
        json!({
            "name": "slow", "arguments": {"steps": 4, "delay_ms": 300},
            "_meta": {"progressToken": "p"}
        }),
    ))
    .await;
    assert_eq!(answer.notifications().len(), 4, "every progress step");
    assert_eq!(
        answer.result()["isError"],
        json!(null),
        "{:?}",
        answer.response()
    );
    server.stop().await;
}

#[tokio::test]
async fn at_the_cap_idle_connections_make_room_and_only_busy_ones_refuse() {
    let server = serve(http(
        Duration::from_secs(30),
        Duration::from_secs(60),
        Some(3),
    ))
    .await;
    let addr = server.addr.to_string();
    // A client holds the three places with connections that send nothing.
    let mut hoarded = Vec::new();
    for _ in 0..3 {
        hoarded.push(TcpStream::connect(&addr).await.unwrap());
    }
    // Someone else is still served: the oldest hoarded connection goes.
    let client = Modern::new(&server.url);
    assert_eq!(echo_ok(&client).await["content"][0]["text"], "still served");
    assert!(until_closed(&mut hoarded[0]).await.is_some());
    // Three requests in progress fill the cap (each client has a
    // connection of its own; a response whose head has arrived is in
    // progress); the remaining idle connections made room.
    // (The server sends a response's head with its first progress
    // notification, a quarter second in; the calls run for two seconds.)
    let sent = (0..3).map(|_| {
        let client = Modern::new(&server.url);
        async move {
            client
                .request(
                    "tools/call",
                    json!({
                        "name": "slow", "arguments": {"steps": 8, "delay_ms": 250},
                        "_meta": {"progressToken": "p"}
                    }),
                )
                .send()
                .await
                .unwrap()
        }
    });
    let mut running = Vec::new();
    for response in futures_util::future::join_all(sent).await {
        assert_eq!(response.status(), 200);
        running.push(tokio::spawn(common::read_sse(response, usize::MAX)));
    }
    // Every connection is busy: a new one is refused at once.
    let mut refused = TcpStream::connect(&addr).await.unwrap();
    let answer = String::from_utf8_lossy(&until_closed(&mut refused).await.unwrap()).to_string();
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("retry-after: 1"),
        "{answer}"
    );
    assert!(answer.contains("busy"), "{answer}");
    for request in running {
        let events = request.await.unwrap();
        let last: serde_json::Value = serde_json::from_str(&events.last().unwrap().data).unwrap();
        assert_eq!(last["result"]["isError"], json!(null), "{last}");
        assert_eq!(
            events.len(),
            9,
            "eight progress notifications and the result"
        );
    }
    // The requests are done: new clients are served again.
    assert_eq!(
        echo_ok(&Modern::new(&server.url)).await["content"][0]["text"],
        "still served"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_withheld_body_gets_408_and_locks_nobody_out() {
    let server = serve(http(
        Duration::from_millis(300),
        Duration::from_secs(60),
        Some(3),
    ))
    .await;
    let addr = server.addr.to_string();
    // Three connections send a whole head, then one byte of a 100-byte body.
    let mut stalled = Vec::new();
    for _ in 0..3 {
        let mut tcp = TcpStream::connect(&addr).await.unwrap();
        tcp.write_all(
            format!(
                "POST /mcp HTTP/1.1\r\nHost: {addr}\r\nAccept: application/json, text/event-stream\r\n\
                 Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{"
            )
            .as_bytes(),
        )
        .await
        .unwrap();
        stalled.push(tcp);
    }
    // Each is answered 408 once the header timeout has passed since its head.
    for tcp in &mut stalled {
        let seen = until_closed(tcp).await.expect("closed after its 408");
        let text = String::from_utf8_lossy(&seen).to_string();
        assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    }
    // And the places they held serve others.
    assert_eq!(
        echo_ok(&Modern::new(&server.url)).await["content"][0]["text"],
        "still served"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_slow_reader_gets_the_whole_answer_before_its_idle_connection_closes() {
    let server = serve(http(
        Duration::from_secs(3),
        Duration::from_millis(200),
        None,
    ))
    .await;
    let addr = server.addr.to_string();
    // An answer of 3 MB, more than the socket buffers hold: its end waits in
    // the server while the client does not read.
    let text = "x".repeat(3 << 20);
    let body = json!({
        "jsonrpc": "2.0", "id": 1, "method": "tools/call",
        "params": {
            "name": "echo", "arguments": {"text": text},
            "_meta": {
                "io.modelcontextprotocol/protocolVersion": "2026-07-28",
                "io.modelcontextprotocol/clientCapabilities": {}
            }
        }
    })
    .to_string();
    // A small receive window keeps the kernel from taking the answer off
    // the server's hands.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut tcp = socket.connect(server.addr).await.unwrap();
    tcp.write_all(
        format!(
            "POST /mcp HTTP/1.1\r\nHost: {addr}\r\nAccept: application/json, text/event-stream\r\n\
             Content-Type: application/json\r\nMCP-Protocol-Version: 2026-07-28\r\n\
             Mcp-Method: tools/call\r\nMcp-Name: echo\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    // Five idle timeouts without reading.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let answer = read_response(&mut tcp).await;
    assert!(answer.starts_with("HTTP/1.1 200"));
    assert!(
        answer.len() > 3 << 20,
        "the whole answer: {} bytes",
        answer.len()
    );
    assert!(answer.trim_end().ends_with('}'), "the answer ends whole");
    server.stop().await;
}

/// Starts the binary with its open-file limit (soft and hard) at `limit`.
fn start_limited(limit: u32, args: &[&str]) -> Process {
    let script = format!("ulimit -n {limit} && exec \"$0\" \"$@\"");
    let mut command = std::process::Command::new("sh");
    command
        .args(["-c", &script, BIN, "--listen", "127.0.0.1:0"])
        .args(args);
    common::start_command(command)
}

#[tokio::test]
async fn more_idle_connections_than_open_files_lock_nobody_out() {
    let server = start_limited(128, &["--store", "memory"]);
    let addr = server
        .url
        .trim_start_matches("http://")
        .trim_end_matches("/mcp")
        .to_string();
    // 300 connections (the process may open 128 files) that send nothing,
    // and 100 more that send half a head.
    let mut hoarded = Vec::new();
    for i in 0..400 {
        let mut tcp = TcpStream::connect(&addr).await.unwrap();
        if i >= 300 {
            tcp.write_all(b"POST /mcp HTTP/1.1\r\nHo").await.unwrap();
        }
        hoarded.push(tcp);
    }
    // A normal client is served, several times over, on new connections.
    for _ in 0..5 {
        let client = Modern::new(&server.url);
        assert_eq!(echo_ok(&client).await["content"][0]["text"], "still served");
    }
    let mut tcp = TcpStream::connect(&addr).await.unwrap();
    tcp.write_all(&modern_echo(&addr)).await.unwrap();
    assert!(read_response(&mut tcp).await.starts_with("HTTP/1.1 200"));
    drop(hoarded);
}
