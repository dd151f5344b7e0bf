//! A private PKI made in the test (rcgen) and a real HTTPS receiver on 127.0.0.1 that
//! requires a client certificate issued by one authority (rustls' WebPKI client verifier):
//! it records, per request, the path and the client certificate the connection presented.

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use hyper::{Request, Response, body::Incoming, service::service_fn};
use hyper_util::rt::TokioIo;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};
use tokio_rustls::{
    TlsAcceptor,
    rustls::{
        RootCertStore, ServerConfig,
        pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
        server::WebPkiClientVerifier,
    },
};

/// A certificate authority of the test's own.
pub struct Authority {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A certificate an authority issued, with its key, as PEM.
#[derive(Clone)]
pub struct Issued {
    /// The certificate.
    pub certificate: String,
    /// Its private key.
    pub key: String,
}

impl Authority {
    /// A new self-signed authority called `name`.
    pub fn new(name: &str) -> Authority {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().expect("key");
        Authority {
            issuer: CertifiedIssuer::self_signed(params, key).expect("authority"),
        }
    }

    /// The authority's certificate, PEM.
    pub fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// A certificate for `names` (DNS names or IP addresses) issued by this authority.
    pub fn issue(&self, names: &[&str]) -> Issued {
        self.issue_with(names, |_| ())
    }

    /// A certificate for `names` that expired a day ago.
    pub fn issue_expired(&self, names: &[&str]) -> Issued {
        self.issue_with(names, |params| {
            let day = std::time::Duration::from_secs(86_400);
            let now = std::time::SystemTime::now();
            params.not_before = (now - 30 * day).into();
            params.not_after = (now - day).into();
        })
    }

    fn issue_with(&self, names: &[&str], adjust: impl FnOnce(&mut CertificateParams)) -> Issued {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names.clone()).expect("params");
        adjust(&mut params);
        params.distinguished_name.push(
            DnType::CommonName,
            names.first().cloned().unwrap_or_default(),
        );
        let key = KeyPair::generate().expect("key");
        let certificate = params.signed_by(&key, &*self.issuer).expect("issued");
        Issued {
            certificate: certificate.pem(),
            key: key.serialize_pem(),
        }
    }
}

/// A request the receiver got.
#[derive(Debug, Clone)]
pub struct TlsRequest {
    /// The path.
    pub path: String,
    /// The client certificate the connection presented (PEM-decoded DER).
    pub client_certificate: Vec<u8>,
    /// The `webhook-id` header.
    pub webhook_id: String,
}

/// The HTTPS receiver.
pub struct TlsReceiver {
    /// Where it listens.
    pub addr: SocketAddr,
    requests: Arc<Mutex<Vec<TlsRequest>>>,
    /// The connections whose handshake failed.
    refused: Arc<Mutex<usize>>,
}

impl TlsReceiver {
    /// Serves `server` (a certificate for 127.0.0.1), requiring a client certificate
    /// issued by `clients`; every request is answered 200.
    pub async fn start(server: &Issued, clients: &Authority) -> TlsReceiver {
        let mut roots = RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(clients.pem().as_bytes()).expect("ca"))
            .expect("root");
        let verifier = WebPkiClientVerifier::builder(Arc::new(roots))
            .build()
            .expect("verifier");
        let chain = vec![
            CertificateDer::from_pem_slice(server.certificate.as_bytes()).expect("server cert"),
        ];
        let key = PrivateKeyDer::from_pem_slice(server.key.as_bytes()).expect("server key");
        let config = ServerConfig::builder()
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain, key)
            .expect("server config");
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let requests = Arc::new(Mutex::new(Vec::new()));
        let refused = Arc::new(Mutex::new(0));
        let (shared, failures) = (requests.clone(), refused.clone());
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let (acceptor, shared, failures) =
                    (acceptor.clone(), shared.clone(), failures.clone());
                tokio::spawn(async move {
                    let mut tcp = tcp;
                    let Ok(tls) = acceptor.accept(&mut tcp).await else {
                        *failures.lock().expect("refused") += 1;
                        // Closed a moment after the alert, as servers do: the client reads
                        // the alert rather than a reset.
                        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                        return;
                    };
                    let presented = tls
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|chain| chain.first())
                        .map(|der| der.to_vec())
                        .unwrap_or_default();
                    let service = service_fn(move |request: Request<Incoming>| {
                        let header = |name: &str| {
                            request
                                .headers()
                                .get(name)
                                .and_then(|v| v.to_str().ok())
                                .unwrap_or_default()
                                .to_owned()
                        };
                        shared.lock().expect("requests").push(TlsRequest {
                            path: request.uri().path().trim_start_matches('/').to_owned(),
                            client_certificate: presented.clone(),
                            webhook_id: header("webhook-id"),
                        });
                        async { Ok::<_, Infallible>(Response::new(String::new())) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        TlsReceiver {
            addr,
            requests,
            refused,
        }
    }

    /// The URL of `path`.
    pub fn url(&self, path: &str) -> String {
        format!("https://{}/{path}", self.addr)
    }

    /// The requests on `path`.
    pub fn received_on(&self, path: &str) -> Vec<TlsRequest> {
        let requests = self.requests.lock().expect("requests");
        requests
            .iter()
            .filter(|r| r.path == path)
            .cloned()
            .collect()
    }

    /// How many handshakes failed (a client certificate refused, say).
    pub fn refused_handshakes(&self) -> usize {
        *self.refused.lock().expect("refused")
    }
}

/// The DER of a PEM certificate, to compare with what a connection presented.
pub fn der_of(pem: &str) -> Vec<u8> {
    CertificateDer::from_pem_slice(pem.as_bytes())
        .expect("certificate")
        .to_vec()
}
