//! TLS settings of `amqps://` connections: an extra trusted certificate authority and a client
//! certificate.

use lapin::tcp::{OwnedIdentity, OwnedTLSConfig};

/// TLS settings for `amqps://` URLs (the `tls` feature). By default the platform's root
/// certificates are trusted and no client certificate is presented.
///
/// ```
/// let tls = psrpc_amqp::AmqpTls::new()
///     .ca_pem("-----BEGIN CERTIFICATE-----\n…")
///     .client_identity(b"-----BEGIN CERTIFICATE-----\n...".to_vec(), b"...".to_vec());
/// // The private key never shows in Debug output.
/// assert!(!format!("{tls:?}").contains("…"));
/// ```
#[derive(Clone, Default)]
pub struct AmqpTls {
    ca_pem: Option<String>,
    identity: Option<(Vec<u8>, Vec<u8>)>,
}

impl AmqpTls {
    /// The defaults: the platform's roots, no client certificate.
    pub fn new() -> Self {
        Self::default()
    }

    /// Trusts the certificate authorities in `pem` (one or more PEM certificates) besides the
    /// platform's roots: for brokers with certificates of a private authority.
    pub fn ca_pem(mut self, pem: impl Into<String>) -> Self {
        self.ca_pem = Some(pem.into());
        self
    }

    /// Presents a client certificate: `cert_pem` (the certificate, then any intermediates) and
    /// its PKCS#8 private key `key_pem`, for brokers that authenticate clients by certificate.
    pub fn client_identity(mut self, cert_pem: Vec<u8>, key_pem: Vec<u8>) -> Self {
        self.identity = Some((cert_pem, key_pem));
        self
    }

    pub(crate) fn lapin_config(&self) -> OwnedTLSConfig {
        OwnedTLSConfig {
            identity: self
                .identity
                .as_ref()
                .map(|(pem, key)| OwnedIdentity::PKCS8 {
                    pem: pem.clone(),
                    key: key.clone(),
                }),
            cert_chain: self.ca_pem.clone(),
        }
    }
}

impl std::fmt::Debug for AmqpTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Whether they are set, never their bytes: the key is a secret.
        f.debug_struct("AmqpTls")
            .field("ca_pem", &self.ca_pem.as_ref().map(|_| "set"))
            .field("client_identity", &self.identity.as_ref().map(|_| "set"))
            .finish()
    }
}
