//! The `walua` command line: parse arguments, load the configuration, set up logging, and
//! call into the library.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use walua::Config;
use walua::config::LogFormat;

/// WhatsApp Cloud API automation daemon with Lua scripts.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// Configuration file. Defaults to conf/walua.toml, or the embedded dry-run example
    /// when that file does not exist.
    #[arg(long, global = true, env = "WALUA_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon.
    Serve,
    /// Load the configuration and report every error; exit 1 if any.
    Check,
    /// List conversations of a running daemon, most recent first.
    Conversations {
        /// How many.
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// List a contact's messages (phone or BSUID), oldest first.
    Messages {
        /// Phone number or BSUID.
        contact: String,
        /// How many (the latest ones).
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
}

const DEFAULT_CONFIG: &str = "conf/walua.toml";

fn load_config(path: Option<&Path>) -> anyhow::Result<Config> {
    match path {
        Some(p) => Ok(Config::load(p)?),
        None if Path::new(DEFAULT_CONFIG).exists() => Ok(Config::load(Path::new(DEFAULT_CONFIG))?),
        None => Ok(Config::embedded_default()),
    }
}

fn init_logging(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&config.log.level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match config.log.format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match real_main(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("walua: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn real_main(cli: Cli) -> anyhow::Result<ExitCode> {
    let config = match load_config(cli.config.as_deref()) {
        Ok(c) => c,
        Err(e) if matches!(cli.command, Command::Check) => {
            println!("{e:#}");
            return Ok(ExitCode::FAILURE);
        }
        Err(e) => return Err(e),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    match cli.command {
        Command::Serve => {
            init_logging(&config);
            runtime.block_on(async {
                let listener = tokio::net::TcpListener::bind(config.server.listen)
                    .await
                    .with_context(|| format!("cannot listen on {}", config.server.listen))?;
                walua::run(config, listener, shutdown_signal()).await?;
                Ok(ExitCode::SUCCESS)
            })
        }
        Command::Check => {
            println!("{}: configuration OK", config.file.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Conversations { limit } => runtime.block_on(async {
            let client = walua::cli::AdminClient::new(&config);
            let answer = client
                .request(reqwest::Method::GET, &format!("/api/conversations?limit={limit}"), None)
                .await?;
            print!("{}", walua::cli::render_conversations(&answer));
            Ok(ExitCode::SUCCESS)
        }),
        Command::Messages { contact, limit } => runtime.block_on(async {
            let client = walua::cli::AdminClient::new(&config);
            let path = format!(
                "/api/conversations/{}/messages?limit={limit}",
                percent_encoding::utf8_percent_encode(&contact, percent_encoding::NON_ALPHANUMERIC)
            );
            let answer = client.request(reqwest::Method::GET, &path, None).await?;
            print!("{}", walua::cli::render_messages(&answer));
            Ok(ExitCode::SUCCESS)
        }),
    }
}

/// Completes on SIGTERM (systemd stop) or SIGINT (Ctrl-C).
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler installs");
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
    }
}
