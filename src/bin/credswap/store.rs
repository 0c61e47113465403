//! Secret references (`aws:NAME`, `vault-kv:MOUNT/PATH`, `vault-db:MOUNT/creds/ROLE`,
//! `file:PATH`, `env:VAR`) and the stores and caches behind them.
//!
//! Each store gets its own cache, keyed by the id that store knows the secret by, so a push
//! announcement (which names that id) reaches the cache that holds it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use credswap::provider::{
    AwsSecretsManagerProvider, VaultAuth, VaultConfig, VaultDatabaseProvider, VaultKvProvider,
    VaultSession,
};
use credswap::{EnvProvider, Error, FileProvider, Result, SecretCache, SecretProvider};

use crate::config::Settings;

/// Which store a reference names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Aws,
    VaultKv,
    VaultDb,
    File,
    Env,
}

/// A parsed secret reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretRef {
    pub kind: Kind,
    /// The store's scope: the Vault mount, the file's directory; empty for AWS and env.
    pub scope: String,
    /// The id the store knows the secret by.
    pub id: String,
    /// The reference as written, for messages.
    pub text: String,
}

impl SecretRef {
    pub fn parse(text: &str) -> std::result::Result<SecretRef, String> {
        let (scheme, rest) = text.split_once(':').ok_or_else(|| {
            format!(
                "`{text}` is not a secret reference: write aws:NAME, vault-kv:MOUNT/PATH, \
                 vault-db:MOUNT/creds/ROLE, file:PATH or env:VAR"
            )
        })?;
        if rest.is_empty() {
            return Err(format!("`{text}` names no secret after `{scheme}:`"));
        }
        let mounted = |kind| {
            let (mount, path) = rest
                .split_once('/')
                .filter(|(m, p)| !m.is_empty() && !p.is_empty())
                .ok_or_else(|| {
                    format!("`{text}`: write {scheme}:MOUNT/PATH (such as {scheme}:secret/app/db)")
                })?;
            Ok::<_, String>((kind, mount.to_owned(), path.to_owned()))
        };
        let (kind, scope, id) = match scheme {
            "aws" => (Kind::Aws, String::new(), rest.to_owned()),
            "vault-kv" | "vault" | "bao" => mounted(Kind::VaultKv)?,
            "vault-db" => {
                let (kind, mount, path) = mounted(Kind::VaultDb)?;
                if !(path.starts_with("creds/") || path.starts_with("static-creds/")) {
                    return Err(format!(
                        "`{text}`: database credentials are MOUNT/creds/ROLE (dynamic) or \
                         MOUNT/static-creds/ROLE (static)"
                    ));
                }
                (kind, mount, path)
            }
            "file" => {
                let path = Path::new(rest);
                let name = path
                    .file_name()
                    .and_then(|n| n.to_str())
                    .ok_or_else(|| format!("`{text}` names no file"))?;
                let dir = match path.parent() {
                    Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
                    _ => PathBuf::from("."),
                };
                (Kind::File, dir.display().to_string(), name.to_owned())
            }
            "env" => (Kind::Env, String::new(), rest.to_owned()),
            other => {
                return Err(format!(
                    "`{text}`: unknown store `{other}` (aws, vault-kv, vault-db, file or env)"
                ));
            }
        };
        Ok(SecretRef {
            kind,
            scope,
            id,
            text: text.to_owned(),
        })
    }
}

/// The stores the references of one command use, each connected on first use, and a cache per
/// store.
pub struct Stores {
    settings: Settings,
    caches: HashMap<(Kind, String), SecretCache>,
    vault: Option<VaultSession>,
    aws: Option<aws_sdk_secretsmanager::Client>,
    /// Whether the store's own credentials came from the environment (to keep from the child).
    pub used: Vec<Kind>,
}

