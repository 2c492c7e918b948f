//! `/livez`, `/readyz` and `/metrics` on one port: a minimal HTTP/1.1 responder, enough for
//! kubelet probes and Prometheus scrapes without pulling in a web framework.

use std::{net::SocketAddr, sync::Arc};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};
use tracing::{info, warn};

use super::State;

/// Serves until the process ends.
pub async fn serve(addr: SocketAddr, state: Arc<State>) -> std::io::Result<()> {
    let listener = TcpListener::bind(addr).await?;
    info!(%addr, "serving /livez, /readyz and /metrics");
    loop {
        let (stream, _) = listener.accept().await?;
        let state = state.clone();
        tokio::spawn(async move {
            if let Err(e) = respond(stream, &state).await {
                warn!(error = %e, "http connection failed");
            }
        });
    }
}

/// The response to a request path: status line and body.
pub fn route(path: &str, state: &State) -> (&'static str, &'static str, String) {
    const TEXT: &str = "text/plain; charset=utf-8";
    match path.split('?').next().unwrap_or_default() {
        "/livez" => ("200 OK", TEXT, "ok\n".into()),
        "/readyz" => match state.readiness() {
            Ok(()) => ("200 OK", TEXT, "ok\n".into()),
            Err(why) => ("503 Service Unavailable", TEXT, format!("{why}\n")),
        },
        "/metrics" => (
            "200 OK",
            "text/plain; version=0.0.4; charset=utf-8",
            state.metrics_text(),
        ),
        _ => ("404 Not Found", TEXT, "not found\n".into()),
    }
}

async fn respond(mut stream: TcpStream, state: &State) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    // Only the request line matters; stop at the end of the head or at 8 KiB.
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 8192 {
        let n = tokio::time::timeout(std::time::Duration::from_secs(5), stream.read(&mut buf))
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "request head timed out"))??;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = String::from_utf8_lossy(&head);
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or_default(), parts.next().unwrap_or("/"));
    let (status, content_type, body) = if method == "GET" || method == "HEAD" {
        route(path, state)
    } else {
        ("405 Method Not Allowed", "text/plain", "only GET\n".into())
    };
    let mut response = format!(
        "HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    if method != "HEAD" {
        response.push_str(&body);
    }
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}
