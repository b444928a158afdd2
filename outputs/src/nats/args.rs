//! The NATS connection flags of the command-line tools (`palisade-alert`,
//! `palisade agent`): one set of flags, read into [`NatsOptions`] by the
//! same rules as the daemon's configuration keys.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use super::{NatsAuth, NatsOptionError, NatsOptions, NatsTls};
use crate::alert::{SecretError, read_secret_file};

/// The token in the environment, used when no other authentication is given.
pub const TOKEN_ENV: &str = "PALISADE_NATS_TOKEN";
/// The password of `--user` in the environment, used when neither
/// `--password` nor `--nats-password-file` is given.
pub const PASSWORD_ENV: &str = "PALISADE_NATS_PASSWORD";

/// Where and how to connect to NATS, as flags.
#[derive(Debug, Clone, Args)]
pub struct NatsArgs {
    /// NATS server URL (nats:// or tls://); repeat for a cluster.
    #[arg(
        long = "nats-url",
        value_name = "URL",
        default_value = "nats://127.0.0.1:4222"
    )]
    pub nats_urls: Vec<String>,
    /// Authenticate with a token (visible in `ps`: prefer --nats-token-file
    /// or $PALISADE_NATS_TOKEN).
    #[arg(long, value_name = "T", conflicts_with_all = ["user", "creds", "nkey_seed", "token_file"])]
    pub token: Option<String>,
    /// Authenticate with the token read from FILE (one line).
    #[arg(long = "nats-token-file", value_name = "FILE", conflicts_with_all = ["user", "creds", "nkey_seed"])]
    pub token_file: Option<PathBuf>,
    /// Authenticate as this user (with --password, --nats-password-file or
    /// $PALISADE_NATS_PASSWORD).
    #[arg(long, value_name = "U", conflicts_with_all = ["creds", "nkey_seed"])]
    pub user: Option<String>,
    /// The password of --user (visible in `ps`: prefer
    /// --nats-password-file or $PALISADE_NATS_PASSWORD).
    #[arg(
        long,
        value_name = "P",
        requires = "user",
        conflicts_with = "password_file"
    )]
    pub password: Option<String>,
    /// Read the password of --user from FILE (one line).
    #[arg(long = "nats-password-file", value_name = "FILE", requires = "user")]
    pub password_file: Option<PathBuf>,
    /// Authenticate with a credentials file (JWT + NKey, as `nsc` writes it).
    #[arg(long, value_name = "FILE", conflicts_with = "nkey_seed")]
    pub creds: Option<PathBuf>,
    /// Authenticate with an NKey user seed read from FILE.
    #[arg(long = "nkey-seed", value_name = "FILE")]
    pub nkey_seed: Option<PathBuf>,
    /// Trust this PEM CA file for the server's certificate (makes TLS required).
    #[arg(long = "tls-ca", value_name = "FILE")]
    pub tls_ca: Option<PathBuf>,
    /// Client certificate (PEM) for mutual TLS (needs --tls-key).
    #[arg(long = "tls-cert", value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// Private key (PEM) of --tls-cert.
    #[arg(long = "tls-key", value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// How long to try reaching a server at start-up.
    #[arg(long = "connect-timeout", value_name = "DURATION", default_value = "5s", value_parser = humantime::parse_duration)]
    pub connect_timeout: Duration,
}

/// Why the flags give no usable connection: a usage error.
#[derive(Debug, thiserror::Error)]
pub enum NatsArgsError {
    #[error(transparent)]
    Secret(#[from] SecretError),
    #[error("--user needs a password: --nats-password-file FILE, ${PASSWORD_ENV} or --password")]
    NoPassword,
    #[error("invalid NATS configuration: {0}")]
    Options(#[from] NatsOptionError),
}

impl NatsArgs {
    /// The flags as connection options named `name` (what the server shows),
    /// checked by the same rules as the daemon's settings. Secrets: a flag,
    /// else its file, else the environment (the token's only when no other
    /// method is given).
    pub fn options(&self, name: &str) -> Result<NatsOptions, NatsArgsError> {
        let other_method = self.user.is_some() || self.creds.is_some() || self.nkey_seed.is_some();
        let token = secret(
            self.token.as_ref(),
            self.token_file.as_ref(),
            (!other_method).then_some(TOKEN_ENV),
        )?;
        let password = secret(
            self.password.as_ref(),
            self.password_file.as_ref(),
            self.user.is_some().then_some(PASSWORD_ENV),
        )?;
        if self.user.is_some() && password.is_none() {
            return Err(NatsArgsError::NoPassword);
        }
        Ok(NatsOptions {
            urls: self.nats_urls.clone(),
            auth: NatsAuth::from_parts(
                token,
                self.user.clone(),
                password,
                self.nkey_seed.clone(),
                self.creds.clone(),
            )?,
            tls: NatsTls::from_parts(
                self.tls_ca.clone(),
                self.tls_cert.clone(),
                self.tls_key.clone(),
            )?,
            name: name.to_string(),
            connect_timeout: self.connect_timeout,
            inbox_prefix: None,
        })
    }
}

/// A secret from a flag, else a file, else the environment (`env`).
fn secret(
    flag: Option<&String>,
    file: Option<&PathBuf>,
    env: Option<&str>,
) -> Result<Option<String>, SecretError> {
    if let Some(value) = flag {
        return Ok(Some(value.clone()));
    }
    if let Some(path) = file {
        return Ok(Some(read_secret_file(path)?));
    }
    Ok(env
        .and_then(|name| std::env::var(name).ok())
        .filter(|v| !v.is_empty()))
}
