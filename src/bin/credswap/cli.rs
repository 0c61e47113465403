//! The command line.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::config::parse_duration;

const REFERENCES: &str = "\
Secret references:
  aws:NAME                     AWS Secrets Manager (credentials and region as the AWS SDK finds them)
  vault-kv:MOUNT/PATH          Vault or OpenBao KV v2 (VAULT_ADDR or BAO_ADDR, VAULT_TOKEN or BAO_TOKEN)
  vault-db:MOUNT/creds/ROLE    Vault database engine, dynamic credentials (leased; revoked when run ends)
  vault-db:MOUNT/static-creds/ROLE   ... static roles
  file:PATH                    a file (a mounted Kubernetes secret, say)
  env:VAR                      an environment variable

Exit codes: 0 success (run: the command's own), 64 usage or configuration, 65 a field or value
not as asked, 66 secret not found, 69 store unreachable, too slow or throttling, 70 other
failure, 77 access denied, 126/127 command not executable/not found, 128+N command killed by
signal N.";

/// Fresh secrets for pipelines and operators: run tools with them, rotate, announce, inspect.
#[derive(Debug, Parser)]
#[command(name = "credswap", version, after_help = REFERENCES)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

/// Options every command takes; flags win over `CREDSWAP_*` variables, which win over the file.
#[derive(Debug, Args)]
pub struct Global {
    /// A TOML file with defaults, named secrets and env mappings.
    #[arg(long, global = true, env = "CREDSWAP_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Fail when a store does not answer within this long (default 10s).
    #[arg(long, global = true, env = "CREDSWAP_TIMEOUT", value_parser = parse_duration)]
    pub timeout: Option<Duration>,
    /// How long a value is trusted before it is checked again (run --watch; default 5m).
    #[arg(long, global = true, env = "CREDSWAP_TTL", value_parser = parse_duration)]
    pub ttl: Option<Duration>,
    /// AWS region (else the SDK's: AWS_REGION, the profile).
    #[arg(long, global = true, env = "CREDSWAP_AWS_REGION")]
    pub aws_region: Option<String>,
    /// AWS endpoint override (emulators, VPC endpoints).
    #[arg(long, global = true, env = "CREDSWAP_AWS_ENDPOINT", value_name = "URL")]
    pub aws_endpoint: Option<String>,
    /// Vault or OpenBao address (else VAULT_ADDR or BAO_ADDR).
    #[arg(long, global = true, env = "CREDSWAP_VAULT_ADDR", value_name = "URL")]
    pub vault_addr: Option<String>,
    /// Push over PostgreSQL LISTEN/NOTIFY: a libpq connection string.
    #[arg(
        long,
        global = true,
        env = "CREDSWAP_PUSH_POSTGRES",
        value_name = "CONNINFO"
    )]
    pub push_postgres: Option<String>,
    /// Push over Redis pub/sub: redis://HOST:PORT.
    #[arg(long, global = true, env = "CREDSWAP_PUSH_REDIS", value_name = "URL")]
    pub push_redis: Option<String>,
    /// The push channel's name.
    #[arg(long, global = true, env = "CREDSWAP_CHANNEL")]
    pub channel: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    Run(RunArgs),
    Get(GetArgs),
    Status(StatusArgs),
    Rotate(RotateArgs),
    Notify(NotifyArgs),
}

/// Run a command with secrets in its environment.
///
/// The command's exit code is passed through; every signal credswap receives is forwarded to
/// it; the stores' own credentials (VAULT_TOKEN, BAO_TOKEN, the AWS_* keys, CREDSWAP_*) are not
/// passed on; leases of dynamic credentials are revoked when it ends.
#[derive(Debug, Args)]
#[command(after_help = "Examples:
  credswap run --secret wh=aws:prod/warehouse \\
      --env DBT_USER=wh:username --env DBT_PASSWORD=wh:password -- dbt run
  credswap run --secret db=vault-db:database/creds/reports --env-json db=PG -- psql -c 'select 1'
  credswap run --secret db=aws:prod/orders --airflow-conn orders_db=db -- airflow tasks test ...
  credswap run --watch --grace 30s --splay 20s --secret db=aws:prod/orders \\
      --env DATABASE_PASSWORD=db:password -- ./worker")]
