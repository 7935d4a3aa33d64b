//! A NATS operator made at test time (decentralised JWT auth): operator, account and user
//! NKeys, the JWTs that chain them, and user credentials files (`.creds`).
//!
//! The JWTs are the NATS v2 format: `base64url(header).base64url(claims).base64url(sig)`,
//! signed with the issuer's Ed25519 NKey. The server checks the signature chain only, so the
//! claims carry no more than it reads (unlimited account and user limits).

use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use data_encoding::BASE64URL_NOPAD;
use nkeys::KeyPair;

use crate::TestkitError;
use crate::nats::NatsTrust;

/// Unlimited limits: the server reads absent limits as zero (no connections at all).
const ACCOUNT_LIMITS: &str = r#""limits":{"subs":-1,"data":-1,"payload":-1,"imports":-1,"exports":-1,"wildcards":true,"conn":-1,"leaf":-1}"#;
const USER_LIMITS: &str = r#""pub":{},"sub":{},"subs":-1,"data":-1,"payload":-1"#;

/// A throwaway NATS operator with one account; it issues user credentials files for that
/// account (and, for refusal tests, for an account the server does not trust). The files go
/// with it.
pub struct TestOperator {
    operator: KeyPair,
    account: KeyPair,
    stranger: KeyPair,
    dir: tempfile::TempDir,
    next: std::sync::atomic::AtomicU32,
}

impl std::fmt::Debug for TestOperator {
    // Public keys only: the seeds are the secrets.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestOperator")
            .field("operator", &self.operator.public_key())
            .field("account", &self.account.public_key())
            .finish_non_exhaustive()
    }
}

impl TestOperator {
    /// Makes the operator and account keys.
    ///
    /// # Errors
    /// [`TestkitError::Certificate`] when the scratch directory cannot be made.
    pub fn generate() -> Result<Self, TestkitError> {
        let dir = tempfile::tempdir().map_err(|err| TestkitError::Certificate(err.to_string()))?;
        Ok(TestOperator {
            operator: KeyPair::new_operator(),
            account: KeyPair::new_account(),
            stranger: KeyPair::new_account(),
            dir,
            next: Default::default(),
        })
    }

    /// What a server needs to trust this operator and its account: pass it as
    /// [`NatsOptions::trust`](crate::NatsOptions::trust).
    pub fn trust(&self) -> NatsTrust {
        let operator = self.operator.public_key();
        let account = self.account.public_key();
        NatsTrust {
            operator_jwt: sign(
                &self.operator,
                &operator,
                "psrpc-test",
                r#""type":"operator","version":2"#,
            ),
            accounts: vec![(
                account.clone(),
                sign(
                    &self.operator,
                    &account,
                    "psrpc",
                    &format!(
                        r#"{ACCOUNT_LIMITS},"default_permissions":{{"pub":{{}},"sub":{{}}}},"type":"account","version":2"#
                    ),
                ),
            )],
        }
    }

    /// Writes a credentials file for a new user `name` of the trusted account and returns its
    /// path.
    ///
    /// # Errors
    /// [`TestkitError::Certificate`] when the file cannot be written.
    pub fn user_creds(&self, name: &str) -> Result<PathBuf, TestkitError> {
        self.creds(&self.account, name, None)
    }

    /// A credentials file for a user of an account the operator never signed: the server
    /// cannot resolve it and refuses the connection.
    ///
    /// # Errors
    /// As [`user_creds`](Self::user_creds).
    pub fn stranger_creds(&self, name: &str) -> Result<PathBuf, TestkitError> {
        self.creds(&self.stranger, name, None)
    }

    /// A credentials file whose JWT names one user and whose seed is another's: the server's
    /// nonce check fails.
    ///
    /// # Errors
    /// As [`user_creds`](Self::user_creds).
    pub fn mismatched_creds(&self, name: &str) -> Result<PathBuf, TestkitError> {
        self.creds(&self.account, name, Some(KeyPair::new_user()))
    }

    /// The seed in the credentials file at `path`, for tests that check it is never shown.
    pub fn seed_in(path: &std::path::Path) -> Option<String> {
        let text = std::fs::read_to_string(path).ok()?;
        text.lines()
            .find(|line| line.starts_with("SU"))
            .map(str::to_owned)
    }

    fn creds(
        &self,
        account: &KeyPair,
        name: &str,
        other_seed: Option<KeyPair>,
    ) -> Result<PathBuf, TestkitError> {
        let user = KeyPair::new_user();
        let jwt = sign(
            account,
            &user.public_key(),
            name,
            &format!(r#"{USER_LIMITS},"type":"user","version":2"#),
        );
        let seed_of = other_seed.as_ref().unwrap_or(&user);
        let seed = seed_of
            .seed()
            .map_err(|err| TestkitError::Certificate(err.to_string()))?;
        let text = format!(
            "-----BEGIN NATS USER JWT-----\n{jwt}\n------END NATS USER JWT------\n\n\
             ************************* IMPORTANT *************************\n\
             NKEY Seed printed below can be used to sign and prove identity.\n\n\
             -----BEGIN USER NKEY SEED-----\n{seed}\n------END USER NKEY SEED------\n"
        );
        let n = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = self.dir.path().join(format!("{name}-{n}.creds"));
        std::fs::write(&path, text).map_err(|err| TestkitError::Certificate(err.to_string()))?;
        Ok(path)
    }
}

/// A JWT for `subject`, issued and signed by `issuer`, with `nats` as the body of its `nats`
/// claim. Keys and names here are base32 or plain test names: no JSON escaping needed.
fn sign(issuer: &KeyPair, subject: &str, name: &str, nats: &str) -> String {
    let iat = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    // The server does not check `jti`; it only has to be unique per JWT.
    let jti = format!("{subject}{iat}");
    let header = BASE64URL_NOPAD.encode(br#"{"typ":"JWT","alg":"ed25519-nkey"}"#);
    let claims = format!(
        r#"{{"jti":"{jti}","iat":{iat},"iss":"{}","name":"{name}","sub":"{subject}","nats":{{{nats}}}}}"#,
        issuer.public_key()
    );
    let body = format!("{header}.{}", BASE64URL_NOPAD.encode(claims.as_bytes()));
    // Signing with a key made from a fresh seed cannot fail.
    let sig = issuer.sign(body.as_bytes()).unwrap_or_default();
    format!("{body}.{}", BASE64URL_NOPAD.encode(&sig))
}
