//! The probe and metrics endpoints over a real loopback socket, and the metrics text.

use std::{collections::BTreeMap, net::SocketAddr, sync::Arc, time::Duration};

use ims_operator::controller::{
    State,
    http::{HttpConfig, serve_on},
    metrics::{CONTENT_TYPE, Metrics, WriteKind},
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    task::JoinHandle,
    time::timeout,
};

/// Bounds every wait in these tests so a regression fails instead of hanging.
const PATIENCE: Duration = Duration::from_secs(30);

struct Server {
    addr: SocketAddr,
    task: JoinHandle<std::io::Result<()>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn start(state: Arc<State>, config: HttpConfig) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(serve_on(listener, state, config));
    Server { addr, task }
}

struct Reply {
    status: u16,
    head: String,
    body: String,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|line| {
            let (k, v) = line.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

/// Reads until the server closes the connection (it serves one request per connection).
async fn read_reply(stream: &mut TcpStream) -> Reply {
    let mut raw = Vec::new();
    timeout(PATIENCE, stream.read_to_end(&mut raw))
        .await
        .expect("the server answers and closes")
        .unwrap();
    let text = String::from_utf8(raw).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").expect("a complete response head");
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    Reply {
        status,
        head: head.to_string(),
        body: body.to_string(),
    }
}

async fn send(addr: SocketAddr, method: &str, path: &str) -> Reply {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let request = format!("{method} {path} HTTP/1.1\r\nHost: test\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    read_reply(&mut stream).await
}

/// `name{labels}` → value for every sample; panics on a line that is not a valid sample,
/// comment or the closing `# EOF`.
fn parse(text: &str) -> BTreeMap<String, f64> {
    assert!(text.ends_with("# EOF\n"), "{text}");
    let mut samples = BTreeMap::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let (series, value) = line.rsplit_once(' ').expect(line);
        let value: f64 = value.parse().expect(line);
        assert!(series.starts_with("ims_"), "{line}");
        assert!(samples.insert(series.to_string(), value).is_none(), "duplicate {line}");
    }
    samples
}

#[tokio::test]
async fn endpoints_answer_by_path_and_method() {
    let server = start(Arc::new(State::default()), HttpConfig::default()).await;

    let live = send(server.addr, "GET", "/livez").await;
    assert_eq!((live.status, live.body.as_str()), (200, "ok\n"));

    // A fresh State has not seen the CRDs yet.
    let ready = send(server.addr, "GET", "/readyz").await;
    assert_eq!(ready.status, 503);
    assert!(ready.body.contains("CRDs"), "{}", ready.body);

    let metrics = send(server.addr, "GET", "/metrics?x=1").await;
    assert_eq!(metrics.status, 200);
    assert_eq!(metrics.header("content-type"), Some(CONTENT_TYPE));
    parse(&metrics.body);

    let head = send(server.addr, "HEAD", "/metrics").await;
    assert_eq!(head.status, 200);
    assert_eq!(head.body, "");
    let length: usize = head.header("content-length").unwrap().parse().unwrap();
    assert!(length > 0);

    assert_eq!(send(server.addr, "GET", "/").await.status, 404);
    assert_eq!(send(server.addr, "GET", "/livez/x").await.status, 404);
    let post = send(server.addr, "POST", "/livez").await;
    assert_eq!(post.status, 405);
    assert_eq!(post.header("allow"), Some("GET, HEAD"));
}

#[tokio::test]
async fn livez_fails_once_a_watch_died() {
    let state = Arc::new(State::default());
    let server = start(state.clone(), HttpConfig::default()).await;
    assert_eq!(state.liveness(), Ok(()));
    assert_eq!(send(server.addr, "GET", "/livez").await.status, 200);

    state.watch_died("ImageShare", "task panicked: boom".into());
    let live = send(server.addr, "GET", "/livez").await;
    assert_eq!(live.status, 503);
    assert_eq!(live.body, "watch of ImageShare ended: task panicked: boom\n");
    assert!(state.liveness().is_err());
}

/// Asserts that the server closes `stream` without having sent a byte.
async fn assert_closed_unanswered(stream: &mut TcpStream) {
    let mut buf = [0u8; 64];
    match timeout(PATIENCE, stream.read(&mut buf)).await {
        Ok(Ok(0)) => {}
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Ok(Ok(n)) => panic!("got an answer: {:?}", String::from_utf8_lossy(&buf[..n])),
        Ok(Err(e)) => panic!("{e}"),
        Err(_) => panic!("the connection stayed open"),
    }
}

#[tokio::test]
async fn a_request_head_that_never_ends_is_cut_off() {
    let config = HttpConfig {
        request_timeout: Duration::from_millis(300),
        max_connections: 4,
    };
    let server = start(Arc::new(State::default()), config).await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    stream
        .write_all(b"GET /livez HTTP/1.1\r\nHost: test\r\n")
        .await
        .unwrap();
    assert_closed_unanswered(&mut stream).await;
}

#[tokio::test]
async fn a_trickling_client_is_cut_off_although_every_read_makes_progress() {
    let config = HttpConfig {
        request_timeout: Duration::from_millis(300),
        max_connections: 4,
    };
    let server = start(Arc::new(State::default()), config).await;
    let stream = TcpStream::connect(server.addr).await.unwrap();
    let (mut read, mut write) = stream.into_split();
    let trickle = tokio::spawn(async move {
        write.write_all(b"GET /livez HTTP/1.1\r\n").await?;
        // A header every 20 ms, far more often than any per-read timeout would allow; the
        // ~15 that fit in the deadline stay under the header count limit.
        for _ in 0..30 * 50 {
            write.write_all(b"X: y\r\n").await?;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok::<_, std::io::Error>(())
    });
    let mut buf = [0u8; 64];
    match timeout(PATIENCE, read.read(&mut buf)).await {
        Ok(Ok(0)) => {}
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Ok(Ok(n)) => panic!("got an answer: {:?}", String::from_utf8_lossy(&buf[..n])),
        Ok(Err(e)) => panic!("{e}"),
        Err(_) => panic!("the connection stayed open"),
    }
    trickle.abort();
}

#[tokio::test]
async fn an_oversized_request_head_is_refused() {
    let server = start(Arc::new(State::default()), HttpConfig::default()).await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    let big = "a".repeat(16 * 1024);
    let request = format!("GET /livez HTTP/1.1\r\nHost: test\r\nX-Big: {big}\r\n\r\n");
    // The server may close before reading it all; only its answer matters.
    let _ = stream.write_all(request.as_bytes()).await;
    let mut raw = Vec::new();
    let _ = timeout(PATIENCE, stream.read_to_end(&mut raw)).await;
    let text = String::from_utf8_lossy(&raw);
    assert!(text.starts_with("HTTP/1.1 431 "), "{text}");
}

#[tokio::test]
async fn connections_beyond_the_bound_wait_until_one_ends() {
    let config = HttpConfig {
        request_timeout: PATIENCE,
        max_connections: 2,
    };
    let server = start(Arc::new(State::default()), config).await;
    // Two idle connections take both slots.
    let first = TcpStream::connect(server.addr).await.unwrap();
    let mut second = TcpStream::connect(server.addr).await.unwrap();

    // The kernel completes the third handshake, but the server does not accept it.
    let mut third = TcpStream::connect(server.addr).await.unwrap();
    third
        .write_all(b"GET /livez HTTP/1.1\r\nHost: test\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 64];
    assert!(
        timeout(Duration::from_millis(500), third.read(&mut buf)).await.is_err(),
        "the third connection was served while two were open"
    );

    drop(first);
    let reply = read_reply(&mut third).await;
    assert_eq!((reply.status, reply.body.as_str()), (200, "ok\n"));

    // The freed slot went to the third; the second is still served normally.
    second
        .write_all(b"GET /livez HTTP/1.1\r\nHost: test\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(read_reply(&mut second).await.status, 200);
}

#[test]
fn metrics_text_carries_every_metric_with_its_value() {
    let m = Metrics::default();
    m.reconciled(Duration::from_micros(800));
    m.reconciled(Duration::from_millis(30));
    m.reconcile_failed("Api409");
    m.status_patched();
    m.status_patched();
    m.grant_applied();
    m.grant_deleted();
    m.event_published();
    m.event_published();
    m.event_published();
    m.write_failed(WriteKind::Grant, "Forbidden");
    m.write_failed(WriteKind::Grant, "Forbidden");
    m.write_failed(WriteKind::Lease, "Conflict");
    m.set_unreadable("PrivateImage", 3);
    m.set_unreadable("PrivateImage", 2);
    m.watch_error("Namespace");
    m.watch_error("Namespace");
    m.set_leader(true);

    assert_eq!(m.status_patches(), 2);
    assert_eq!(m.write_errors(WriteKind::Grant, "Forbidden"), 2);
    assert_eq!(m.write_errors(WriteKind::Lease, "Conflict"), 1);
    assert_eq!(m.write_errors(WriteKind::Status, "Forbidden"), 0);

    let pairs = BTreeMap::from([("Accepted", 4), ("Pending", 1), ("Rejected", 0), ("Removed", 0)]);
    let samples = parse(&m.encode(&pairs));
    let expect = [
        (r#"ims_pairs{state="Accepted"}"#, 4.0),
        (r#"ims_pairs{state="Pending"}"#, 1.0),
        (r#"ims_pairs{state="Rejected"}"#, 0.0),
        (r#"ims_pairs{state="Removed"}"#, 0.0),
        ("ims_reconciles_total", 3.0),
        (r#"ims_reconcile_errors_total{reason="Api409"}"#, 1.0),
        ("ims_reconcile_duration_seconds_count", 2.0),
        (r#"ims_reconcile_duration_seconds_bucket{le="0.001"}"#, 1.0),
        (r#"ims_reconcile_duration_seconds_bucket{le="0.025"}"#, 1.0),
        (r#"ims_reconcile_duration_seconds_bucket{le="0.05"}"#, 2.0),
        (r#"ims_reconcile_duration_seconds_bucket{le="+Inf"}"#, 2.0),
        ("ims_status_patches_total", 2.0),
        ("ims_grant_applies_total", 1.0),
        ("ims_grant_deletes_total", 1.0),
        ("ims_events_total", 3.0),
        (r#"ims_write_errors_total{kind="grant",reason="Forbidden"}"#, 2.0),
        (r#"ims_write_errors_total{kind="lease",reason="Conflict"}"#, 1.0),
        (r#"ims_unreadable_objects{kind="PrivateImage"}"#, 2.0),
        (r#"ims_watch_restarts_total{kind="Namespace"}"#, 2.0),
        ("ims_leader", 1.0),
    ];
    for (series, value) in expect {
        assert_eq!(samples.get(series), Some(&value), "{series} in {samples:#?}");
    }
    let sum = samples["ims_reconcile_duration_seconds_sum"];
    assert!((sum - 0.0308).abs() < 1e-9, "{sum}");

    m.set_leader(false);
    let pairs = BTreeMap::from([("Accepted", 3)]);
    let samples = parse(&m.encode(&pairs));
    assert_eq!(samples["ims_leader"], 0.0);
    assert_eq!(samples[r#"ims_pairs{state="Accepted"}"#], 3.0);
}

#[tokio::test]
async fn metrics_endpoint_serves_the_state_s_metrics() {
    let state = Arc::new(State::default());
    let server = start(state.clone(), HttpConfig::default()).await;
    state.metrics.reconcile_failed("Transport");
    state.metrics.set_leader(true);
    let reply = send(server.addr, "GET", "/metrics").await;
    let samples = parse(&reply.body);
    assert_eq!(samples[r#"ims_reconcile_errors_total{reason="Transport"}"#], 1.0);
    assert_eq!(samples["ims_leader"], 1.0);
    assert_eq!(samples["ims_reconciles_total"], 1.0);
    assert_eq!(reply.body, state.metrics_text());
}
