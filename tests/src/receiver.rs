//! A real webhook receiver on 127.0.0.1:0 that records every request and answers from a
//! per-path script (for example 503, 503, then 200), the last answer repeating; and raw TCP
//! endpoints that misbehave below HTTP (never answer, stall the body, reset).

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use axum::{
    Router,
    body::Bytes,
    extract::Path,
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::post,
};

/// One answer of the script.
#[derive(Debug, Clone)]
pub enum Answer {
    /// This status, with an optional Retry-After (seconds).
    Status(u16, Option<u64>),
    /// Sleep this long, then 200 (a hanging endpoint).
    Hang(Duration),
}

/// A request the receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    /// The path's last segment.
    pub path: String,
    /// Headers.
    pub headers: HeaderMap,
    /// Body.
    pub body: Bytes,
    /// When it arrived.
    pub at: Instant,
}

impl Received {
    /// A header's value, or "".
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }
}

#[derive(Default)]
struct State {
    received: Vec<Received>,
    scripts: HashMap<String, Vec<Answer>>,
}

/// The receiver.
#[derive(Clone)]
pub struct Receiver {
    /// Where it listens.
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
}

impl Receiver {
    /// Starts a receiver; paths without a script answer 200.
    pub async fn start() -> Receiver {
        let state = Arc::new(Mutex::new(State::default()));
        let shared = state.clone();
        let app = Router::new().route(
            "/{path}",
            post(
                move |Path(path): Path<String>, headers: HeaderMap, body: Bytes| {
                    let state = shared.clone();
                    async move {
                        let answer = {
                            let mut state = state.lock().expect("receiver state");
                            let seen = state.received.iter().filter(|r| r.path == path).count();
                            state.received.push(Received {
                                path: path.clone(),
                                headers,
                                body,
                                at: Instant::now(),
                            });
                            state
                                .scripts
                                .get(&path)
                                .and_then(|s| s.get(seen.min(s.len().saturating_sub(1))).cloned())
                        };
                        respond(answer).await
                    }
                },
            ),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind receiver");
        let addr = listener.local_addr().expect("receiver addr");
        tokio::spawn(async move { axum::serve(listener, app).await.expect("receiver") });
        Receiver { addr, state }
    }

    /// Sets the answers of `path`.
    pub fn script(&self, path: &str, answers: Vec<Answer>) {
        self.state
            .lock()
            .expect("receiver state")
            .scripts
            .insert(path.to_owned(), answers);
    }

    /// Its origin, `http://127.0.0.1:<port>`.
    pub fn origin(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The URL of `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}/{path}", self.addr)
    }

    /// Everything received so far.
    pub fn received(&self) -> Vec<Received> {
        self.state.lock().expect("receiver state").received.clone()
    }

    /// How many different `webhook-id`s arrived on `path`.
    pub fn distinct_deliveries_on(&self, path: &str) -> usize {
        let ids: std::collections::HashSet<String> = self
            .received_on(path)
            .iter()
            .map(|r| r.header("webhook-id").to_owned())
            .collect();
        ids.len()
    }

    /// Waits until a request arrived for each of `expected` webhook ids and for no other
    /// (panics after `timeout`); how many requests arrived for each.
    pub async fn wait_for_ids(
        &self,
        expected: &std::collections::BTreeSet<String>,
        timeout: Duration,
    ) -> HashMap<String, usize> {
        crate::eventually(
            timeout,
            "a request for every expected webhook id",
            || async {
                let mut seen: HashMap<String, usize> = HashMap::new();
                for request in self.received() {
                    *seen
                        .entry(request.header("webhook-id").to_owned())
                        .or_default() += 1;
                }
                let ids: std::collections::BTreeSet<&String> = seen.keys().collect();
                (ids == expected.iter().collect()).then_some(seen)
            },
        )
        .await
    }

    /// Requests received on `path`.
    pub fn received_on(&self, path: &str) -> Vec<Received> {
        self.received()
            .into_iter()
            .filter(|r| r.path == path)
            .collect()
    }
}

async fn respond(answer: Option<Answer>) -> Response {
    match answer {
        None => StatusCode::OK.into_response(),
        Some(Answer::Status(status, retry_after)) => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            match retry_after {
                Some(seconds) => (status, [("retry-after", seconds.to_string())]).into_response(),
                None => status.into_response(),
            }
        }
        Some(Answer::Hang(duration)) => {
            tokio::time::sleep(duration).await;
            StatusCode::OK.into_response()
        }
    }
}

/// How a misbehaving endpoint treats every connection.
#[derive(Debug, Clone, Copy)]
pub enum Misbehaviour {
    /// Accepts it and never answers.
    Silent,
    /// Reads the request, answers `200 OK` headers announcing a body, and never sends it.
    StalledBody,
    /// Resets it (RST) at once.
    Reset,
    /// Answers `200 OK` announcing a 10 GB body and streams it as fast as it is read.
    EndlessBody,
}

/// Starts a raw TCP endpoint on 127.0.0.1:0 that misbehaves; its address and a count of
/// the connections it got.
pub async fn misbehaving(how: Misbehaviour) -> (SocketAddr, Arc<AtomicUsize>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let connections = Arc::new(AtomicUsize::new(0));
    let counted = connections.clone();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            counted.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                match how {
                    Misbehaviour::Silent => {
                        tokio::time::sleep(Duration::from_secs(300)).await;
                    }
                    Misbehaviour::StalledBody => {
                        let mut request = vec![0; 64 * 1024];
                        let _ = socket.read(&mut request).await;
                        let head = "HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\n{\"ok\":";
                        let _ = socket.write_all(head.as_bytes()).await;
                        tokio::time::sleep(Duration::from_secs(300)).await;
                    }
                    Misbehaviour::EndlessBody => {
                        let mut request = vec![0; 64 * 1024];
                        let _ = socket.read(&mut request).await;
                        let head = "HTTP/1.1 200 OK\r\ncontent-length: 10000000000\r\n\r\n";
                        let chunk = vec![b'x'; 256 * 1024];
                        if socket.write_all(head.as_bytes()).await.is_ok() {
                            while socket.write_all(&chunk).await.is_ok() {}
                        }
                    }
                    Misbehaviour::Reset => {
                        // A zero linger turns the close into a reset.
                        let _ = socket.set_zero_linger();
                        drop(socket);
                    }
                }
            });
        }
    });
    (addr, connections)
}
