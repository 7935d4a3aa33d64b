//! The default TLS client configuration for `mqtts://` (rustls with the ring provider).

use std::sync::Arc;

use crate::MqttBusError;

/// The platform's root certificates, TLS 1.2 and 1.3, no client certificate.
pub(crate) fn default_config() -> Result<Arc<rustls::ClientConfig>, MqttBusError> {
    let mut roots = rustls::RootCertStore::empty();
    let found = rustls_native_certs::load_native_certs();
    for cert in found.certs {
        // A certificate the platform ships but rustls cannot parse is skipped, as browsers do.
        let _ = roots.add(cert);
    }
    if roots.is_empty() {
        return Err(MqttBusError::Tls(
            "no root certificates found on this system; pass MqttBusOptions::tls".into(),
        ));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|err| MqttBusError::Tls(err.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}
