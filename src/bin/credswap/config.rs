//! Settings: flags, then `CREDSWAP_*` environment variables (clap reads both), then the TOML
//! file given by `--config` or `CREDSWAP_CONFIG`, then defaults.
//!
//! ```toml
//! timeout = "10s"
//! ttl = "5m"
//!
//! [aws]
//! region = "eu-west-1"
//! endpoint = "http://127.0.0.1:5000"   # only for tests and emulators
//!
//! [vault]
//! address = "https://vault.internal:8200"
//!
//! [push]
//! postgres = "host=db.internal user=listener dbname=postgres"
//! redis = "redis://broker:6379"
//! channel = "credswap"
//!
//! [secrets]                             # names for `--env NAME:FIELD`
//! warehouse = "aws:prod/warehouse"
//!
//! [env]                                 # `run`'s `--env` mappings
//! DBT_PASSWORD = "warehouse:password"
//! ```

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use crate::cli::Global;
use crate::exit::Failure;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    timeout: Option<String>,
    ttl: Option<String>,
    #[serde(default)]
    aws: AwsFile,
    #[serde(default)]
    vault: VaultFile,
    #[serde(default)]
    push: PushFile,
    #[serde(default)]
    secrets: BTreeMap<String, String>,
    #[serde(default)]
    env: BTreeMap<String, String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct AwsFile {
    region: Option<String>,
    endpoint: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct VaultFile {
    address: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PushFile {
    postgres: Option<String>,
    redis: Option<String>,
    channel: Option<String>,
}

/// Everything a command needs to reach the stores and the push channel.
#[derive(Debug, Clone)]
pub struct Settings {
    pub timeout: Duration,
    pub ttl: Duration,
    pub aws_endpoint: Option<String>,
    pub aws_region: Option<String>,
    pub vault_addr: Option<String>,
    pub push_postgres: Option<String>,
    pub push_redis: Option<String>,
    pub channel: String,
    /// Named secrets, from the file (the command line's `--secret` adds and overrides).
    pub secrets: BTreeMap<String, String>,
    /// `run`'s environment mappings from the file.
    pub env: BTreeMap<String, String>,
}

pub fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text)
        .map_err(|e| format!("`{text}` is not a duration ({e}); write 10s, 5m, 1h30m"))
}

impl Settings {
    pub fn load(global: &Global) -> Result<Settings, Failure> {
        let file = match &global.config {
            Some(path) => read(path)?,
            None => File::default(),
        };
        let from_file = |value: Option<String>, what: &str| -> Result<Option<Duration>, Failure> {
            value
                .map(|v| {
                    parse_duration(&v)
                        .map_err(|e| Failure::usage(format!("{what} in the config file: {e}")))
                })
                .transpose()
        };
        Ok(Settings {
            timeout: global
                .timeout
                .or(from_file(file.timeout, "timeout")?)
                .unwrap_or(Duration::from_secs(10)),
            ttl: global
                .ttl
                .or(from_file(file.ttl, "ttl")?)
                .unwrap_or(Duration::from_secs(300)),
            aws_endpoint: global.aws_endpoint.clone().or(file.aws.endpoint),
            aws_region: global.aws_region.clone().or(file.aws.region),
            vault_addr: global.vault_addr.clone().or(file.vault.address),
            push_postgres: global.push_postgres.clone().or(file.push.postgres),
            push_redis: global.push_redis.clone().or(file.push.redis),
            channel: global
                .channel
                .clone()
                .or(file.push.channel)
                .unwrap_or_else(|| credswap::push::DEFAULT_CHANNEL.to_owned()),
            secrets: file.secrets,
            env: file.env,
        })
    }
}

fn read(path: &Path) -> Result<File, Failure> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        Failure::usage(format!(
            "cannot read the config file {}: {e}",
            path.display()
        ))
    })?;
    // toml's messages quote the offending line, which may hold anything: keep the position only.
    toml::from_str(&text).map_err(|e| {
        let at = e
            .span()
            .map(|span| {
                let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
                format!(" at line {line}")
            })
            .unwrap_or_default();
        Failure::usage(format!(
            "the config file {} is not valid{at}: {}",
            path.display(),
            e.message()
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_config_file_with_an_unknown_key_is_refused_with_its_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("credswap.toml");
        std::fs::write(&path, "timeout = \"5s\"\n[aws]\nregoin = \"x\"\n").unwrap();
        let Err(failure) = read(&path) else {
            panic!("accepted")
        };
        assert!(failure.message.contains("line 3"), "{}", failure.message);
    }

    #[test]
    fn durations_read_as_people_write_them() {
        assert_eq!(parse_duration("1m30s").unwrap(), Duration::from_secs(90));
        assert!(parse_duration("soon").unwrap_err().contains("10s"));
    }
}