pub struct RunArgs {
    /// Name a secret: NAME=REFERENCE (repeatable).
    #[arg(long = "secret", short = 's', value_name = "NAME=REF")]
    pub secrets: Vec<String>,
    /// Set VAR to a secret's field (NAME:FIELD, dotted for nested) or whole value (NAME).
    #[arg(long = "env", short = 'e', value_name = "VAR=NAME[:FIELD]")]
    pub env: Vec<String>,
    /// Set every field of a JSON secret, upper-cased, under PREFIX (NAME=PREFIX; NAME alone:
    /// no prefix).
    #[arg(long = "env-json", value_name = "NAME[=PREFIX]")]
    pub env_json: Vec<String>,
    /// Set AIRFLOW_CONN_<CONN_ID> to the secret as an Airflow connection (CONN_ID=NAME).
    #[arg(long = "airflow-conn", value_name = "CONN_ID=NAME")]
    pub airflow_conn: Vec<String>,
    /// Restart the command when a secret changes (TTL, push, a lease about to end).
    #[arg(long)]
    pub watch: bool,
    /// With --watch: the signal that asks the command to stop.
    #[arg(long, default_value = "TERM", value_name = "SIGNAL")]
    pub stop_signal: String,
    /// With --watch: how long the command has to stop before SIGKILL.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub grace: Duration,
    /// With --watch: wait a random time up to this long before restarting, so a fleet does not
    /// restart in step.
    #[arg(long, default_value = "0s", value_parser = parse_duration)]
    pub splay: Duration,
    /// With --watch: send this signal instead of restarting (for a command that re-reads its
    /// secrets by itself).
    #[arg(long, value_name = "SIGNAL")]
    pub reload_signal: Option<String>,
    /// Replace secret values in the command's output with [MASKED].
    #[arg(long)]
    pub mask: bool,
    /// Leave leases of dynamic credentials alive when the command ends.
    #[arg(long)]
    pub keep_leases: bool,
    /// Pass the stores' own credentials on to the command.
    #[arg(long)]
    pub pass_store_credentials: bool,
    /// The command and its arguments.
    #[arg(last = true, required = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Format {
    /// The value (or field) as it is.
    Raw,
    /// JSON: the whole secret, or the field as a JSON string.
    Json,
    /// Shell assignments, one per field (NAME='value'), for eval.
    Env,
}

/// Print a secret for a script. Refuses a terminal unless --reveal.
#[derive(Debug, Args)]
#[command(after_help = "Examples:
  PGPASSWORD=$(credswap get aws:prod/orders --field password) psql -h db -U app
  eval \"$(credswap get vault-kv:secret/app --format env --prefix APP_)\"")]
pub struct GetArgs {
    /// The secret's reference.
    pub secret: String,
    /// One field (dotted for nested).
    #[arg(long, short = 'f')]
    pub field: Option<String>,
    #[arg(long, value_enum, default_value = "raw")]
    pub format: Format,
    /// With --format env: a prefix for the names.
    #[arg(long, default_value = "")]
    pub prefix: String,
    /// Print even to a terminal.
    #[arg(long)]
    pub reveal: bool,
}

/// Versions, stages, creation times, age, lease end and health of secrets; never a value.
#[derive(Debug, Args)]
#[command(after_help = "Example:\n  credswap status aws:prod/orders vault-kv:secret/app --json")]
pub struct StatusArgs {
    /// The secrets' references.
    #[arg(required = true)]
    pub secrets: Vec<String>,
    /// JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum StrategyArg {
    /// One role; its password changes.
    Single,
    /// Two roles, ROLE and ROLE_clone, take turns.
    Alternating,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum StepArg {
    Create,
    Set,
    Test,
    Finish,
}

/// Rotate a PostgreSQL credential kept in AWS Secrets Manager or Vault KV.
///
/// The database is the one given here (--db-host etc.), never one the secret names. The admin
/// credential comes from --admin-secret (a JSON secret with username and password) or from
/// CREDSWAP_ADMIN_USER and CREDSWAP_ADMIN_PASSWORD.
#[derive(Debug, Args)]
#[command(after_help = "Examples:
  credswap rotate aws:prod/orders --db-host db.internal --admin-secret aws:prod/pg-admin
  credswap rotate vault-kv:secret/orders --db-host db --strategy alternating --if-due 30d
  credswap rotate aws:prod/orders --db-host db --step set --token \"$TOKEN\"   # as AWS invokes a rotation function")]
pub struct RotateArgs {
    /// The secret's reference (aws:NAME or vault-kv:MOUNT/PATH).
    pub secret: String,
    #[arg(long, value_enum, default_value = "single")]
    pub strategy: StrategyArg,
    /// The database server.
    #[arg(long, env = "CREDSWAP_DB_HOST")]
    pub db_host: String,
    #[arg(long, env = "CREDSWAP_DB_PORT", default_value_t = 5432)]
    pub db_port: u16,
    #[arg(long, env = "CREDSWAP_DB_NAME", default_value = "postgres")]
    pub db_name: String,
    /// The CA certificate(s), PEM, that the database server's certificate must chain to (default:
    /// the system's trusted roots). Connections always use TLS unless --db-plaintext.
    #[arg(long, env = "CREDSWAP_DB_CA", value_name = "FILE")]
    pub db_ca: Option<std::path::PathBuf>,
    /// Connect without TLS (a local or otherwise protected network only).
    #[arg(long)]
    pub db_plaintext: bool,
    /// The admin credential: a JSON secret with username and password.
    #[arg(long, value_name = "REF")]
    pub admin_secret: Option<String>,
    /// Skip a secret whose current version is younger than this.
    #[arg(long, value_parser = parse_duration, value_name = "AGE")]
    pub if_due: Option<Duration>,
    /// Run one step with --token, as AWS invokes a rotation function.
    #[arg(long, value_enum, requires = "token")]
    pub step: Option<StepArg>,
    /// The rotation's token (with --step).
    #[arg(long, requires = "step")]
    pub token: Option<String>,
    /// Announce the new version on the push channel when done.
    #[arg(long)]
    pub notify: bool,
}

/// Announce a secret's current version on the push channel, so every subscriber refreshes it.
#[derive(Debug, Args)]
#[command(
    after_help = "Example:\n  credswap notify aws:prod/orders --push-redis redis://broker:6379"
)]
pub struct NotifyArgs {
    /// The secret's reference.
    pub secret: String,
    /// The version to announce (default: the store's current one).
    #[arg(long)]
    pub version: Option<String>,
}
