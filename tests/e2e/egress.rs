//! Egress through a real forward proxy on loopback, with a username and password: proxy.py
//! for HTTP, pproxy for SOCKS5 (pproxy reads `Proxy-Authorization` case-sensitively, so it
//! refuses HTTP/1 clients that send header names in lowercase, as hyper does). Deliveries
//! leave through it; the SSRF guard still refuses a
//! destination whose host resolves inside and one that names the proxy itself, before the
//! proxy is asked; a proxy that is down is a retryable failure that names the proxy and
//! never its password, and the delivery goes out once the proxy is back. Through the HTTP
//! proxy, an https endpoint is reached in a CONNECT tunnel, TLS end to end.

use std::{
    os::unix::process::CommandExt,
    process::{Child, Command, Stdio},
    time::Duration,
};

use hookflow_core::DeliveryOutcome;
use hookflow_e2e::{
    events, eventually, free_port,
    scenario::Scenario,
    temporal,
    tls::{Authority, TlsReceiver, der_of},
    tool,
};

const PASSWORD: &str = "proxysecretpw";

/// A forward proxy of `scheme` (`http` or `socks5`) on `port`, with credentials, in a
/// process group of its own (proxy.py forks its acceptors), all of it stopped on drop.
struct Proxy {
    child: Child,
    port: u16,
}

