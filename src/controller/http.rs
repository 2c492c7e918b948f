//! `/livez`, `/readyz` and `/metrics` on one port, served by hyper's HTTP/1 server.
//!
//! Every connection carries exactly one request (no keep-alive), so one deadline on the
//! connection bounds the whole request: reading the head, building the answer and writing it.
//! A client that trickles its head (slow loris) or never reads the answer is cut off then.

use std::{convert::Infallible, net::SocketAddr, sync::Arc, time::Duration};

use http_body_util::Full;
use hyper::{
    Method, Request, Response, StatusCode,
    body::{Bytes, Incoming},
    header,
    server::conn::http1,
    service::service_fn,
};
use hyper_util::rt::TokioIo;
use tokio::{
    net::{TcpListener, TcpStream},
    task::JoinSet,
};
use tracing::{debug, info, warn};

use super::{State, metrics};

/// Probes and scrapes send a handful of short headers; anything bigger is answered 431.
const MAX_HEADER_BYTES: usize = 8 * 1024;
const MAX_HEADERS: usize = 32;

#[derive(Clone, Copy, Debug)]
pub struct HttpConfig {
    /// Deadline for one connection, i.e. one whole request.
    pub request_timeout: Duration,
    /// Connections served at once. Beyond that the server stops accepting: new connections
    /// wait in the kernel's listen backlog (and are refused once that is full) until a served
    /// one ends, which the request timeout guarantees.
    pub max_connections: usize,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            request_timeout: Duration::from_secs(10),
            max_connections: 64,
        }
    }
}

/// Serves on `addr` until the task is aborted.
pub async fn serve(addr: SocketAddr, state: Arc<State>) -> std::io::Result<()> {
    let listener = TcpListener::bind(addr).await?;
    info!(%addr, "serving /livez, /readyz and /metrics");
    serve_on(listener, state, HttpConfig::default()).await
}

/// Serves on a bound listener until the task is aborted; aborting it also drops every
/// connection in flight. Only fails if accepting fails for a reason that is not about one
/// connection or a momentary lack of file descriptors.
pub async fn serve_on(listener: TcpListener, state: Arc<State>, config: HttpConfig) -> std::io::Result<()> {
    let max = config.max_connections.max(1);
    let mut connections = JoinSet::new();
    loop {
        while let Some(done) = connections.try_join_next() {
            log_panic(done);
        }
        if connections.len() >= max {
            if let Some(done) = connections.join_next().await {
                log_panic(done);
            }
            continue;
        }
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) if is_transient(&e) => {
                warn!(error = %e, "accepting an http connection failed");
                // Out of file descriptors: give served connections a moment to end.
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
            Err(e) => return Err(e),
        };
        connections.spawn(connection(stream, state.clone(), config.request_timeout));
    }
}

fn is_transient(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    // EMFILE / ENFILE: the process or the system is out of file descriptors.
    matches!(
        e.kind(),
        ConnectionAborted | ConnectionReset | ConnectionRefused | Interrupted | TimedOut | WouldBlock
    ) || matches!(e.raw_os_error(), Some(23 | 24))
}

fn log_panic(done: Result<(), tokio::task::JoinError>) {
    if let Err(e) = done
        && e.is_panic()
    {
        warn!(error = %e, "http connection task panicked");
    }
}

async fn connection(stream: TcpStream, state: Arc<State>, timeout: Duration) {
    let service = service_fn(move |req: Request<Incoming>| {
        let response = route(req.method(), req.uri().path(), &state);
        std::future::ready(Ok::<_, Infallible>(response))
    });
    let conn = http1::Builder::new()
        .keep_alive(false)
        // The connection deadline below covers reading the head; hyper's own timer is off.
        .header_read_timeout(None)
        .max_headers(MAX_HEADERS)
        .max_header_size(MAX_HEADER_BYTES)
        .serve_connection(TokioIo::new(stream), service);
    match tokio::time::timeout(timeout, conn).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => debug!(error = %e, "http connection failed"),
        Err(_) => debug!("http request timed out; connection closed"),
    }
}

/// The answer to one request. HEAD gets GET's headers; hyper leaves out the body.
fn route(method: &Method, path: &str, state: &State) -> Response<Full<Bytes>> {
    const TEXT: &str = "text/plain; charset=utf-8";
    let known = matches!(path, "/livez" | "/readyz" | "/metrics");
    if !known {
        return reply(StatusCode::NOT_FOUND, TEXT, "not found\n".into());
    }
    if method != Method::GET && method != Method::HEAD {
        let mut response = reply(StatusCode::METHOD_NOT_ALLOWED, TEXT, "only GET and HEAD\n".into());
        response
            .headers_mut()
            .insert(header::ALLOW, header::HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    let probe = |result: Result<(), String>| match result {
        Ok(()) => reply(StatusCode::OK, TEXT, "ok\n".into()),
        Err(why) => reply(StatusCode::SERVICE_UNAVAILABLE, TEXT, format!("{why}\n")),
    };
    match path {
        "/livez" => probe(state.liveness()),
        "/readyz" => probe(state.readiness().map_err(str::to_string)),
        _ => reply(StatusCode::OK, metrics::CONTENT_TYPE, state.metrics_text()),
    }
}

fn reply(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, header::HeaderValue::from_static(content_type));
    response
}
