//! `credswap`: fresh secrets for pipelines and operators. See `credswap --help` and the
//! README's "Pipelines" section.

mod child;
mod cli;
mod config;
mod db_tls;
mod exit;
mod fields;
mod get;
mod mask;
mod notify;
mod rotate;
mod run;
mod status;
mod store;

use clap::Parser;

use crate::cli::{Cli, Command};
use crate::config::Settings;
use crate::exit::{Failure, USAGE};
use crate::store::Stores;

fn main() {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            let code = if error.use_stderr() { USAGE } else { 0 };
            let _ = error.print();
            std::process::exit(code);
        }
    };
    let code = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime.block_on(dispatch(cli)),
        Err(e) => Err(Failure::new(exit::SOFTWARE, format!("cannot start: {e}"))),
    };
    match code {
        Ok(code) => std::process::exit(code),
        Err(failure) => {
            eprintln!("credswap: {}", failure.message);
            std::process::exit(failure.code);
        }
    }
}

async fn dispatch(cli: Cli) -> Result<i32, Failure> {
    let settings = Settings::load(&cli.global)?;
    let stores = Stores::new(settings);
    match cli.command {
        Command::Run(args) => run::run(args, stores).await,
        Command::Get(args) => get::get(args, stores).await,
        Command::Status(args) => status::status(args, stores).await,
        Command::Rotate(args) => rotate::rotate(args, stores).await,
        Command::Notify(args) => notify::notify(args, stores).await,
    }
}
