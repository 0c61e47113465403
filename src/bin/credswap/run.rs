//! `credswap run`: a command with secrets in its environment, watched and restarted.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::time::Duration;

use credswap::{SecretHandle, SecretValue, VersionId};
use tokio::time::Instant;

use crate::child::{self, Signals};
use crate::cli::RunArgs;
use crate::exit::Failure;
use crate::fields::{Content, is_locator};
use crate::mask::{self, Masker};
use crate::store::{Kind, SecretRef, Stores};

/// Where one environment variable's value comes from.
#[derive(Debug, Clone)]
enum Mapping {
    /// VAR=NAME[:FIELD]
    Field {
        var: String,
        name: String,
        field: Option<String>,
    },
    /// NAME[=PREFIX]: every field.
    Json { name: String, prefix: String },
    /// AIRFLOW_CONN_<ID>=NAME
    Airflow { conn_id: String, name: String },
}

impl Mapping {
    fn name(&self) -> &str {
        match self {
            Mapping::Field { name, .. }
            | Mapping::Json { name, .. }
            | Mapping::Airflow { name, .. } => name,
        }
    }
}

fn split(text: &str, what: &str, form: &str) -> Result<(String, String), Failure> {
    text.split_once('=')
        .filter(|(a, b)| !a.is_empty() && !b.is_empty())
        .map(|(a, b)| (a.to_owned(), b.to_owned()))
        .ok_or_else(|| Failure::usage(format!("{what} `{text}`: write {form}")))
}

fn field_mapping(var: String, source: &str) -> Mapping {
    let (name, field) = match source.split_once(':') {
        Some((name, field)) => (name.to_owned(), Some(field.to_owned())),
        None => (source.to_owned(), None),
    };
    Mapping::Field { var, name, field }
}

/// The named secrets and the mappings of the command line and the config file (the command
/// line wins where both name the same).
fn plan(
    args: &RunArgs,
    stores: &Stores,
) -> Result<(BTreeMap<String, SecretRef>, Vec<Mapping>), Failure> {
    let mut named = BTreeMap::new();
    for (name, reference) in stores.settings().secrets.clone() {
        let _ = named.insert(name, reference);
    }
    for text in &args.secrets {
        let (name, reference) = split(text, "--secret", "NAME=REFERENCE")?;
        let _ = named.insert(name, reference);
    }
    let named = named
        .into_iter()
        .map(|(name, reference)| {
            SecretRef::parse(&reference)
                .map(|r| (name.clone(), r))
                .map_err(|e| Failure::usage(format!("secret `{name}`: {e}")))
        })
        .collect::<Result<BTreeMap<_, _>, _>>()?;

    let mut by_var: BTreeMap<String, Mapping> = BTreeMap::new();
    for (var, source) in &stores.settings().env {
        let _ = by_var.insert(var.clone(), field_mapping(var.clone(), source));
    }
    for text in &args.env {
        let (var, source) = split(text, "--env", "VAR=NAME:FIELD or VAR=NAME")?;
        let _ = by_var.insert(var.clone(), field_mapping(var, &source));
    }
    let mut mappings: Vec<Mapping> = by_var.into_values().collect();
    for text in &args.env_json {
        let (name, prefix) = text.split_once('=').unwrap_or((text, ""));
        mappings.push(Mapping::Json {
            name: name.to_owned(),
            prefix: prefix.to_owned(),
        });
    }
    for text in &args.airflow_conn {
        let (conn_id, name) = split(text, "--airflow-conn", "CONN_ID=NAME")?;
        mappings.push(Mapping::Airflow { conn_id, name });
    }
    for mapping in &mappings {
        if !named.contains_key(mapping.name()) {
            let known: Vec<&str> = named.keys().map(String::as_str).collect();
            return Err(Failure::usage(format!(
                "`{}` is not a named secret (named: {}); name it with --secret {}=REFERENCE",
                mapping.name(),
                if known.is_empty() {
                    "none".to_owned()
                } else {
                    known.join(", ")
                },
                mapping.name()
            )));
        }
    }
    Ok((named, mappings))
}

