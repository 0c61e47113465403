//! `credswap notify`, and the push subscription of `run --watch`.

use credswap::push::{Publisher, Subscriber};
use credswap::{Selector, VersionId};

use crate::cli::NotifyArgs;
use crate::exit::{Failure, UNAVAILABLE};
use crate::store::{SecretRef, Stores};

fn pg_config(conninfo: &str) -> Result<tokio_postgres::Config, Failure> {
    conninfo.parse().map_err(|_| {
        Failure::usage(
            "--push-postgres: not a PostgreSQL connection string (host=... user=... dbname=...)",
        )
    })
}

/// A subscriber on the configured push channel over every cache of `stores`, if one is set.
pub async fn subscribe(stores: &Stores) -> Result<Option<Subscriber>, Failure> {
    let settings = stores.settings();
    let builder = if let Some(conninfo) = &settings.push_postgres {
        let listener = credswap::push::PgListener::new(pg_config(conninfo)?, &settings.channel)
            .map_err(|e| Failure::store("--push-postgres", &e))?;
        Subscriber::builder(listener)
    } else if let Some(url) = &settings.push_redis {
        let listener = credswap::push::RedisListener::open(url, &settings.channel)
            .map_err(|e| Failure::store("--push-redis", &e))?;
        Subscriber::builder(listener)
    } else {
        return Ok(None);
    };
    let builder = stores
        .caches()
        .fold(builder, |b, cache| b.cache(cache.clone()));
    builder
        .start()
        .map(Some)
        .map_err(|e| Failure::store("the push channel", &e))
}

async fn publisher(stores: &Stores) -> Result<Box<dyn Publisher>, Failure> {
    let settings = stores.settings();
    let timeout = settings.timeout;
    if let Some(conninfo) = &settings.push_postgres {
        let config = pg_config(conninfo)?;
        let publisher = tokio::time::timeout(
            timeout,
            credswap::push::PgPublisher::connect(&config, &settings.channel),
        )
        .await
        .map_err(|_| Failure::timed_out("--push-postgres", timeout))?
        .map_err(|e| Failure::store("--push-postgres", &e))?;
        Ok(Box::new(publisher))
    } else if let Some(url) = &settings.push_redis {
        let publisher = credswap::push::RedisPublisher::open(url, &settings.channel)
            .map_err(|e| Failure::store("--push-redis", &e))?;
        Ok(Box::new(publisher))
    } else {
        Err(Failure::usage(
            "no push channel: pass --push-postgres CONNINFO or --push-redis URL (or set them in the config file)",
        ))
    }
}

/// Announces `version` of `secret` (by the id its store knows it by: what subscribers' caches
/// hold).
pub async fn announce(
    stores: &Stores,
    secret: &SecretRef,
    version: &VersionId,
) -> Result<(), Failure> {
    let publisher = publisher(stores).await?;
    let timeout = stores.settings().timeout;
    match tokio::time::timeout(timeout, publisher.announce(&secret.id, version)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(Failure::new(
            UNAVAILABLE,
            format!("announcing {}: {e}", secret.text),
        )),
        Err(_) => Err(Failure::timed_out("the push channel", timeout)),
    }
}

pub async fn notify(args: NotifyArgs, mut stores: Stores) -> Result<i32, Failure> {
    let secret = SecretRef::parse(&args.secret).map_err(Failure::usage)?;
    let version = match args.version {
        Some(version) => VersionId::new(version),
        None => current_version(&mut stores, &secret).await?,
    };
    announce(&stores, &secret, &version).await?;
    println!("announced {} at version {version}", secret.text);
    stores.shutdown(true).await;
    Ok(0)
}

/// The store's current version of `secret`, by its cheap probe when it has one.
pub async fn current_version(
    stores: &mut Stores,
    secret: &SecretRef,
) -> Result<VersionId, Failure> {
    let timeout = stores.settings().timeout;
    let cache = tokio::time::timeout(timeout, stores.cache(secret))
        .await
        .map_err(|_| Failure::timed_out(&secret.text, timeout))?
        .map_err(|e| Failure::store(&secret.text, &e))?;
    let provider = cache.provider().clone();
    let probe = async {
        match provider.probe(&secret.id, &Selector::Current).await? {
            Some(version) => Ok(version),
            None => provider
                .fetch(&secret.id, &Selector::Current)
                .await
                .map(|v| v.version.id),
        }
    };
    match tokio::time::timeout(timeout, probe).await {
        Ok(Ok(version)) => Ok(version),
        Ok(Err(e)) => Err(Failure::store(&secret.text, &e)),
        Err(_) => Err(Failure::timed_out(&secret.text, timeout)),
    }
}
