//! A destination's TLS options: the client certificate it presents to its endpoint (mutual
//! TLS) and the certificate authorities it trusts instead of the public roots (a private
//! PKI). Everything is checked when the destination is validated, so a certificate that is
//! not PEM or a key that is not the certificate's is refused naming its field, never found
//! out at the first delivery. Whether the certificate is valid now is checked when it is
//! written ([`DestinationTls::check_current`]) and before each attempt: one that expires
//! while stored fails its deliveries with a clear error rather than removing its
//! destination from the catalog. The key is a secret: no `Debug` here shows it.

use std::fmt;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
use sha2::{Digest, Sha256};

/// A destination's TLS options (at least one of them is set).
#[derive(Clone, PartialEq, Eq)]
pub struct DestinationTls {
    /// The client certificate chain and its key, as one PEM text (what reqwest's
    /// `Identity::from_pem` reads), written from what was checked: nothing else that the
    /// fields held (another key, another kind of block) reaches the TLS client.
    identity: Option<String>,
    /// When the client certificate (the chain's first) is valid, unix seconds: from, until.
    identity_validity: Option<(i64, i64)>,
    /// The certificate authorities trusted for the endpoint's certificate, PEM.
    authorities: Option<String>,
    /// A digest of all of it: a client built for these options serves while it is the same.
    fingerprint: [u8; 32],
}

/// Which field of the destination a [`TlsProblem`] is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsField {
    /// `client_certificate`.
    Certificate,
    /// `client_key`.
    Key,
    /// `ca_certificates`.
    Authorities,
}

impl TlsField {
    /// The field's name in a destination.
    pub fn name(self) -> &'static str {
        match self {
            Self::Certificate => "client_certificate",
            Self::Key => "client_key",
            Self::Authorities => "ca_certificates",
        }
    }
}

/// Why a destination's TLS options are refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsProblem {
    /// The field at fault.
    pub field: TlsField,
    /// What is wrong with it (never the key).
    pub problem: String,
}

impl DestinationTls {
    /// Checks a destination's TLS fields: a certificate and its key come together; the
    /// certificate is PEM and the key is its key; the authorities are PEM certificates.
    /// `None` when none is set.
    pub fn parse(
        certificate: Option<&str>,
        key: Option<&str>,
        authorities: Option<&str>,
    ) -> Result<Option<DestinationTls>, TlsProblem> {
        let problem = |field, problem: &str| TlsProblem {
            field,
            problem: problem.to_owned(),
        };
        let (identity, identity_validity) = match (certificate, key) {
            (None, None) => (None, None),
            (Some(_), None) => {
                return Err(problem(
                    TlsField::Key,
                    "is needed with a client_certificate: give its private key (PEM)",
                ));
            }
            (None, Some(_)) => {
                return Err(problem(
                    TlsField::Certificate,
                    "is needed with a client_key: give the key's certificate (PEM)",
                ));
            }
            (Some(certificate), Some(key)) => {
                let (identity, validity) = check_identity(certificate, key)?;
                (Some(identity), Some(validity))
            }
        };
        if let Some(authorities) = authorities {
            let certificates = certificates_of(authorities, TlsField::Authorities)?;
            for (index, der) in certificates.iter().enumerate() {
                if x509_parser::parse_x509_certificate(der).is_err() {
                    let what = format!("certificate #{} is not an X.509 certificate", index + 1);
                    return Err(problem(TlsField::Authorities, &what));
                }
            }
        }
        if identity.is_none() && authorities.is_none() {
            return Ok(None);
        }
        let mut digest = Sha256::new();
        for part in [identity.as_deref(), authorities] {
            let part = part.unwrap_or_default();
            digest.update((part.len() as u64).to_be_bytes());
            digest.update(part.as_bytes());
        }
        Ok(Some(DestinationTls {
            identity,
            identity_validity,
            authorities: authorities.map(str::to_owned),
            fingerprint: digest.finalize().into(),
        }))
    }

    /// The client certificate chain and key as one PEM text, to build a client with only.
    pub fn identity_pem(&self) -> Option<&str> {
        self.identity.as_deref()
    }

    /// Whether the client certificate, if there is one, is valid at `now` (unix seconds);
    /// the problem says since or until when it is not.
    pub fn check_current(&self, now: i64) -> Result<(), TlsProblem> {
        let problem = |problem: String| TlsProblem {
            field: TlsField::Certificate,
            problem,
        };
        match self.identity_validity {
            Some((_, not_after)) if not_after <= now => {
                Err(problem(format!("expired at {}", rfc3339(not_after))))
            }
            Some((not_before, _)) if not_before > now => Err(problem(format!(
                "is not valid before {}",
                rfc3339(not_before)
            ))),
            _ => Ok(()),
        }
    }