/// What the child gets from the secrets: its variables, and the values `--mask` hides.
struct ChildEnv {
    vars: Vec<(String, String)>,
    secret_values: Vec<String>,
}

/// The environment for the child from the handles' current values.
fn environment(
    mappings: &[Mapping],
    named: &BTreeMap<String, SecretRef>,
    handles: &BTreeMap<String, SecretHandle<SecretValue>>,
) -> Result<ChildEnv, Failure> {
    let mut env = Vec::new();
    let mut secret_values = Vec::new();
    for mapping in mappings {
        let name = mapping.name();
        let reference = &named[name].text;
        let snapshot = handles[name].load_full();
        let content = Content::parse(snapshot.current().expose_secret())
            .ok_or_else(|| Failure::data(format!("secret `{name}` ({reference}) is not text")))?;
        let about = |e: String| Failure::data(format!("secret `{name}` ({reference}) {e}"));
        match mapping {
            Mapping::Field {
                var,
                field: Some(field),
                ..
            } => {
                let value = content.field(field).map_err(about)?;
                if !is_locator(field) {
                    secret_values.push(value.clone());
                }
                env.push((var.clone(), value));
            }
            Mapping::Field {
                var, field: None, ..
            } => {
                let value = content.whole();
                secret_values.push(value.clone());
                // The fields of a JSON value are secrets on their own too, when printed apart.
                for (_, field, leaf) in content.flatten("").unwrap_or_default() {
                    if !is_locator(&field) {
                        secret_values.push(leaf);
                    }
                }
                env.push((var.clone(), value));
            }
            Mapping::Json { prefix, .. } => {
                for (var, field, value) in content.flatten(prefix).map_err(about)? {
                    if !is_locator(&field) {
                        secret_values.push(value.clone());
                    }
                    env.push((var, value));
                }
            }
            Mapping::Airflow { conn_id, .. } => {
                let value = content.airflow().map_err(about)?;
                if let Ok(password) = content.field("password") {
                    secret_values.push(password);
                }
                secret_values.push(value.clone());
                env.push((
                    format!("AIRFLOW_CONN_{}", conn_id.to_ascii_uppercase()),
                    value,
                ));
            }
        }
    }
    Ok(ChildEnv {
        vars: env,
        secret_values,
    })
}

/// The variables the child does not get: the stores' own credentials and credswap's settings.
fn removed(stores: &Stores) -> Vec<String> {
    let mut names: Vec<String> = std::env::vars_os()
        .filter_map(|(k, _)| k.into_string().ok())
        .filter(|k| k.starts_with("CREDSWAP_"))
        .collect();
    if stores
        .used
        .iter()
        .any(|k| matches!(k, Kind::VaultKv | Kind::VaultDb))
    {
        names.extend(["VAULT_TOKEN", "BAO_TOKEN"].map(String::from));
    }
    if stores.used.contains(&Kind::Aws) {
        names.extend(
            [
                "AWS_ACCESS_KEY_ID",
                "AWS_SECRET_ACCESS_KEY",
                "AWS_SESSION_TOKEN",
                "AWS_SECURITY_TOKEN",
            ]
            .map(String::from),
        );
    }
    names
}

fn versions(handles: &BTreeMap<String, SecretHandle<SecretValue>>) -> Vec<VersionId> {
    handles
        .values()
        .map(|h| h.load().version().id.clone())
        .collect()
}

