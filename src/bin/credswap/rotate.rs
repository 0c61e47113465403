//! `credswap rotate`: the rotation engine from the command line.

use std::sync::Arc;
use std::time::Duration;

use credswap::rotation::{
    AuditActivity, AwsRotationStore, PostgresTarget, RotationOutcome, RotationStore, Rotator, Step,
    StepOutcome, Strategy, VaultKvRotationStore,
};
use secrecy::ExposeSecret;

use crate::cli::{RotateArgs, StepArg, StrategyArg};
use crate::exit::Failure;
use crate::fields::Content;
use crate::store::{Kind, SecretRef, Stores};

/// The admin credential: from `--admin-secret`, else `CREDSWAP_ADMIN_USER`/`_PASSWORD`.
async fn admin(
    args: &RotateArgs,
    stores: &mut Stores,
) -> Result<(String, secrecy::SecretString), Failure> {
    if let Some(reference) = &args.admin_secret {
        let secret = SecretRef::parse(reference)
            .map_err(|e| Failure::usage(format!("--admin-secret: {e}")))?;
        let handle = stores.handle(&secret).await?;
        let snapshot = handle.load_full();
        let content = Content::parse(snapshot.current().expose_secret())
            .ok_or_else(|| Failure::data(format!("--admin-secret {reference} is not text")))?;
        let field = |name: &str| {
            content
                .field(name)
                .map_err(|e| Failure::data(format!("--admin-secret {reference} {e}")))
        };
        return Ok((field("username")?, field("password")?.into()));
    }
    match (
        std::env::var("CREDSWAP_ADMIN_USER"),
        std::env::var("CREDSWAP_ADMIN_PASSWORD"),
    ) {
        (Ok(user), Ok(password)) => Ok((user, password.into())),
        _ => Err(Failure::usage(
            "no admin credential: pass --admin-secret REF (a JSON secret with username and \
             password), or set CREDSWAP_ADMIN_USER and CREDSWAP_ADMIN_PASSWORD",
        )),
    }
}

pub async fn rotate(args: RotateArgs, mut stores: Stores) -> Result<i32, Failure> {
    let secret = SecretRef::parse(&args.secret).map_err(Failure::usage)?;
    let store: Arc<dyn RotationStore> = match secret.kind {
        Kind::Aws => Arc::new(AwsRotationStore::new(stores.aws_client().await)),
        Kind::VaultKv => {
            let timeout = stores.settings().timeout;
            let session = tokio::time::timeout(timeout, stores.vault_session())
                .await
                .map_err(|_| Failure::timed_out(&secret.text, timeout))?
                .map_err(|e| Failure::store(&secret.text, &e))?;
            Arc::new(VaultKvRotationStore::new(session, secret.scope.clone()))
        }
        _ => {
            return Err(Failure::usage(format!(
                "{}: rotate keeps credentials in AWS Secrets Manager (aws:NAME) or Vault KV \
                 (vault-kv:MOUNT/PATH); Vault's database engine rotates its own",
                secret.text
            )));
        }
    };
    let (user, password) = admin(&args, &mut stores).await?;
    let mut endpoint = tokio_postgres::Config::new();
    let _ = endpoint
        .host(&args.db_host)
        .port(args.db_port)
        .dbname(&args.db_name)
        .connect_timeout(stores.settings().timeout);
    let target = PostgresTarget::new()
        .connection(endpoint)
        .admin(user, password.expose_secret().to_owned());
    let target: Arc<dyn credswap::rotation::RotationTarget> = if args.db_plaintext {
        if args.db_ca.is_some() {
            return Err(Failure::usage(
                "--db-ca and --db-plaintext contradict each other",
            ));
        }
        Arc::new(target.allow_plaintext())
    } else {
        Arc::new(target.tls(crate::db_tls::connector(args.db_ca.as_deref())?))
    };
    let strategy = match args.strategy {
        StrategyArg::Single => Strategy::SingleUser,
        StrategyArg::Alternating => Strategy::alternating_users(),
    };
    let rotator = Rotator::builder(store, target)
        .strategy(strategy)
        .store_timeout(stores.settings().timeout)
        .build()
        .map_err(|e| Failure::store(&secret.text, &e))?;
    let mut events = rotator.subscribe();
    let progress = tokio::spawn(async move {
        while let Ok(event) = events.recv().await {
            let what = match event.activity {
                AuditActivity::Step(step) => step.to_string(),
                AuditActivity::Rollback => "rollback".to_owned(),
                _ => continue,
            };
            println!(
                "  {what:<9} {:<12} {:>9.1?}",
                event.outcome.to_string(),
                event.duration
            );
        }
    });

    let result = if let (Some(step), Some(token)) = (args.step, &args.token) {
        let step = match step {
            StepArg::Create => Step::Create,
            StepArg::Set => Step::Set,
            StepArg::Test => Step::Test,
            StepArg::Finish => Step::Finish,
        };
        println!("{}: {step} with token {token}", secret.text);
        rotator
            .step(&secret.id, token, step)
            .await
            .map(|outcome| match outcome {
                StepOutcome::Done => format!("{step}: done"),
                StepOutcome::AlreadyDone => format!("{step}: already done, nothing changed"),
                other => format!("{step}: {other:?}"),
            })
    } else {
        println!(
            "rotating {} ({}):",
            secret.text,
            match args.strategy {
                StrategyArg::Single => "single user",
                StrategyArg::Alternating => "alternating users",
            }
        );
        let outcome = match args.if_due {
            Some(age) => rotator.rotate_if_due(&secret.id, age).await,
            None => rotator.rotate(&secret.id).await,
        };
        match outcome {
            Ok(RotationOutcome::Rotated {
                old_version,
                new_version,
                ..
            }) => {
                if args.notify {
                    crate::notify::announce(&stores, &secret, &new_version).await?;
                    println!("  announced {new_version} on the push channel");
                }
                Ok(format!("rotated: {old_version} -> {new_version}"))
            }
            Ok(RotationOutcome::NotDue {
                current_version,
                age,
            }) => Ok(format!(
                "not due: {current_version} is {} old",
                humantime::format_duration(Duration::from_secs(age.as_secs()))
            )),
            Ok(RotationOutcome::UnderWay { .. }) => {
                Ok("another rotator is rotating it now; nothing done".to_owned())
            }
            Ok(other) => Ok(format!("{other:?}")),
            Err(e) => Err(e),
        }
    };
    // Let the last events print.
    tokio::time::sleep(Duration::from_millis(50)).await;
    progress.abort();
    stores.shutdown(false).await;
    match result {
        Ok(summary) => {
            println!("{summary}");
            Ok(0)
        }
        Err(e) => Err(Failure::rotation(&secret.text, &e, !args.db_plaintext)),
    }
}