impl Stores {
    pub fn new(settings: Settings) -> Stores {
        Stores {
            settings,
            caches: HashMap::new(),
            vault: None,
            aws: None,
            used: Vec::new(),
        }
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The AWS Secrets Manager client: the SDK's default chain (environment, profile, web
    /// identity, instance role), with the configured region and endpoint.
    pub async fn aws_client(&mut self) -> aws_sdk_secretsmanager::Client {
        if let Some(client) = &self.aws {
            return client.clone();
        }
        let timeout = self.settings.timeout;
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .timeout_config(
                aws_config::timeout::TimeoutConfig::builder()
                    .connect_timeout(timeout)
                    .operation_attempt_timeout(timeout)
                    .operation_timeout(timeout)
                    .build(),
            );
        if let Some(endpoint) = &self.settings.aws_endpoint {
            loader = loader.endpoint_url(endpoint);
        }
        if let Some(region) = &self.settings.aws_region {
            loader = loader.region(aws_config::Region::new(region.clone()));
        }
        let client = aws_sdk_secretsmanager::Client::new(&loader.load().await);
        self.aws = Some(client.clone());
        client
    }

    /// The Vault session: address from `--vault-addr`, `VAULT_ADDR` or `BAO_ADDR`, token from
    /// `VAULT_TOKEN` or `BAO_TOKEN`.
    pub async fn vault_session(&mut self) -> Result<VaultSession> {
        if let Some(session) = &self.vault {
            return Ok(session.clone());
        }
        let env = |vault: &str, bao: &str| {
            std::env::var(vault)
                .or_else(|_| std::env::var(bao))
                .ok()
                .filter(|v| !v.is_empty())
        };
        let mut config = match &self.settings.vault_addr {
            // The flag names the server; namespace and CA still come from the environment.
            Some(address) => {
                let mut config = VaultConfig::new(address);
                if let Some(namespace) = env("VAULT_NAMESPACE", "BAO_NAMESPACE") {
                    config = config.namespace(namespace);
                }
                if let Some(ca) = env("VAULT_CACERT", "BAO_CACERT") {
                    config = config.ca_cert(ca);
                }
                config
            }
            // Its message names the variables; the hint names --vault-addr.
            None => VaultConfig::from_env()?,
        };
        config = config.timeout(self.settings.timeout);
        let token = std::env::var("VAULT_TOKEN")
            .or_else(|_| std::env::var("BAO_TOKEN"))
            .map_err(|_| Error::config("no Vault token: set VAULT_TOKEN (or BAO_TOKEN)"))?;
        let session = VaultSession::connect_with(config, VaultAuth::Token(token.into())).await?;
        self.vault = Some(session.clone());
        Ok(session)
    }

    /// The cache for the store of `secret`, connecting to the store if needed.
    pub async fn cache(&mut self, secret: &SecretRef) -> Result<SecretCache> {
        let key = (secret.kind, secret.scope.clone());
        if let Some(cache) = self.caches.get(&key) {
            return Ok(cache.clone());
        }
        let provider: Arc<dyn SecretProvider> = match secret.kind {
            Kind::Aws => Arc::new(AwsSecretsManagerProvider::new(self.aws_client().await)),
            Kind::VaultKv => Arc::new(VaultKvProvider::new(
                self.vault_session().await?,
                secret.scope.clone(),
            )),
            Kind::VaultDb => Arc::new(VaultDatabaseProvider::new(
                self.vault_session().await?,
                secret.scope.clone(),
            )),
            Kind::File => Arc::new(FileProvider::new(&secret.scope)),
            Kind::Env => Arc::new(EnvProvider::new()),
        };
        let cache = SecretCache::builder(provider)
            .ttl(self.settings.ttl)
            .cold_retries(0)
            .min_refresh_interval(Duration::from_millis(500))
            .build()?;
        if !self.used.contains(&secret.kind) {
            self.used.push(secret.kind);
        }
        let _ = self.caches.insert(key, cache.clone());
        Ok(cache)
    }

    pub fn caches(&self) -> impl Iterator<Item = &SecretCache> {
        self.caches.values()
    }

    /// Revokes the leases the caches hold (dynamic database credentials) and stops them.
    pub async fn shutdown(&self, revoke: bool) -> usize {
        let mut revoked = 0;
        for cache in self.caches.values() {
            if revoke {
                revoked += cache.shutdown_revoking_leases().await.unwrap_or(0);
            } else {
                cache.shutdown().await;
            }
        }
        if let Some(session) = &self.vault {
            session.shutdown().await;
        }
        revoked
    }

    /// A handle on `secret`, opened within the timeout.
    pub async fn handle(
        &mut self,
        secret: &SecretRef,
    ) -> std::result::Result<credswap::SecretHandle<credswap::SecretValue>, crate::exit::Failure>
    {
        use crate::exit::Failure;
        let timeout = self.settings.timeout;
        let opened = tokio::time::timeout(timeout, async {
            let cache = self.cache(secret).await?;
            cache.handle_raw(&secret.id).await
        })
        .await;
        match opened {
            Ok(Ok(handle)) => Ok(handle),
            Ok(Err(error)) => Err(Failure::store(&secret.text, &error)),
            Err(_) => Err(Failure::timed_out(&secret.text, timeout)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_parse_into_store_scope_and_id() {
        let aws = SecretRef::parse("aws:prod/orders/db").unwrap();
        assert_eq!(
            (aws.kind, aws.scope.as_str(), aws.id.as_str()),
            (Kind::Aws, "", "prod/orders/db")
        );
        let kv = SecretRef::parse("vault-kv:secret/app/db").unwrap();
        assert_eq!(
            (kv.kind, kv.scope.as_str(), kv.id.as_str()),
            (Kind::VaultKv, "secret", "app/db")
        );
        let db = SecretRef::parse("vault-db:database/creds/reports").unwrap();
        assert_eq!(
            (db.kind, db.scope.as_str(), db.id.as_str()),
            (Kind::VaultDb, "database", "creds/reports")
        );
        let file = SecretRef::parse("file:/run/secrets/db.json").unwrap();
        assert_eq!(
            (file.kind, file.scope.as_str(), file.id.as_str()),
            (Kind::File, "/run/secrets", "db.json")
        );
        let local = SecretRef::parse("file:db.json").unwrap();
        assert_eq!(local.scope, ".");
        let env = SecretRef::parse("env:DB_PASSWORD").unwrap();
        assert_eq!((env.kind, env.id.as_str()), (Kind::Env, "DB_PASSWORD"));
    }

    #[test]
    fn bad_references_say_how_to_write_one() {
        for bad in [
            "prod/db",
            "aws:",
            "vault-kv:secret",
            "vault-kv:/x",
            "vault-db:database/roles/x",
            "gcp:x",
        ] {
            let message = SecretRef::parse(bad).unwrap_err();
            assert!(message.contains(bad), "{message}");
        }
    }
}