pub async fn run(args: RunArgs, mut stores: Stores) -> Result<i32, Failure> {
    let (named, mappings) = plan(&args, &stores)?;
    let stop_signal = child::parse_signal(&args.stop_signal)?;
    let reload_signal = args
        .reload_signal
        .as_deref()
        .map(child::parse_signal)
        .transpose()?;
    // Install the handlers before anything else, so no signal is lost while secrets load.
    let mut signals = Signals::install()?;

    let mut handles = BTreeMap::new();
    for (name, reference) in &named {
        if mappings.iter().any(|m| m.name() == name) {
            let handle = stores.handle(reference).await?;
            let _ = handles.insert(name.clone(), handle);
        }
    }
    let _subscriber = if args.watch {
        crate::notify::subscribe(&stores).await?
    } else {
        None
    };
    let remove = if args.pass_store_credentials {
        Vec::new()
    } else {
        removed(&stores)
    };
    let interactive = std::io::stdin().is_terminal();

    let result = supervise(
        &args,
        &named,
        &mappings,
        &handles,
        &remove,
        stop_signal,
        reload_signal,
        interactive,
        &mut signals,
    )
    .await;
    let revoked = stores.shutdown(!args.keep_leases).await;
    if revoked > 0 {
        eprintln!("credswap: revoked {revoked} lease(s)");
    }
    result
}

/// How one start of the command ended.
enum Ended {
    /// It exited by itself (or after a signal `run` forwarded): `run` ends with its status.
    Exited(std::io::Result<std::process::ExitStatus>),
    /// `--watch` stopped it for new secrets: start it again.
    Restart,
}

#[allow(clippy::too_many_arguments)]
async fn supervise(
    args: &RunArgs,
    named: &BTreeMap<String, SecretRef>,
    mappings: &[Mapping],
    handles: &BTreeMap<String, SecretHandle<SecretValue>>,
    remove: &[String],
    stop_signal: i32,
    reload_signal: Option<i32>,
    interactive: bool,
    signals: &mut Signals,
) -> Result<i32, Failure> {
    loop {
        let ChildEnv {
            vars,
            secret_values: values,
        } = environment(mappings, named, handles)?;
        let mut child = child::spawn(&args.command, &vars, remove, args.mask)?;
        let mut copies = Vec::new();
        if args.mask {
            if let Some(out) = child.stdout.take() {
                copies.push(tokio::spawn(mask::copy(
                    out,
                    tokio::io::stdout(),
                    Masker::new(values.clone()),
                )));
            }
            if let Some(err) = child.stderr.take() {
                copies.push(tokio::spawn(mask::copy(
                    err,
                    tokio::io::stderr(),
                    Masker::new(values),
                )));
            }
        }
        let mut check = tokio::time::interval(Duration::from_millis(200));
        let mut restart_at: Option<Instant> = None;
        let mut seen = versions(handles);
        let ended = loop {
            tokio::select! {
                status = child.wait() => break Ended::Exited(status),
                number = signals.recv() => {
                    if child::should_forward(number, interactive) {
                        child::send(&child, number);
                    }
                }
                _ = check.tick(), if args.watch && restart_at.is_none() => {
                    let now = versions(handles);
                    if now != seen {
                        if let Some(reload) = reload_signal {
                            eprintln!("credswap: a secret changed; sending the reload signal");
                            child::send(&child, reload);
                            seen = now;
                        } else {
                            let splay = args.splay.mul_f64(fastrand::f64());
                            eprintln!("credswap: a secret changed; restarting in {splay:.1?}");
                            restart_at = Some(Instant::now() + splay);
                        }
                    }
                }
                () = sleep_until(restart_at) => {
                    let status = child::stop(&mut child, stop_signal, args.grace).await;
                    eprintln!(
                        "credswap: the command stopped (exit code {}); starting it again with the new secrets",
                        status.map_or(-1, child::code_of)
                    );
                    break Ended::Restart;
                }
            }
        };
        for copy in copies {
            let _ = copy.await;
        }
        match ended {
            Ended::Restart => continue,
            Ended::Exited(status) => {
                return status.map(child::code_of).map_err(|e| {
                    Failure::new(
                        crate::exit::SOFTWARE,
                        format!("waiting for the command: {e}"),
                    )
                });
            }
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
