//! Certificates made at test time: a CA, a server certificate for `127.0.0.1` and a client
//! certificate, as PEM files in a scratch directory.

use std::path::PathBuf;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};

use crate::TestkitError;

/// A throwaway certificate authority and the certificates it signed, as PEM files; the files
/// go with it.
#[derive(Debug)]
pub struct TestCerts {
    dir: tempfile::TempDir,
}

impl TestCerts {
    /// Makes a CA, a server certificate for `127.0.0.1` and `localhost`, and a client
    /// certificate, all signed by the CA.
    ///
    /// # Errors
    /// [`TestkitError::Certificate`] when generating or writing them fails.
    pub fn generate() -> Result<Self, TestkitError> {
        let cert_err = |err: rcgen::Error| TestkitError::Certificate(err.to_string());
        let io_err = |err: std::io::Error| TestkitError::Certificate(err.to_string());
        let dir = tempfile::tempdir().map_err(io_err)?;
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(cert_err)?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        // Distinct subjects: with rcgen's one default subject OpenSSL (redis-server) takes a
        // leaf for self-signed and refuses it.
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "psrpc test CA");
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().map_err(cert_err)?)
            .map_err(cert_err)?;
        let write = |name: &str, pem: String| std::fs::write(dir.path().join(name), pem);
        write("ca.pem", ca.pem()).map_err(io_err)?;
        for (name, sans) in [
            (
                "server",
                vec!["127.0.0.1".to_owned(), "localhost".to_owned()],
            ),
            ("client", vec!["client.test".to_owned()]),
        ] {
            let key = KeyPair::generate().map_err(cert_err)?;
            let mut params = CertificateParams::new(sans).map_err(cert_err)?;
            params
                .distinguished_name
                .push(DnType::CommonName, format!("psrpc test {name}"));
            let cert = params.signed_by(&key, &ca).map_err(cert_err)?;
            write(&format!("{name}.pem"), cert.pem()).map_err(io_err)?;
            write(&format!("{name}-key.pem"), key.serialize_pem()).map_err(io_err)?;
        }
        Ok(TestCerts { dir })
    }

    /// The CA certificate (PEM).
    pub fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// The server certificate (PEM), for `127.0.0.1` and `localhost`.
    pub fn server_cert(&self) -> PathBuf {
        self.dir.path().join("server.pem")
    }

    /// The server certificate's private key (PEM).
    pub fn server_key(&self) -> PathBuf {
        self.dir.path().join("server-key.pem")
    }

    /// The client certificate (PEM).
    pub fn client_cert(&self) -> PathBuf {
        self.dir.path().join("client.pem")
    }

    /// The client certificate's private key (PEM).
    pub fn client_key(&self) -> PathBuf {
        self.dir.path().join("client-key.pem")
    }
}