    /// The authorities trusted for the endpoint's certificate (PEM), if the destination
    /// names its own.
    pub fn authorities_pem(&self) -> Option<&str> {
        self.authorities.as_deref()
    }

    /// A digest of every option: equal for equal options.
    pub fn fingerprint(&self) -> [u8; 32] {
        self.fingerprint
    }
}

impl fmt::Debug for DestinationTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DestinationTls")
            .field("client_certificate", &self.identity.is_some())
            .field("ca_certificates", &self.authorities.is_some())
            .finish_non_exhaustive()
    }
}

/// The certificates of a PEM text: at least one, and nothing in it unreadable.
fn certificates_of(pem: &str, field: TlsField) -> Result<Vec<CertificateDer<'static>>, TlsProblem> {
    let certificates: Result<Vec<_>, _> = CertificateDer::pem_slice_iter(pem.as_bytes()).collect();
    match certificates {
        Ok(certificates) if !certificates.is_empty() => Ok(certificates),
        Ok(_) => Err(TlsProblem {
            field,
            problem: "holds no `-----BEGIN CERTIFICATE-----` block".into(),
        }),
        Err(e) => Err(TlsProblem {
            field,
            problem: format!("is not PEM: {e}"),
        }),
    }
}

/// Checks a client certificate and key; the identity as one PEM text of the chain and the
/// key checked, and when the certificate is valid (from, until).
fn check_identity(certificate: &str, key: &str) -> Result<(String, (i64, i64)), TlsProblem> {
    let problem = |field, problem: String| TlsProblem { field, problem };
    let chain = certificates_of(certificate, TlsField::Certificate)?;
    let (_, leaf) = x509_parser::parse_x509_certificate(&chain[0]).map_err(|e| {
        problem(
            TlsField::Certificate,
            format!("is not an X.509 certificate: {e}"),
        )
    })?;
    let validity = leaf.validity();
    let validity = (
        validity.not_before.timestamp(),
        validity.not_after.timestamp(),
    );
    // The key's own parse error may quote it: only its kind is said.
    let private = PrivateKeyDer::from_pem_slice(key.as_bytes()).map_err(|_| {
        problem(
            TlsField::Key,
            "is not a PEM private key (PKCS#8, PKCS#1 RSA or SEC1 EC)".into(),
        )
    })?;
    let mut identity: String = chain
        .iter()
        .map(|certificate| pem_block("CERTIFICATE", certificate))
        .collect();
    identity.push_str(&pem_block(
        match &private {
            PrivateKeyDer::Pkcs1(_) => "RSA PRIVATE KEY",
            PrivateKeyDer::Sec1(_) => "EC PRIVATE KEY",
            _ => "PRIVATE KEY",
        },
        private.secret_der(),
    ));
    let provider = rustls::crypto::ring::default_provider();
    let signing = provider
        .key_provider
        .load_private_key(private)
        .map_err(|_| {
            problem(
                TlsField::Key,
                "is not a key rustls can sign with (RSA, ECDSA P-256/P-384 or Ed25519)".into(),
            )
        })?;
    let certified = rustls::sign::CertifiedKey::new(chain, signing);
    match certified.keys_match() {
        Ok(()) => Ok((identity, validity)),
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => Err(
            problem(TlsField::Key, "is not the client_certificate's key".into()),
        ),
        Err(e) => Err(problem(
            TlsField::Certificate,
            format!("cannot be checked against its key: {e}"),
        )),
    }
}

/// `der` as a PEM block of `label`.
fn pem_block(label: &str, der: &[u8]) -> String {
    use base64::{Engine, engine::general_purpose::STANDARD};
    let encoded = STANDARD.encode(der);
    let mut block = format!("-----BEGIN {label}-----\n");
    for line in encoded.as_bytes().chunks(64) {
        block.push_str(&String::from_utf8_lossy(line));
        block.push('\n');
    }
    block.push_str(&format!("-----END {label}-----\n"));
    block
}

