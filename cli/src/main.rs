//! `tokenstore`: inspect, edit, migrate, export, revoke and check token stores from the
//! command line.
//!
//! Tokens are shown redacted (first and last few characters) unless `--reveal` is given.
//! Every command prints text, or one JSON document with `--json`; exit codes say what kind
//! of failure happened (see [`exit::Code`] and `docs/cli.md`).

mod args;
mod cmd;
mod exit;
mod input;
mod out;
mod revoke;
mod store;

use std::process::ExitCode;

use clap::{CommandFactory, Parser};

use crate::args::{Cli, Command};
use crate::exit::{CliResult, Code, Failure};
use crate::out::{Report, envelope, error_document};

fn main() -> ExitCode {
    // `args_os`: an argument that is not UTF-8 must reach clap's error, not panic here.
    let json_requested = std::env::args_os().any(|a| a == "--json");
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // Help and version are not errors; parse errors exit 2 like every usage error.
            if json_requested && e.use_stderr() {
                let rendered = e.to_string();
                let first = rendered.lines().next().unwrap_or_default();
                let message = out::clean(first.strip_prefix("error: ").unwrap_or(first));
                println!("{}", error_document("", Code::Usage, &message));
            }
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() {
                Code::Usage.number()
            } else {
                0
            });
        }
    };
    if cli.verbose {
        tracing_subscriber::fmt()
            .with_writer(std::io::stderr)
            .with_env_filter("token_store=debug,token_store_core=debug,tokenstore=debug")
            .init();
    }
    let command = cli.command.name();
    let json = cli.json;
    let outcome = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime.block_on(run(cli)),
        Err(e) => Err(Failure::new(
            Code::Failure,
            format!("cannot start the async runtime: {e}"),
        )),
    };
    let code = match outcome {
        Ok(report) => {
            if json {
                println!(
                    "{}",
                    envelope(command, report.code, report.json, &report.warnings)
                );
            } else {
                if report.text_on_stderr {
                    eprint!("{}", report.text);
                } else {
                    print!("{}", report.text);
                }
                for w in &report.warnings {
                    eprintln!("warning: {w}");
                }
            }
            report.code
        }
        Err(f) => {
            eprintln!("error: {}", f.message);
            if json {
                println!("{}", error_document(command, f.code, &f.message));
            }
            f.code
        }
    };
    ExitCode::from(code.number())
}

async fn run(cli: Cli) -> CliResult<Report> {
    let store_url = cli.store.as_deref();
    match cli.command {
        Command::Completions { shell } => {
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "tokenstore", &mut script);
            let script = String::from_utf8_lossy(&script).into_owned();
            Ok(Report::new(
                script.clone(),
                serde_json::json!({"shell": shell.to_string(), "script": script}),
            ))
        }
        Command::Rekey {
            new_key_file,
            new_passphrase_env,
        } => cmd::rekey::run(store_url, new_key_file, new_passphrase_env).await,
        command => {
            let opened = store::open(store_url).await?;
            let store = &opened.store;
            match command {
                Command::Status { within, user } => cmd::status::run(&opened, within, user).await,
                Command::List { user, resource } => cmd::list::run(&opened, user, resource).await,
                Command::Get { key, reveal } => cmd::get::run(store, &key, reveal).await,
                Command::Put { key, file, create } => {
                    cmd::put::run(store, &key, file.as_deref(), create).await
                }
                Command::Delete { key } => cmd::delete::run(store, &key).await,
                Command::Logout { key, revoke } => cmd::logout::run(&opened, &key, &revoke).await,
                Command::Migrate { to } => cmd::migrate::run(&opened, &to).await,
                Command::Export { output, user, key } => {
                    cmd::bundle::export(&opened, &output, user, &key, cli.json).await
                }
                Command::Import {
                    input,
                    overwrite,
                    key,
                } => cmd::bundle::import(&opened, &input, overwrite, &key).await,
                Command::Doctor => cmd::doctor::run(&opened).await,
                Command::Bench { ops } => cmd::bench::run(&opened, ops).await,
                Command::Completions { .. } | Command::Rekey { .. } => {
                    unreachable!("handled above")
                }
            }
        }
    }
}
