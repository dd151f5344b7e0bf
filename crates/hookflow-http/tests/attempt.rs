//! One attempt against real HTTP servers on 127.0.0.1:0: statuses, Retry-After, redirects
//! not followed, timeouts, refused connections and the SSRF guard.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use axum::{Router, http::StatusCode, response::IntoResponse, routing::post};
use hookflow_core::AttemptErrorKind;
use hookflow_http::{AttemptRequest, DeliveryClient, HttpSettings};
use url::Url;

async fn serve(router: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, router).await.expect("serve") });
    addr
}

fn client(allowed: &[&str]) -> DeliveryClient {
    DeliveryClient::new(&HttpSettings {
        connect_timeout: Duration::from_secs(1),
        allowed_hosts: hookflow_core::AllowList::new(allowed).expect("allow-list"),
        user_agent: "hookflow/test".into(),
        max_response_body_bytes: 1024,
        proxy: None,
        proxies: Default::default(),
    })
    .expect("client")
}

fn request(url: &Url, timeout_ms: u64) -> AttemptRequest<'_> {
    AttemptRequest {
        url,
        headers: vec![("webhook-id".into(), "d:1".into())],
        body: b"{}".to_vec(),
        timeout: Duration::from_millis(timeout_ms),
        proxy: None,
    }
}

#[tokio::test]
async fn reports_status_retry_after_and_never_follows_redirects() {
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    let addr = serve(
        Router::new()
            .route("/ok", post(|| async { StatusCode::NO_CONTENT }))
            .route(
                "/busy",
                post(|| async { (StatusCode::TOO_MANY_REQUESTS, [("retry-after", "7")]) }),
            )
            .route(
                "/moved",
                post(|| async { (StatusCode::FOUND, [("location", "/target")]) }),
            )
            .route(
                "/target",
                post(move || {
                    counter.fetch_add(1, Ordering::SeqCst);
                    async { StatusCode::OK }
                }),
            ),
    )
    .await;
    let client = client(&["127.0.0.1"]);
    let url = |p: &str| Url::parse(&format!("http://{addr}{p}")).expect("url");

    let ok = client.send(request(&url("/ok"), 1000)).await;
    assert_eq!((ok.status, ok.error), (Some(204), None));

    let busy = client.send(request(&url("/busy"), 1000)).await;
    assert_eq!((busy.status, busy.retry_after_ms), (Some(429), Some(7_000)));

    let moved = client.send(request(&url("/moved"), 1000)).await;
    assert_eq!(moved.status, Some(302));
    assert_eq!(
        hits.load(Ordering::SeqCst),
        0,
        "the redirect target must not be requested"
    );
}

#[tokio::test]
async fn a_slow_endpoint_is_a_timeout_and_a_closed_port_a_connect_error() {
    let addr = serve(Router::new().route(
        "/slow",
        post(|| async {
            tokio::time::sleep(Duration::from_secs(5)).await;
            StatusCode::OK.into_response()
        }),
    ))
    .await;
    let client = client(&["127.0.0.1"]);
    let slow = Url::parse(&format!("http://{addr}/slow")).expect("url");
    let report = client.send(request(&slow, 200)).await;
    assert_eq!(
        report.error.map(|e| e.kind),
        Some(AttemptErrorKind::Timeout)
    );

    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr")
    };
    let url = Url::parse(&format!("http://{closed}/")).expect("url");
    let report = client.send(request(&url, 1000)).await;
    assert_eq!(
        report.error.map(|e| e.kind),
        Some(AttemptErrorKind::Connect)
    );
}

#[tokio::test]
async fn private_addresses_are_blocked_unless_allow_listed() {
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    let addr = serve(Router::new().route(
        "/",
        post(move || {
            counter.fetch_add(1, Ordering::SeqCst);
            async { StatusCode::OK }
        }),
    ))
    .await;
    let guarded = client(&[]);
    for url in [
        format!("http://{addr}/"),
        format!("http://localhost:{}/", addr.port()),
    ] {
        let url = Url::parse(&url).expect("url");
        let report = guarded.send(request(&url, 1000)).await;
        let error = report.error.expect("blocked");
        assert_eq!(
            error.kind,
            AttemptErrorKind::Blocked,
            "{url}: {}",
            error.message
        );
    }
    assert_eq!(
        hits.load(Ordering::SeqCst),
        0,
        "a blocked destination is never contacted"
    );

    let allowed = client(&["localhost"]);
    let url = Url::parse(&format!("http://localhost:{}/", addr.port())).expect("url");
    assert_eq!(allowed.send(request(&url, 1000)).await.status, Some(200));
    assert_eq!(hits.load(Ordering::SeqCst), 1);
}

