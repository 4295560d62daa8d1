//! TLS for the QUIC acknowledgement channel, from PEM files: mutual TLS 1.3 with the ring
//! provider, both sides pinned to the private CA (`satcast-uplink keys init` makes it).
//! The uplink is the server and requires a client certificate the CA issued; a county is
//! the client and accepts only a server certificate the CA issued. Transport settings
//! (timeouts, stream limits) are each daemon's own.

use std::path::Path;
use std::sync::Arc;

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use thiserror::Error;

/// A time for [`check`], as rustls takes it.
pub use rustls::pki_types::UnixTime;

/// Why the TLS configuration could not be built.
#[derive(Debug, Error)]
pub enum TlsError {
    /// A certificate or key file could not be read.
    #[error("cannot read {path}: {why}")]
    Pem {
        /// The file.
        path: String,
        /// What went wrong.
        why: String,
    },
    /// The TLS configuration was refused.
    #[error("tls configuration: {0}")]
    Tls(String),
}

fn pem_error(path: &Path) -> impl Fn(rustls::pki_types::pem::Error) -> TlsError + '_ {
    move |e| TlsError::Pem { path: path.display().to_string(), why: e.to_string() }
}

fn tls_error(e: impl std::fmt::Display) -> TlsError {
    TlsError::Tls(e.to_string())
}

/// The first certificate in a PEM file.
pub fn read_certificate(path: &Path) -> Result<CertificateDer<'static>, TlsError> {
    CertificateDer::from_pem_file(path).map_err(pem_error(path))
}

/// Every certificate in a PEM file, leaf first.
pub fn read_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    CertificateDer::pem_file_iter(path).map_err(pem_error(path))?.collect::<Result<_, _>>().map_err(pem_error(path))
}

/// The first private key in a PEM file.
pub fn read_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(pem_error(path))
}

/// What either side reads, in this order (so the first bad file is the one named): the CA
/// certificate at `ca` as the only trust root, its own certificate chain and private key.
type Material = (rustls::RootCertStore, Vec<CertificateDer<'static>>, PrivateKeyDer<'static>);

fn read_material(ca: &Path, cert: &Path, key: &Path) -> Result<Material, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(read_certificate(ca)?).map_err(tls_error)?;
    Ok((roots, read_chain(cert)?, read_private_key(key)?))
}

fn ring() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A county's side: trusts only servers the CA at `ca` issued, and presents the client
/// certificate chain at `cert` with its key at `key`.
pub fn quic_client(ca: &Path, cert: &Path, key: &Path, alpn: &[u8]) -> Result<QuicClientConfig, TlsError> {
    let (roots, chain, key) = read_material(ca, cert, key)?;
    let mut tls = rustls::ClientConfig::builder_with_provider(ring())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(tls_error)?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .map_err(tls_error)?;
    tls.alpn_protocols = vec![alpn.to_vec()];
    QuicClientConfig::try_from(tls).map_err(tls_error)
}

/// The uplink's side: presents the certificate chain at `cert` with its key at `key`, and
/// requires every client to present a certificate the CA at `ca` issued.
pub fn quic_server(ca: &Path, cert: &Path, key: &Path, alpn: &[u8]) -> Result<QuicServerConfig, TlsError> {
    let (roots, chain, key) = read_material(ca, cert, key)?;
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), ring()).build().map_err(tls_error)?;
    let mut tls = rustls::ServerConfig::builder_with_provider(ring())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(tls_error)?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(tls_error)?;
    tls.alpn_protocols = vec![alpn.to_vec()];
    QuicServerConfig::try_from(tls).map_err(tls_error)
}

/// Which end of the acknowledgement channel a certificate is for, and the name it must carry.
#[derive(Debug, Clone, Copy)]
pub enum Role<'a> {
    /// A county's client certificate, naming `dns_name` (`<code>.county.satcast`).
    Client {
        /// The SAN the uplink looks for.
        dns_name: &'a str,
    },
    /// The uplink's server certificate, naming `dns_name` (what counties expect).
    Server {
        /// The SAN counties verify.
        dns_name: &'a str,
    },
}