/// `seconds` since the epoch, as RFC 3339.
fn rfc3339(seconds: i64) -> String {
    chrono::DateTime::from_timestamp(seconds, 0)
        .map(|t| t.to_rfc3339())
        .unwrap_or_else(|| seconds.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A self-signed certificate and its key, valid from `from` to `until` (unix seconds).
    fn identity(from: i64, until: i64) -> (String, String) {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params = rcgen::CertificateParams::new(vec!["client.test".into()]).expect("p");
        params.not_before = rcgen::date_time_ymd(1970, 1, 1) + time_offset(from);
        params.not_after = rcgen::date_time_ymd(1970, 1, 1) + time_offset(until);
        let cert = params.self_signed(&key).expect("cert");
        (cert.pem(), key.serialize_pem())
    }

    fn time_offset(seconds: i64) -> std::time::Duration {
        std::time::Duration::from_secs(seconds as u64)
    }

    const NOW: i64 = 1_800_000_000;

    #[test]
    fn a_certificate_with_its_key_and_authorities_are_read() {
        let (cert, key) = identity(NOW - 10, NOW + 3600);
        let tls = DestinationTls::parse(Some(&cert), Some(&key), Some(&cert))
            .expect("valid")
            .expect("set");
        assert_eq!(tls.check_current(NOW), Ok(()));
        // Written from what was checked: the certificate and the key, nothing else.
        let (_, extra_key) = identity(NOW - 10, NOW + 3600);
        let noisy_key = format!(
            "{key}\n-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n{extra_key}"
        );
        let noisy = DestinationTls::parse(Some(&cert), Some(&noisy_key), None)
            .expect("the first key is the certificate's")
            .expect("set");
        assert_eq!(
            noisy.identity_pem(),
            Some(format!("{}{}", cert, key).as_str())
        );
        assert_eq!(tls.authorities_pem(), Some(cert.as_str()));
        let debug = format!("{tls:?}");
        assert!(!debug.contains("PRIVATE"), "{debug}");
        let authorities_only = DestinationTls::parse(None, None, Some(&cert))
            .expect("valid")
            .expect("set");
        assert_eq!(authorities_only.identity_pem(), None);
        assert_ne!(authorities_only.fingerprint(), tls.fingerprint());
        assert_eq!(DestinationTls::parse(None, None, None), Ok(None));
    }

    #[test]
    fn a_certificate_out_of_its_validity_is_read_but_not_current() {
        let (expired, expired_key) = identity(NOW - 7200, NOW - 3600);
        let (future, future_key) = identity(NOW + 3600, NOW + 7200);
        for (cert, key, says) in [
            (expired, expired_key, "expired at 2027-01-15T07:00:00+00:00"),
            (
                future,
                future_key,
                "is not valid before 2027-01-15T09:00:00+00:00",
            ),
        ] {
            let tls = DestinationTls::parse(Some(&cert), Some(&key), None)
                .expect("readable")
                .expect("set");
            let refused = tls.check_current(NOW).expect_err("not current");
            assert_eq!(refused.field, TlsField::Certificate);
            assert_eq!(refused.problem, says);
        }
    }

    #[test]
    fn bad_and_mismatched_material_is_refused_naming_the_field() {
        let (cert, key) = identity(NOW - 10, NOW + 3600);
        let (_, other_key) = identity(NOW - 10, NOW + 3600);
        type Case<'a> = (
            Option<&'a str>,
            Option<&'a str>,
            Option<&'a str>,
            TlsField,
            &'a str,
        );
        let cases: [Case; 6] = [
            (Some(&cert), None, None, TlsField::Key, "is needed"),
            (None, Some(&key), None, TlsField::Certificate, "is needed"),
            (
                Some("not pem"),
                Some(&key),
                None,
                TlsField::Certificate,
                "no `-----BEGIN",
            ),
            (
                Some(&cert),
                Some("junk"),
                None,
                TlsField::Key,
                "not a PEM private key",
            ),
            (
                Some(&cert),
                Some(&other_key),
                None,
                TlsField::Key,
                "not the client_certificate's key",
            ),
            (
                None,
                None,
                Some("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"),
                TlsField::Authorities,
                "not an X.509",
            ),
        ];
        for (certificate, key, authorities, field, says) in cases {
            let refused =
                DestinationTls::parse(certificate, key, authorities).expect_err("refused");
            assert_eq!(refused.field, field, "{}", refused.problem);
            assert!(refused.problem.contains(says), "{}", refused.problem);
            assert!(
                !refused.problem.contains("PRIVATE KEY"),
                "{}",
                refused.problem
            );
        }
    }
}
