//! Connecting to PostgreSQL as libpq would: `sslmode` (`disable`, `prefer`,
//! `require`, `verify-ca`, `verify-full`) and `sslrootcert` from the DSN, TLS
//! by rustls, and the password from `PGPASSWORD` when the DSN has none.
//!
//! tokio-postgres knows only `disable`, `prefer` and `require` and no
//! `sslrootcert`, so those are taken out of the DSN here and turned into a
//! rustls configuration: `prefer` and `require` encrypt without checking the
//! server's certificate (as libpq does unless a root certificate is given),
//! `verify-ca` checks that it chains to `sslrootcert`, `verify-full` also
//! that it names the host.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
use tokio_postgres::config::SslMode;
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::exit::usage;

/// What to connect with.
pub struct Pg {
    pub config: tokio_postgres::Config,
    pub tls: MakeRustlsConnect,
    /// The `sslmode` in effect, as the DSN spelled it.
    pub mode: &'static str,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

/// The DSN's TLS settings, taken out of it: (the rest of the DSN, sslmode,
/// sslrootcert). Both URL (`?sslmode=...`) and key=value forms.
fn split_tls(dsn: &str) -> anyhow::Result<(String, Option<String>, Option<String>)> {
    let (mut mode, mut root) = (None, None);
    let mut take = |key: &str, value: &str| match key {
        "sslmode" => {
            mode = Some(value.to_string());
            true
        }
        "sslrootcert" => {
            root = Some(value.to_string());
            true
        }
        _ => false,
    };
    let rest = if dsn.starts_with("postgres://") || dsn.starts_with("postgresql://") {
        match dsn.split_once('?') {
            None => dsn.to_string(),
            Some((base, query)) => {
                let kept: Vec<&str> = query
                    .split('&')
                    .filter(|kv| {
                        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                        !take(k, v)
                    })
                    .collect();
                if kept.is_empty() {
                    base.to_string()
                } else {
                    format!("{base}?{}", kept.join("&"))
                }
            }
        }
    } else {
        dsn.split_whitespace()
            .filter(|kv| {
                let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                !take(k.trim(), v.trim().trim_matches('\''))
            })
            .collect::<Vec<_>>()
            .join(" ")
    };
    Ok((rest, mode, root))
}

/// The DSN without its TLS settings, as tokio-postgres can parse it.
pub fn without_tls(dsn: &str) -> String {
    split_tls(dsn).map_or_else(|_| dsn.to_string(), |(rest, _, _)| rest)
}

/// Reads the DSN (`--dsn`) into what every connection uses.
pub fn from_dsn(dsn: &str) -> anyhow::Result<Pg> {
    let bad = |e: String| usage(format!("--dsn is not a PostgreSQL connection string: {e}"));
    let (rest, mode, root) = split_tls(dsn)?;
    let mut config: tokio_postgres::Config = rest.parse().map_err(|e| bad(format!("{e}")))?;
    if config.get_password().is_none() {
        if let Some(password) = std::env::var("PGPASSWORD")
            .ok()
            .or_else(|| passfile(&config))
        {
            config.password(password);
        }
    }
    let (mode, name) = match mode
        .as_deref()
        .or(std::env::var("PGSSLMODE").ok().as_deref())
    {
        None | Some("prefer") => (Mode::Prefer, "prefer"),
        Some("disable") => (Mode::Disable, "disable"),
        Some("allow") => (Mode::Prefer, "prefer"),
        Some("require") => (Mode::Require, "require"),
        Some("verify-ca") => (Mode::VerifyCa, "verify-ca"),
        Some("verify-full") => (Mode::VerifyFull, "verify-full"),
        Some(other) => {
            return Err(bad(format!(
                "sslmode={other}: expected disable, prefer, require, verify-ca or verify-full"
            )))
        }
    };
    config.ssl_mode(match mode {
        Mode::Disable => SslMode::Disable,
        Mode::Prefer => SslMode::Prefer,
        _ => SslMode::Require,
    });
    let root = root.or_else(|| std::env::var("PGSSLROOTCERT").ok());
    // As libpq: `require` with a root certificate checks the chain.
    let mode = if mode == Mode::Require && root.is_some() {
        Mode::VerifyCa
    } else {
        mode
    };
    let builder = ClientConfig::builder_with_provider(crate::tls::provider())
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?;
    let tls = match mode {
        Mode::Disable | Mode::Prefer | Mode::Require => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Unchecked(
                crate::tls::provider().signature_verification_algorithms,
            )))
            .with_no_client_auth(),
        Mode::VerifyCa | Mode::VerifyFull => {
            let path = match root.as_deref() {
                None | Some("system") => PathBuf::from(crate::tls::SYSTEM_CAS),
                Some(p) => PathBuf::from(p),
            };
            let roots = crate::tls::roots(&path)
                .with_context(|| format!("sslrootcert {}", path.display()))
                .map_err(crate::exit::as_usage)?;
            let webpki = rustls::client::WebPkiServerVerifier::builder_with_provider(
                Arc::new(roots),
                crate::tls::provider(),
            )
            .build()
            .context("certificate verifier")?;
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(Checked {
                    webpki,
                    names: mode == Mode::VerifyFull,
                }))
                .with_no_client_auth()
        }
    };
    Ok(Pg {
        config,
        tls: MakeRustlsConnect::new(tls),
        mode: name,
    })
}

