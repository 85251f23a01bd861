//! Reaching a provider: DNS, TCP and TLS, with every failure named by a
//! short code and said in words (an untrusted certificate as such), for
//! the HTTP/2 senders and the one-shot requests alike.

use super::h2::H2Error;
use anyhow::{bail, Context as _};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName};
use std::sync::Arc;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

/// A TCP connection to `host:port`, trying each address it resolves to.
pub(crate) async fn tcp(host: &str, port: u16) -> Result<TcpStream, H2Error> {
    let addrs: Vec<_> = match tokio::net::lookup_host((host, port)).await {
        Ok(addrs) => addrs.collect(),
        Err(e) => return Err(H2Error::new("dns", format!("cannot resolve {host}: {e}"))),
    };
    let mut last = None;
    for addr in addrs {
        match TcpStream::connect(addr).await {
            Ok(stream) => {
                let _ = stream.set_nodelay(true);
                return Ok(stream);
            }
            Err(e) => last = Some(e),
        }
    }
    let code = match &last {
        Some(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => "connect_refused",
        _ => "connect",
    };
    let e = last.map_or("no address".to_owned(), |e| e.to_string());
    Err(H2Error::new(
        code,
        format!("cannot connect to {host}:{port}: {e}"),
    ))
}

/// TLS over `tcp` with `host` as the server name.
pub(crate) async fn tls(
    connector: &TlsConnector,
    host: &str,
    tcp: TcpStream,
) -> Result<TlsStream<TcpStream>, H2Error> {
    let name = ServerName::try_from(host.to_owned())
        .map_err(|_| H2Error::new("tls", format!("{host:?} is not a TLS server name")))?;
    connector
        .connect(name, tcp)
        .await
        .map_err(|e| tls_error(host, &e))
}

/// A TLS handshake failure in words, an untrusted certificate named as such.
fn tls_error(host: &str, e: &std::io::Error) -> H2Error {
    use rustls::{CertificateError, Error};
    let inner = e.get_ref().and_then(|i| i.downcast_ref::<Error>());
    match inner {
        Some(Error::InvalidCertificate(CertificateError::UnknownIssuer)) => H2Error::new(
            "tls_untrusted",
            format!("TLS with {host}: its certificate is not trusted (unknown issuer); a private CA goes in ca_file"),
        ),
        Some(Error::InvalidCertificate(c)) => H2Error::new(
            "tls_certificate",
            format!("TLS with {host}: bad certificate: {c:?}"),
        ),
        _ => H2Error::new("tls", format!("TLS with {host}: {e}")),
    }
}

/// The web PKI roots plus `extra_roots_pem` (a provider's `ca_file`),
/// offering `alpn`.
pub(crate) fn tls_connector(
    extra_roots_pem: Option<&[u8]>,
    alpn: &[&[u8]],
) -> anyhow::Result<TlsConnector> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(pem) = extra_roots_pem {
        let mut added = 0;
        for cert in CertificateDer::pem_slice_iter(pem) {
            let cert = cert.context("ca_file is not PEM certificates")?;
            roots
                .add(cert)
                .context("ca_file holds a certificate that cannot be a trust root")?;
            added += 1;
        }
        if added == 0 {
            bail!("ca_file holds no PEM certificate");
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(TlsConnector::from(Arc::new(config)))
}