impl Proxy {
    fn start(scheme: &str, port: u16) -> Proxy {
        let port_text = port.to_string();
        let auth = format!("hookflow:{PASSWORD}");
        let mut command = if scheme == "http" {
            let mut command = Command::new(tool("proxy"));
            command.args([
                "--hostname",
                "127.0.0.1",
                "--port",
                &port_text,
                "--basic-auth",
                &auth,
                "--num-workers",
                "1",
                "--num-acceptors",
                "1",
            ]);
            command
        } else {
            let mut command = Command::new(tool("pproxy"));
            // --auth 0: every connection authenticates, none is remembered by address.
            command.args([
                "-l",
                &format!("socks5://127.0.0.1:{port}/#{auth}"),
                "--auth",
                "0",
            ]);
            command
        };
        let child = command
            .process_group(0)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("a proxy: deploy/local/install-deps.sh installs proxy.py and pproxy");
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "pproxy did not listen"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Proxy { child, port }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill").args(["-9", "--", &group]).status();
        let _ = self.child.wait();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok()
            && std::time::Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn deliveries_leave_through_the_proxy_and_the_guard_holds_in_front_of_it() {
    for scheme in ["http", "socks5"] {
        let port = free_port();
        let mut proxy = Some(Proxy::start(scheme, port));
        let mut s = Scenario::new().await;
        s.deployment
            .proxy(&format!("{scheme}://hookflow:{PASSWORD}@127.0.0.1:{port}"));
        let receiver_port = s.receiver.addr.port();
        s.destination(
            "out",
            "out",
            "retry_schedule_ms = [1000, 1000, 1000, 1000, 1000, 1000, 1000, 1000, 1000, 1000]",
        );
        // localhost is not allow-listed (127.0.0.1 is): it resolves inside (https, as every
        // host not allow-listed must be).
        let inside = format!("https://localhost:{receiver_port}/inside");
        s.deployment.destination("inside", s.team, &inside, "");
        let at_proxy = format!("http://127.0.0.1:{port}/");
        s.deployment.destination("at-proxy", s.team, &at_proxy, "");
        // Only action 2's events, given up on quickly: its result shows the last failure.
        s.destination(
            "down",
            "down",
            "actions = [2]\nretry_schedule_ms = [200]\nmax_age_ms = 1500",
        );
        let process = s.deployment.start();

        let first = s.produce_events(1).await[0];
        let result = temporal::result(&s.temporal, &format!("out:{first}")).await;
        assert_eq!(result.outcome, DeliveryOutcome::Delivered, "{scheme}");
        assert_eq!(s.receiver.received_on("out").len(), 1, "{scheme}");
        for (id, says) in [("inside", "localhost"), ("at-proxy", "egress proxy")] {
            let result = temporal::result(&s.temporal, &format!("{id}:{first}")).await;
            assert_eq!(
                (result.outcome, result.attempts),
                (DeliveryOutcome::FailedPermanently, 1),
                "{scheme} {id}"
            );
            let error = result.last_error.unwrap_or_default();
            assert!(error.contains(says), "{scheme} {id}: {error}");
        }
        assert!(s.receiver.received_on("inside").is_empty());

        // The proxy goes down: attempts fail, retryably, naming the proxy only.
        drop(proxy.take());
        let (second, event) = events::event(s.team, &[(1, "Any"), (2, "Other")]);
        s.produce(&[&event]).await;
        let down = temporal::result(&s.temporal, &format!("down:{second}")).await;
        assert_eq!(down.outcome, DeliveryOutcome::GaveUp, "{scheme}: {down:?}");
        assert!(down.attempts >= 2, "{scheme}: retried: {down:?}");
        let error = down.last_error.unwrap_or_default();
        let shown = format!("through the egress proxy {scheme}://127.0.0.1:{port}");
        assert!(error.contains(&shown), "{scheme}: {error}");
        assert!(!error.contains(PASSWORD), "{scheme}: {error}");
        assert!(!s.deployment.logs().contains(PASSWORD), "{scheme}: logs");
        assert!(
            process
                .metric(r#"hookflow_delivery_attempts_total{class="connect"}"#)
                .await
                >= 2.0
        );
        // Back: the delivery goes out on a retry.
        let _back = Proxy::start(scheme, port);
        let id = format!("out:{second}");
        eventually(
            Duration::from_secs(30),
            "the retry through the proxy",
            || async {
                let result = temporal::result(&s.temporal, &id).await;
                (result.outcome == DeliveryOutcome::Delivered).then_some(result.attempts)
            },
        )
        .await;
        let result = temporal::result(&s.temporal, &id).await;
        assert!(result.attempts >= 2, "{scheme}: {result:?}");
        assert_eq!(s.receiver.received_on("out").len(), 2, "{scheme}");
    }
}

/// A destination may choose one of the deployment's named proxies; the others go direct.
#[tokio::test(flavor = "multi_thread")]
async fn a_destination_leaves_through_the_named_proxy_it_chooses() {
    let port = free_port();
    let proxy = Proxy::start("socks5", port);
    let mut s = Scenario::new().await;
    s.deployment.named_proxy(
        "eu",
        &format!("socks5://hookflow:{PASSWORD}@127.0.0.1:{port}"),
    );
    s.destination(
        "via-eu",
        "via-eu",
        "proxy = \"eu\"\nretry_schedule_ms = [200]\nmax_age_ms = 1500",
    );
    s.destination("direct", "direct", "");
    let _process = s.deployment.start();

    let first = s.produce_events(1).await[0];
    for id in ["via-eu", "direct"] {
        let result = temporal::result(&s.temporal, &format!("{id}:{first}")).await;
        assert_eq!(result.outcome, DeliveryOutcome::Delivered, "{id}");
    }
    // Without the proxy only the destination that chose it fails, naming the proxy.
    drop(proxy);
    let second = s.produce_events(1).await[0];
    let direct = temporal::result(&s.temporal, &format!("direct:{second}")).await;
    assert_eq!(direct.outcome, DeliveryOutcome::Delivered);
    let via = temporal::result(&s.temporal, &format!("via-eu:{second}")).await;
    assert_eq!(via.outcome, DeliveryOutcome::GaveUp);
    let error = via.last_error.unwrap_or_default();
    assert!(
        error.contains(&format!(
            "through the egress proxy socks5://127.0.0.1:{port}"
        )),
        "{error}"
    );
    assert_eq!(s.receiver.received_on("via-eu").len(), 1);
    assert_eq!(s.receiver.received_on("direct").len(), 2);
}

/// Through an HTTP proxy, an https endpoint is reached in a CONNECT tunnel: TLS is end to
/// end, so the endpoint checks the destination's own client certificate.
#[tokio::test(flavor = "multi_thread")]
async fn an_https_endpoint_is_reached_through_a_connect_tunnel_with_its_certificate() {
    let port = free_port();
    let _proxy = Proxy::start("http", port);
    let servers = Authority::new("tunnel test servers");
    let clients = Authority::new("tunnel test clients");
    let receiver = TlsReceiver::start(&servers.issue(&["127.0.0.1"]), &clients).await;
    let client = clients.issue(&["tunnelled.client.test"]);
    let mut s = Scenario::new().await;
    s.deployment
        .proxy(&format!("http://hookflow:{PASSWORD}@127.0.0.1:{port}"))
        .destination(
            "tunnelled",
            s.team,
            &receiver.url("tunnelled"),
            &format!(
                "client_certificate = \"\"\"\n{}\"\"\"\nclient_key = \"\"\"\n{}\"\"\"\n\
                 ca_certificates = \"\"\"\n{}\"\"\"\n",
                client.certificate,
                client.key,
                servers.pem()
            ),
        );
    let _process = s.deployment.start();
    let uuid = s.produce_events(1).await[0];
    let result = temporal::result(&s.temporal, &format!("tunnelled:{uuid}")).await;
    assert_eq!(
        (result.outcome, result.attempts),
        (DeliveryOutcome::Delivered, 1),
        "{result:?}"
    );
    let received = receiver.received_on("tunnelled");
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].client_certificate, der_of(&client.certificate));
}
