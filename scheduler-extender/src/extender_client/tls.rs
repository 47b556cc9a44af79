//! The TLS side of an extender's HTTP client, as client-go's TLSConfigFor
//! reads an extender's `tlsConfig`: a CA (file or data) replaces the system
//! roots, a client certificate is presented when given, `serverName` is the
//! name the server's certificate is checked against, and `insecure` (or
//! `enableHTTPS` without a CA, as upstream's makeTransport) skips verification.

use std::sync::Arc;

use tokio_rustls::rustls;
use tokio_rustls::rustls::client::WebPkiServerVerifier;
use tokio_rustls::rustls::client::danger::{
    HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier,
};
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use tokio_rustls::rustls::{DigitallySignedStruct, SignatureScheme};

use super::config::ExtenderConfig;

/// The rustls configuration for `config`, or `None` when its settings leave
/// the default client (system roots, no client certificate) as it is.
pub fn client_config(config: &ExtenderConfig) -> Result<Option<rustls::ClientConfig>, String> {
    let tls = config.tls_config.clone().unwrap_or_default();
    let ca = pem_source("caFile", &tls.ca_file, "caData", &tls.ca_data)?;
    let cert = pem_source("certFile", &tls.cert_file, "certData", &tls.cert_data)?;
    let key = pem_source("keyFile", &tls.key_file, "keyData", &tls.key_data)?;
    let insecure = tls.insecure || (config.enable_https && ca.is_none());
    if tls.insecure && ca.is_some() {
        // client-go's words for the same contradiction.
        return Err(
            "specifying a root certificates file with the insecure flag is not allowed".into(),
        );
    }
    if !insecure && ca.is_none() && cert.is_none() && key.is_none() && tls.server_name.is_empty() {
        return Ok(None);
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let verifier: Arc<dyn ServerCertVerifier> = if insecure {
        Arc::new(AcceptAnyCertificate(provider))
    } else {
        let mut roots = rustls::RootCertStore::empty();
        match &ca {
            Some(pem) => {
                for cert in CertificateDer::pem_slice_iter(pem) {
                    let cert = cert.map_err(|e| format!("tlsConfig CA: {e}"))?;
                    roots.add(cert).map_err(|e| format!("tlsConfig CA: {e}"))?;
                }
                if roots.is_empty() {
                    return Err("tlsConfig CA: no certificate in it".into());
                }
            }
            None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        }
        let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .map_err(|e| e.to_string())?;
        let server_name = if tls.server_name.is_empty() {
            None
        } else {
            Some(
                ServerName::try_from(tls.server_name.clone())
                    .map_err(|e| format!("tlsConfig.serverName: {e}"))?,
            )
        };
        Arc::new(NamedVerifier {
            inner: webpki,
            server_name,
        })
    };
    let builder = builder
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let config = match (cert, key) {
        (Some(cert), Some(key)) => {
            let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert)
                .collect::<Result<_, _>>()
                .map_err(|e| format!("tlsConfig client certificate: {e}"))?;
            let key = PrivateKeyDer::from_pem_slice(&key)
                .map_err(|e| format!("tlsConfig client key: {e}"))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| format!("tlsConfig client certificate: {e}"))?
        }
        (None, None) => builder.with_no_client_auth(),
        _ => {
            return Err("tlsConfig: a client certificate needs both a cert and a key".into());
        }
    };
    Ok(Some(config))
}

/// A file's bytes or inline data (base64 in the configuration); the data
/// wins when both are set, as in client-go.
fn pem_source(
    file_field: &str,
    file: &str,
    data_field: &str,
    data: &str,
) -> Result<Option<Vec<u8>>, String> {
    if !data.is_empty() {
        let bytes = data_encoding::BASE64
            .decode(data.trim().as_bytes())
            .map_err(|e| format!("tlsConfig.{data_field}: not base64: {e}"))?;
        return Ok(Some(bytes));
    }
    if !file.is_empty() {
        let bytes =
            std::fs::read(file).map_err(|e| format!("tlsConfig.{file_field}: {file}: {e}"))?;
        return Ok(Some(bytes));
    }
    Ok(None)
}

/// WebPKI verification against the configured `serverName` instead of the
/// URL's host when one is set (Go's tls.Config.ServerName).
#[derive(Debug)]
struct NamedVerifier {
    inner: Arc<WebPkiServerVerifier>,
    server_name: Option<ServerName<'static>>,
}

impl ServerCertVerifier for NamedVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let name = self.server_name.as_ref().unwrap_or(server_name);
        self.inner
            .verify_server_cert(end_entity, intermediates, name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// Go's InsecureSkipVerify: any certificate is accepted; the handshake's
/// signatures are still checked so the session keys belong to that certificate.
#[derive(Debug)]
struct AcceptAnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCertificate {
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
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