/// Checks, without starting anything, what [`quic_client`] or [`quic_server`] would use and
/// what the peer will verify: every file parses, the private key belongs to the
/// certificate, and the certificate was issued by the CA, is valid at `now`, is for its
/// role and names `role`'s DNS name.
pub fn check(ca: &Path, cert: &Path, key: &Path, role: Role<'_>, now: UnixTime) -> Result<(), TlsError> {
    use rustls::client::danger::ServerCertVerifier as _;
    let (roots, chain, key_der) = read_material(ca, cert, key)?;
    let Some((leaf, intermediates)) = chain.split_first() else {
        return Err(TlsError::Pem { path: cert.display().to_string(), why: "no certificate in the file".into() });
    };
    rustls::sign::CertifiedKey::from_der(chain.clone(), key_der, &ring())
        .map_err(|e| TlsError::Tls(format!("{} does not belong to {}: {e}", key.display(), cert.display())))?;
    let not_issued = |e: rustls::Error| TlsError::Tls(format!("{} against the CA {}: {e}", cert.display(), ca.display()));
    let dns_name = match role {
        Role::Client { dns_name } => {
            let verifier =
                rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), ring()).build().map_err(tls_error)?;
            verifier.verify_client_cert(leaf, intermediates, now).map_err(not_issued)?;
            dns_name
        }
        Role::Server { dns_name } => {
            let verifier =
                rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), ring()).build().map_err(tls_error)?;
            let name = rustls::pki_types::ServerName::try_from(dns_name.to_owned()).map_err(tls_error)?;
            verifier.verify_server_cert(leaf, intermediates, &name, &[], now).map_err(not_issued)?;
            dns_name
        }
    };
    // The server's name was verified above; a client's is what the uplink checks.
    let name = rustls::pki_types::ServerName::try_from(dns_name.to_owned()).map_err(tls_error)?;
    let parsed = webpki::EndEntityCert::try_from(leaf).map_err(|e| TlsError::Tls(format!("{}: {e}", cert.display())))?;
    parsed.verify_is_valid_for_subject_name(&name).map_err(|_| TlsError::Tls(format!("{} does not name {dns_name}", cert.display())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};

    /// A CA, and a leaf it issued, as PEM files in `dir`: ca.pem, leaf.pem, leaf.key.
    fn write_pki(dir: &Path) {
        let ca_key = KeyPair::generate().expect("ca key");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = ca_params.self_signed(&ca_key).expect("ca");
        let leaf_key = KeyPair::generate().expect("leaf key");
        let leaf = CertificateParams::new(vec!["localhost".to_owned()]).expect("params").signed_by(&leaf_key, &ca, &ca_key).expect("leaf");
        std::fs::write(dir.join("ca.pem"), ca.pem()).expect("write");
        std::fs::write(dir.join("leaf.pem"), leaf.pem()).expect("write");
        std::fs::write(dir.join("leaf.key"), leaf_key.serialize_pem()).expect("write");
    }

    #[test]
    fn both_sides_build_from_pem_files_and_a_bad_file_is_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        write_pki(d);
        let (ca, cert, key) = (d.join("ca.pem"), d.join("leaf.pem"), d.join("leaf.key"));
        quic_client(&ca, &cert, &key, b"satcast").expect("client");
        quic_server(&ca, &cert, &key, b"satcast").expect("server");

        let missing = d.join("missing.pem");
        let error = quic_client(&missing, &cert, &key, b"satcast").err().expect("no CA").to_string();
        assert!(error.starts_with(&format!("cannot read {}: ", missing.display())), "{error}");
        // A certificate where the key belongs: no key in that file.
        let error = quic_server(&ca, &cert, &cert, b"satcast").err().expect("no key").to_string();
        assert!(error.starts_with(&format!("cannot read {}: ", cert.display())), "{error}");
        std::fs::write(d.join("garbage.pem"), "-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n").expect("write");
        assert!(matches!(read_chain(&d.join("garbage.pem")), Err(TlsError::Pem { .. })));
    }

    #[test]
    fn check_finds_a_foreign_key_a_foreign_ca_a_wrong_name_and_expiry() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (good, other) = (dir.path().join("good"), dir.path().join("other"));
        for d in [&good, &other] {
            std::fs::create_dir(d).expect("mkdir");
            write_pki(d);
        }
        let now = rustls::pki_types::UnixTime::now();
        let (ca, cert, key) = (good.join("ca.pem"), good.join("leaf.pem"), good.join("leaf.key"));
        check(&ca, &cert, &key, Role::Server { dns_name: "localhost" }, now).expect("a matching set");
        check(&ca, &cert, &key, Role::Client { dns_name: "localhost" }, now).expect("a matching set, as a client");

        let error = check(&ca, &cert, &other.join("leaf.key"), Role::Server { dns_name: "localhost" }, now).expect_err("foreign key");
        assert!(error.to_string().contains("does not belong to"), "{error}");
        let error = check(&other.join("ca.pem"), &cert, &key, Role::Client { dns_name: "localhost" }, now).expect_err("foreign CA");
        assert!(error.to_string().contains("against the CA"), "{error}");
        let error = check(&ca, &cert, &key, Role::Client { dns_name: "410102.county.satcast" }, now).expect_err("wrong name");
        assert!(error.to_string().contains("does not name 410102.county.satcast"), "{error}");
        // rcgen's default validity ends in 4096: a clock after it sees an expired certificate.
        let later = rustls::pki_types::UnixTime::since_unix_epoch(std::time::Duration::from_secs(420_000_000_000));
        let error = check(&ca, &cert, &key, Role::Server { dns_name: "localhost" }, later).expect_err("expired");
        assert!(error.to_string().contains("xpired"), "{error}");
    }
}