/// A raw HTTP server answering every connection with `head` (status line and headers) and
/// then `body`: what it wrote in total, once the client went away, arrives on the channel.
async fn raw_server(
    head: &'static str,
    body: impl Fn() -> Option<Vec<u8>> + Send + Sync + 'static,
) -> (SocketAddr, tokio::sync::mpsc::UnboundedReceiver<usize>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (written_tx, written) = tokio::sync::mpsc::unbounded_channel();
    let body = Arc::new(body);
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let (body, written_tx) = (body.clone(), written_tx.clone());
            tokio::spawn(async move {
                let mut request = vec![0; 4096];
                let _ = socket.read(&mut request).await;
                let mut written = 0;
                if socket.write_all(head.as_bytes()).await.is_ok() {
                    // `None`: stall with the connection open.
                    loop {
                        let Some(chunk) = body() else {
                            tokio::time::sleep(Duration::from_secs(30)).await;
                            break;
                        };
                        if socket.write_all(&chunk).await.is_err() {
                            break;
                        }
                        written += chunk.len();
                    }
                }
                let _ = written_tx.send(written);
            });
        }
    });
    (addr, written)
}

#[tokio::test]
async fn the_status_decides_as_soon_as_the_headers_arrive() {
    // 200 and then a body that never comes: delivered, not a timeout to retry.
    let (addr, _) = raw_server("HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n", || None).await;
    let url = Url::parse(&format!("http://{addr}/")).expect("url");
    let report = client(&["127.0.0.1"]).send(request(&url, 500)).await;
    assert_eq!((report.status, report.error), (Some(200), None));

    // 503 with a stalled body is still the 503.
    let (addr, _) = raw_server(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-length: 100\r\n\r\n",
        || None,
    )
    .await;
    let url = Url::parse(&format!("http://{addr}/")).expect("url");
    let report = client(&["127.0.0.1"]).send(request(&url, 500)).await;
    assert_eq!((report.status, report.error), (Some(503), None));
}

#[tokio::test]
async fn an_endless_body_is_read_no_further_than_the_configured_prefix() {
    let (addr, mut written) = raw_server(
        "HTTP/1.1 200 OK\r\ncontent-length: 10000000000\r\n\r\n",
        || Some(vec![b'x'; 64 * 1024]),
    )
    .await;
    let url = Url::parse(&format!("http://{addr}/")).expect("url");
    let report = client(&["127.0.0.1"]).send(request(&url, 5_000)).await;
    assert_eq!((report.status, report.error), (Some(200), None));
    // The client read about 1 KiB and hung up; the server could only fill the socket
    // buffers before its writes failed. Reading to the timeout would take gigabytes.
    let total = written.recv().await.expect("the server's count");
    assert!(total < 32 << 20, "the server wrote {total} bytes");
}

#[tokio::test]
async fn an_allow_list_entry_with_a_port_exempts_that_port_only() {
    let hits = Arc::new(AtomicUsize::new(0));
    let router = |hits: Arc<AtomicUsize>| {
        Router::new().route(
            "/",
            post(move || {
                hits.fetch_add(1, Ordering::SeqCst);
                async { StatusCode::OK }
            }),
        )
    };
    let (listed, other) = (
        serve(router(hits.clone())).await,
        serve(router(hits.clone())).await,
    );
    let client = client(&[&format!("localhost:{}", listed.port())]);
    let url =
        |addr: SocketAddr| Url::parse(&format!("http://localhost:{}/", addr.port())).expect("url");
    assert_eq!(
        client.send(request(&url(listed), 1000)).await.status,
        Some(200)
    );
    let report = client.send(request(&url(other), 1000)).await;
    assert_eq!(
        report.error.map(|e| e.kind),
        Some(AttemptErrorKind::Blocked),
        "the same host on another port is guarded"
    );
    let literal = Url::parse(&format!("http://127.0.0.1:{}/", listed.port())).expect("url");
    assert_eq!(
        client
            .send(request(&literal, 1000))
            .await
            .error
            .map(|e| e.kind),
        Some(AttemptErrorKind::Blocked),
        "127.0.0.1 is not the listed host"
    );
    assert_eq!(hits.load(Ordering::SeqCst), 1);
}