/// The password for `config` from the password file, as libpq finds it:
/// `PGPASSFILE`, else `~/.pgpass`; lines `host:port:database:user:password`,
/// `*` matching anything, `\` escaping `:` and `\`; the first match wins. As
/// libpq, a file that others may read is ignored.
fn passfile(config: &tokio_postgres::Config) -> Option<String> {
    let path = std::env::var_os("PGPASSFILE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".pgpass")))?;
    let meta = std::fs::metadata(&path).ok()?;
    {
        use std::os::unix::fs::PermissionsExt;
        if meta.permissions().mode() & 0o077 != 0 {
            tracing::warn!(
                "ignoring the password file {}: others may read it (chmod 0600 it)",
                path.display()
            );
            return None;
        }
    }
    let text = std::fs::read_to_string(&path).ok()?;
    let host = match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
        Some(tokio_postgres::config::Host::Unix(_)) | None => "localhost".into(),
    };
    let port = config
        .get_ports()
        .first()
        .copied()
        .unwrap_or(5432)
        .to_string();
    let user = config.get_user().unwrap_or_default().to_string();
    let db = config
        .get_dbname()
        .map_or_else(|| user.clone(), str::to_string);
    let want = [host.as_str(), port.as_str(), db.as_str(), user.as_str()];
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .find_map(|line| {
            let fields = pgpass_fields(line);
            (fields.len() == 5
                && fields[..4]
                    .iter()
                    .zip(want)
                    .all(|(f, w)| f == "*" || f == w))
            .then(|| fields[4].clone())
        })
}

/// A password-file line's fields, `\:` and `\\` unescaped.
fn pgpass_fields(line: &str) -> Vec<String> {
    let mut fields = vec![String::new()];
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(n) = chars.next() {
                    fields.last_mut().expect("one field at least").push(n);
                }
            }
            ':' => fields.push(String::new()),
            c => fields.last_mut().expect("one field at least").push(c),
        }
    }
    fields
}

/// `prefer`, `require`: encrypted, the certificate not checked (libpq's
/// meaning of these modes). Handshake signatures are still verified.
#[derive(Debug)]
struct Unchecked(rustls::crypto::WebPkiSupportedAlgorithms);

impl ServerCertVerifier for Unchecked {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}

/// `verify-ca` (the chain) and `verify-full` (the chain and the host name).
#[derive(Debug)]
struct Checked {
    webpki: Arc<rustls::client::WebPkiServerVerifier>,
    names: bool,
}

impl ServerCertVerifier for Checked {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .webpki
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::NotValidForName
                | rustls::CertificateError::NotValidForNameContext { .. },
            )) if !self.names => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_file_lines_unescape_and_split() {
        assert_eq!(
            pgpass_fields(r"db\:1:5432:*:app:pa\:ss\\w"),
            ["db:1", "5432", "*", "app", r"pa:ss\w"]
        );
    }

    #[test]
    fn tls_settings_come_out_of_either_dsn_form() {
        let (rest, mode, root) = split_tls(
            "postgres://u@h/d?sslmode=verify-full&application_name=x&sslrootcert=/ca.pem",
        )
        .unwrap();
        assert_eq!(rest, "postgres://u@h/d?application_name=x");
        assert_eq!(mode.as_deref(), Some("verify-full"));
        assert_eq!(root.as_deref(), Some("/ca.pem"));
        let (rest, mode, _) = split_tls("host=h dbname=d sslmode=require").unwrap();
        assert_eq!(rest, "host=h dbname=d");
        assert_eq!(mode.as_deref(), Some("require"));
    }
}
