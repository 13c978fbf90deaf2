//! TLS for the broker and its clients (rustls, no OpenSSL). The framing inside
//! TLS is the same as on plain TCP.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio::net::TcpStream;
use tokio_rustls::{TlsAcceptor, TlsConnector};

/// Where Debian and most distributions keep the system's trusted CAs.
pub(crate) const SYSTEM_CAS: &str = "/etc/ssl/certs/ca-certificates.crt";

pub(crate) fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn certs(path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(path)
        .with_context(|| format!("cannot read certificates from {}", path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("bad certificate PEM in {}", path.display()))?;
    if certs.is_empty() {
        bail!("no certificate in {}", path.display());
    }
    Ok(certs)
}

fn key(path: &Path) -> anyhow::Result<PrivateKeyDer<'static>> {
    PrivateKeyDer::from_pem_file(path)
        .with_context(|| format!("cannot read a private key from {}", path.display()))
}

pub(crate) fn roots(path: &Path) -> anyhow::Result<RootCertStore> {
    let mut roots = RootCertStore::empty();
    let (added, _ignored) = roots.add_parsable_certificates(certs(path)?);
    if added == 0 {
        bail!("no usable CA certificate in {}", path.display());
    }
    Ok(roots)
}

/// `aioq serve`'s TLS flags.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ServerTlsArgs {
    /// Serve TLS with this certificate chain (PEM); needs --tls-key.
    #[arg(long, value_name = "PEM", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// Private key for --tls-cert (PEM: PKCS#8, PKCS#1 or SEC1).
    #[arg(long, value_name = "PEM", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Require client certificates signed by this CA (mutual TLS): only admitted
    /// clients connect.
    #[arg(long, value_name = "PEM", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,
}

/// Why a certificate and key cannot serve, in the terms of the recipe that
/// made them: `openssl x509 -req` without `-extfile` makes an X.509 v1
/// certificate, which TLS libraries refuse though the pair matches.
fn unusable_pair(e: rustls::Error) -> anyhow::Error {
    if format!("{e:?}").contains("UnsupportedCertVersion") {
        anyhow::anyhow!(
            "--tls-cert is an X.509 v1 certificate; TLS needs v3: sign it again with \
             `openssl x509 -req ... -extfile EXT` where EXT holds \
             `subjectAltName=DNS:yourhost` and `basicConstraints=CA:FALSE`"
        )
    } else {
        anyhow::Error::new(e).context("--tls-cert and --tls-key do not make a usable pair")
    }
}

impl ServerTlsArgs {
    /// The acceptor, or `None` when serving plain TCP.
    pub fn acceptor(&self) -> anyhow::Result<Option<TlsAcceptor>> {
        let (Some(cert), Some(key_path)) = (&self.tls_cert, &self.tls_key) else {
            return Ok(None);
        };
        let builder = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .context("TLS protocol versions")?;
        let builder = match &self.tls_client_ca {
            Some(ca) => {
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots(ca)?), provider())
                        .build()
                        .context("client certificate verifier")?;
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        let config = builder
            .with_single_cert(certs(cert)?, key(key_path)?)
            .map_err(unusable_pair)?;
        Ok(Some(TlsAcceptor::from(Arc::new(config))))
    }
}

/// The clients' TLS flags.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ClientTlsArgs {
    /// Connect with TLS (implied by any other --tls-* flag).
    #[arg(long, env = "AIOQ_TLS")]
    pub tls: bool,
    /// CA certificates (PEM) that the broker's certificate must chain to
    /// [default: the system's, /etc/ssl/certs/ca-certificates.crt].
    #[arg(long, value_name = "PEM", env = "AIOQ_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
    /// Client certificate chain (PEM), for brokers that require one; needs
    /// --tls-key.
    #[arg(long, value_name = "PEM", requires = "tls_key", env = "AIOQ_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// Private key for --tls-cert (PEM).
    #[arg(long, value_name = "PEM", requires = "tls_cert", env = "AIOQ_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// Name to expect in the broker's certificate [default: the host the
    /// client connects to].
    #[arg(long, value_name = "NAME")]
    pub tls_server_name: Option<String>,
}

impl ClientTlsArgs {
    pub fn enabled(&self) -> bool {
        self.tls
            || self.tls_ca.is_some()
            || self.tls_cert.is_some()
            || self.tls_server_name.is_some()
    }

    /// A client ready to connect to `host`, or `None` for plain TCP.
    pub fn client(&self, host: &str) -> anyhow::Result<Option<TlsClient>> {
        if !self.enabled() {
            return Ok(None);
        }
        let ca = self
            .tls_ca
            .clone()
            .unwrap_or_else(|| PathBuf::from(SYSTEM_CAS));
        let builder = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .context("TLS protocol versions")?
            .with_root_certificates(roots(&ca)?);
        let config = match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key_path)) => builder
                .with_client_auth_cert(certs(cert)?, key(key_path)?)
                .map_err(unusable_pair)?,
            _ => builder.with_no_client_auth(),
        };
        let name = self.tls_server_name.as_deref().unwrap_or(host);
        let name = ServerName::try_from(name.to_owned())
            .with_context(|| format!("{name:?} is not a valid TLS server name"))?;
        Ok(Some(TlsClient {
            connector: TlsConnector::from(Arc::new(config)),
            name,
        }))
    }
}

/// A configured TLS client: connector and the name the broker must prove.
#[derive(Clone)]
pub struct TlsClient {
    connector: TlsConnector,
    name: ServerName<'static>,
}

impl TlsClient {
    pub async fn connect(
        &self,
        stream: TcpStream,
    ) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
        self.connector.connect(self.name.clone(), stream).await
    }
}

impl std::fmt::Debug for TlsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TlsClient({:?})", self.name)
    }
}
