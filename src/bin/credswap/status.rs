//! `credswap status`: what the store holds of each secret, never a value.

use std::time::SystemTime;

use credswap::health::Readiness;
use credswap::{ErrorKind, Selector, Stage, Version};
use serde_json::{Value, json};

use crate::cli::StatusArgs;
use crate::exit::Failure;
use crate::store::{Kind, SecretRef, Stores};

fn stage_name(stage: &Stage) -> String {
    match stage {
        Stage::Current => "current".into(),
        Stage::Previous => "previous".into(),
        Stage::Pending => "pending".into(),
        Stage::Custom(label) => label.clone(),
        _ => format!("{stage:?}").to_ascii_lowercase(),
    }
}

fn time(at: Option<SystemTime>) -> Value {
    at.map_or(Value::Null, |at| {
        Value::String(humantime::format_rfc3339_seconds(at).to_string())
    })
}

fn version_json(version: &Version) -> Value {
    let age = version
        .created_at
        .and_then(|at| SystemTime::now().duration_since(at).ok())
        .map(|age| age.as_secs());
    json!({
        "id": version.id.as_str(),
        "stages": version.stages.iter().map(stage_name).collect::<Vec<_>>(),
        "created": time(version.created_at),
        "age_seconds": age,
        "lease": version.lease.as_ref().map(|lease| json!({
            "expires": time(Some(lease.expires_at)),
            "remaining_seconds": lease.remaining().as_secs(),
            "renewable": lease.renewable,
        })),
        "next_rotation": time(version.next_rotation),
    })
}

async fn one(stores: &mut Stores, secret: &SecretRef) -> Result<Value, Failure> {
    let handle = stores.handle(secret).await?;
    let snapshot = handle.load_full();
    let cache = stores
        .cache(secret)
        .await
        .map_err(|e| Failure::store(&secret.text, &e))?;
    let previous = match snapshot.previous_version() {
        Some(version) => Some(version.clone()),
        None if secret.kind != Kind::VaultDb => {
            match cache
                .get_selected(&secret.id, &Selector::Stage(Stage::Previous))
                .await
            {
                Ok(previous) => Some(previous.version.clone()),
                Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::InvalidRequest) => {
                    None
                }
                Err(e) => return Err(Failure::store(&secret.text, &e)),
            }
        }
        None => None,
    };
    let report = Readiness::new()
        .require(secret.text.as_str(), &handle)
        .check();
    let health = report
        .secrets
        .first()
        .map(|h| serde_json::to_value(&h.state).unwrap_or(Value::Null))
        .unwrap_or(Value::Null);
    Ok(json!({
        "secret": secret.text,
        "store": match secret.kind {
            Kind::Aws => "aws", Kind::VaultKv => "vault-kv", Kind::VaultDb => "vault-db",
            Kind::File => "file", Kind::Env => "env",
        },
        "id": secret.id,
        "current": version_json(snapshot.version()),
        "previous": previous.as_ref().map(version_json),
        "health": health,
    }))
}

fn cell(value: &Value) -> String {
    match value {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn age(seconds: &Value) -> String {
    seconds.as_u64().map_or_else(
        || "-".into(),
        |s| humantime::format_duration(std::time::Duration::from_secs(s)).to_string(),
    )
}

pub async fn status(args: StatusArgs, mut stores: Stores) -> Result<i32, Failure> {
    let secrets = args
        .secrets
        .iter()
        .map(|s| SecretRef::parse(s).map_err(Failure::usage))
        .collect::<Result<Vec<_>, _>>()?;
    let mut rows = Vec::new();
    let mut first_failure = None;
    for secret in &secrets {
        match one(&mut stores, secret).await {
            Ok(row) => rows.push(row),
            Err(failure) => {
                rows.push(json!({ "secret": secret.text, "error": failure.message }));
                first_failure.get_or_insert(failure.code);
            }
        }
    }
    // Status reads dynamic credentials by issuing them: give them back.
    let _ = stores.shutdown(true).await;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&Value::Array(rows)).unwrap_or_default()
        );
    } else {
        println!(
            "{:<32} {:<36} {:<22} {:<20} {:<14} {:<20} HEALTH",
            "SECRET", "VERSION", "STAGES", "CREATED", "AGE", "LEASE ENDS"
        );
        for row in &rows {
            if let Some(error) = row.get("error") {
                println!("{:<32} error: {}", cell(&row["secret"]), cell(error));
                continue;
            }
            let current = &row["current"];
            println!(
                "{:<32} {:<36} {:<22} {:<20} {:<14} {:<20} {}",
                cell(&row["secret"]),
                cell(&current["id"]),
                current["stages"]
                    .as_array()
                    .map(|s| s.iter().map(cell).collect::<Vec<_>>().join(","))
                    .unwrap_or_default(),
                cell(&current["created"]),
                age(&current["age_seconds"]),
                cell(&current["lease"]["expires"]),
                cell(&row["health"]["state"]),
            );
            if let Some(previous) = row.get("previous").filter(|p| !p.is_null()) {
                println!(
                    "{:<32} {:<36} {:<22} {:<20} {:<14}",
                    "",
                    cell(&previous["id"]),
                    previous["stages"]
                        .as_array()
                        .map(|s| s.iter().map(cell).collect::<Vec<_>>().join(","))
                        .unwrap_or_default(),
                    cell(&previous["created"]),
                    age(&previous["age_seconds"]),
                );
            }
        }
    }
    Ok(first_failure.unwrap_or(0))
}
