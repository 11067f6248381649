//! The `walua` command line: parse arguments, load the configuration, set up logging, and
//! call into the library.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use walua::Config;
use walua::config::LogFormat;

/// What `walua -V` and `walua --version` print after the program's name.
mod version {
    /// `-V`: the version and the git commit.
    pub const SHORT: &str = concat!(env!("CARGO_PKG_VERSION"), " (", env!("WALUA_GIT_COMMIT"), ")");
    /// `--version`: also the Lua and redb versions built in.
    pub const LONG: &str = concat!(
        env!("CARGO_PKG_VERSION"),
        "\ncommit: ",
        env!("WALUA_GIT_COMMIT"),
        "\nLua:    ",
        env!("WALUA_LUA_VERSION"),
        " (lua-src ",
        env!("WALUA_LUA_SRC_VERSION"),
        ", patched: vendor/lua-src)",
        "\nredb:   ",
        env!("WALUA_REDB_VERSION"),
    );

    #[cfg(test)]
    mod tests {
        /// The version of `name` in Cargo.lock, read now (build.rs read it at build time).
        fn locked(name: &str) -> String {
            let lock = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.lock")).unwrap();
            let entry = lock
                .split("[[package]]")
                .find(|p| p.contains(&format!("name = {name:?}\n")))
                .unwrap();
            let line = entry.lines().find(|l| l.starts_with("version = ")).unwrap();
            line.trim_start_matches("version = ").trim_matches('"').to_string()
        }

        #[test]
        fn the_versions_are_the_ones_built_in() {
            assert_eq!(env!("WALUA_REDB_VERSION"), locked("redb"));
            assert_eq!(env!("WALUA_LUA_SRC_VERSION"), locked("lua-src"));
            // lua.h's release (5.4.9) against the interpreter linked in ("Lua 5.4").
            let lua = mlua::Lua::new();
            let running: String = lua.globals().get("_VERSION").unwrap();
            let built = format!("Lua {}", env!("WALUA_LUA_VERSION"));
            assert!(built.starts_with(&format!("{running}.")), "{built} vs {running}");
            assert_ne!(env!("WALUA_GIT_COMMIT"), "");
        }
    }
}

/// WhatsApp Cloud API automation daemon with Lua scripts.
#[derive(Parser)]
#[command(version = version::SHORT, long_version = version::LONG, about)]
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
    /// Load the configuration and every script, and log in to Odoo when `[odoo]` is set;
    /// report each error with file:line; exit 1 if any.
    Check {
        /// Do not contact Odoo.
        #[arg(long)]
        offline: bool,
    },
    /// Feed one webhook payload through parsing and the scripts; print what would be stored
    /// and sent. Nothing is sent and the store is not touched.
    Replay {
        /// A webhook delivery body (JSON), as Meta would POST it.
        file: PathBuf,
    },
    /// Create a fresh install in DIR: walua.toml, scripts/ with the default scripts and the
    /// Lua type definitions. Refuses to overwrite existing files unless --force.
    Init {
        /// Where to create it (created when missing).
        dir: PathBuf,
        /// Where the store goes (default DIR/var/walua.redb), e.g. /var/lib/walua/walua.redb.
        #[arg(long)]
        store: Option<PathBuf>,
        /// Overwrite existing files.
        #[arg(long)]
        force: bool,
    },
    /// Queue a message through a running daemon's admin API.
    Send(Box<SendArgs>),
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
    /// Hook events, cron runs and customer messages that kept failing (parked).
    #[command(subcommand)]
    Parked(ParkedCommand),
    /// Scheduled jobs (scripts/cron): next and last runs, or run one now.
    #[command(subcommand)]
    Cron(CronCommand),
    /// Message templates: the registry against Meta and the definitions in templates/.
    #[command(subcommand)]
    Templates(TemplatesCommand),
    /// Console accounts. Passwords are read from standard input when it is not a terminal
    /// (one line), else prompted for twice.
    #[command(subcommand)]
    User(UserCommand),
    /// Scenarios of a running daemon.
    #[command(subcommand)]
    Scenario(ScenarioCommand),
    /// Campaigns: an approved template sent to an audience (CSV, Odoo domain, list).
    #[command(subcommand)]
    Campaign(walua::campaign::cli::CampaignCommand),
    /// Print the completion script for SHELL (packaging: the .deb ships bash, zsh and fish's).
    #[command(hide = true)]
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page walua(1), or with --dir write it and one page per command
    /// (walua-serve.1, …) into DIR (packaging).
    #[command(hide = true)]
    Man {
        /// Where to write the pages (created when missing).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Analytics of a running daemon: messages in and out, delivery, read and failure rates,
    /// first-response times, conversations and billable messages, per day or per template,
    /// campaign, script or number.
    Stats(walua::stats::StatsArgs),
}

#[derive(Subcommand)]
enum ScenarioCommand {
    /// Start scenario NAME for a contact: its first step is sent (the Odoo module's "send
    /// test scenario").
    Start {
        /// The scenario (scripts/scenarios/NAME.lua).
        name: String,
        /// The contact: phone number, BSUID or username.
        #[arg(long)]
        to: String,
        /// A scenario variable, `KEY=VALUE` (repeat).
        #[arg(long = "var", value_name = "KEY=VALUE")]
        vars: Vec<String>,
    },
}

#[derive(Subcommand)]
enum UserCommand {
    /// Create an account (the first one should be an admin).
    Add {
        /// The name it signs in with: letters, digits, `.`, `_`, `-` (64 at most).
        name: String,
        /// What it may do: admin (everything), agent (answer), viewer (read only).
        #[arg(long, value_parser = ["admin", "agent", "viewer"])]
        role: String,
    },
    /// Every account with its role.
    List,
    /// Set an account's password; its open sessions are signed out.
    Passwd {
        /// The account's name.
        name: String,
    },
    /// Remove an account and sign its sessions out (not the last admin).
    Remove {
        /// The account's name.
        name: String,
    },
}

#[derive(Subcommand)]
enum TemplatesCommand {
    /// Every template of every WABA: status, quality, category, when synced.
    List,
    /// Read every WABA's templates from Meta now.
    Sync,
    /// The definitions on disk beside Meta's copies: what differs, what push would do.
    Diff {
        /// Read Meta's templates first.
        #[arg(long)]
        sync: bool,
    },
    /// Create at Meta what is missing and edit what differs, within Meta's limits.
    Push {
        /// Also delete at Meta the templates that have no definition on disk.
        #[arg(long)]
        delete: bool,
    },
}

#[derive(Subcommand)]
enum ParkedCommand {
    /// List parked runs (with --all, also those being retried).
    List {
        /// Include runs still being retried.
        #[arg(long)]
        all: bool,
    },
    /// Run a parked hook or cron run again now, or put a parked message back in the queue.
    Replay {
        /// Its id, as `walua parked list` shows it (e.g. hook:invoice_posted:42).
        id: String,
    },
}

#[derive(Subcommand)]
enum CronCommand {
    /// Every job with its schedule, next and last runs and last error.
    List,
    /// Run a job now, whatever its schedule.
    Run {
        /// The job's name (cron/NAME.lua).
        name: String,
    },
}

#[derive(clap::Args)]
#[command(group(clap::ArgGroup::new("content").required(true).args(["text", "template", "image", "document", "audio", "buttons", "typing"])))]
struct SendArgs {
    /// Recipient: phone number, BSUID or a known contact's username.
    #[arg(
        long,
        required_unless_present = "partner",
        conflicts_with = "partner",
        default_value = ""
    )]
    to: String,
    /// An Odoo partner id instead of --to: their mobile, else phone, from walua's partner index.
    #[arg(long, value_name = "ID")]
    partner: Option<i64>,
    /// A text message.
    #[arg(long)]
    text: Option<String>,
    /// An approved template's name.
    #[arg(long)]
    template: Option<String>,
    /// The template's language code.
    #[arg(long, default_value = "fr")]
    lang: String,
    /// A template parameter value (repeat in order: header, body, then button values);
    /// walua builds Meta's components from the template.
    #[arg(long = "param")]
    params: Vec<String>,
    /// A named template parameter, `NAME=VALUE` (repeat), for templates with named parameters.
    #[arg(long = "named", value_name = "NAME=VALUE")]
    named: Vec<String>,
    /// An image by URL.
    #[arg(long)]
    image: Option<String>,
    /// A document: a URL, or a local file that is uploaded first.
    #[arg(long)]
    document: Option<String>,
    /// An audio file: a URL, or a local file that is uploaded first.
    #[arg(long)]
    audio: Option<String>,
    /// Send the audio as a voice note (an .ogg file with the OPUS codec, 16 MB at most).
    #[arg(long, requires = "audio")]
    voice: bool,
    /// Reply buttons, `ID=TITLE` or `ID:TITLE` (1 to 3, repeat the option; also
    /// `--buttons`), with `--body`.
    #[arg(long = "button", visible_alias = "buttons", id = "buttons", requires = "body")]
    buttons: Vec<String>,
    /// The body text of a buttons message.
    #[arg(long, requires = "buttons")]
    body: Option<String>,
    /// A text header for a buttons message.
    #[arg(long, requires = "buttons", conflicts_with = "header_image")]
    header: Option<String>,
    /// An image header (URL) for a buttons message.
    #[arg(long, requires = "buttons")]
    header_image: Option<String>,
    /// A footer for a buttons message.
    #[arg(long, requires = "buttons")]
    footer: Option<String>,
    /// Mark this inbound wamid read and show the typing indicator (to `--to`).
    #[arg(long, value_name = "WAMID")]
    typing: Option<String>,
    /// Caption of an image or document.
    #[arg(long)]
    caption: Option<String>,
    /// File name shown for a document (defaults to the local file's name).
    #[arg(long)]
    filename: Option<String>,
    /// Reply to this wamid.
    #[arg(long)]
    reply_to: Option<String>,
    /// The business number to send from: an account's name or phone number id (default: the
    /// number the contact last wrote to, else the first account).
    #[arg(long)]
    from: Option<String>,
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
    // Colours only on a terminal: under systemd (journald) or redirected to a file, escape
    // codes would litter every line.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match config.log.format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

/// mimalloc instead of glibc's malloc: glibc's malloc and free were about a sixth of the
/// daemon's CPU under load (many small JSON and Lua values). Built without transparent huge
/// pages (feature `no_thp`) and told to return freed memory at once ([`tune_allocator`]):
/// with its defaults the peak RSS under load doubled (README "Performance").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_delay` in the `mi_option_e` enum of mimalloc.h, version 3.3.2 as vendored
/// by libmimalloc-sys 0.1.49 (which does not export this constant); a test pins the version.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Freed memory goes back to the OS at once instead of after 10 ms, unless the operator set
/// `MIMALLOC_PURGE_DELAY` (milliseconds) in the environment, which mimalloc reads itself.
fn tune_allocator() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
        return;
    }
    // SAFETY: mi_option_set only stores an integer option; any value is valid for it.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 0) }
}

fn main() -> ExitCode {
    tune_allocator();
    let cli = Cli::parse();
    match real_main(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("walua: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The command line as operators see it, for completions and man pages: the hidden
/// packaging commands left out (clap_complete would offer them).
fn visible_command() -> clap::Command {
    use clap::CommandFactory;
    let cli = Cli::command();
    let visible: Vec<clap::Command> = cli.get_subcommands().filter(|s| !s.is_hide_set()).cloned().collect();
    let root = match cli.get_about() {
        Some(about) => clap::Command::new("walua").about(about.clone()),
        None => clap::Command::new("walua"),
    };
    root.version(version::SHORT)
        .long_version(version::LONG)
        .subcommand_required(cli.is_subcommand_required_set())
        .args(cli.get_arguments().cloned())
        .subcommands(visible)
}

/// The man pages generated from the command definitions: walua.1, then walua-COMMAND.1 for
/// each command.
fn man_pages() -> anyhow::Result<Vec<(String, Vec<u8>)>> {
    let mut cmd = visible_command();
    cmd.build();
    let mut pages = Vec::new();
    let mut page = Vec::new();
    clap_mangen::Man::new(cmd.clone()).render(&mut page)?;
    pages.push(("walua.1".to_string(), page));
    for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
        let name = format!("walua-{}", sub.get_name());
        let mut page = Vec::new();
        clap_mangen::Man::new(sub.clone().display_name(name.clone())).render(&mut page)?;
        pages.push((format!("{name}.1"), page));
    }
    Ok(pages)
}

fn real_main(cli: Cli) -> anyhow::Result<ExitCode> {
    match &cli.command {
        Command::Completions { shell } => {
            clap_complete::generate(*shell, &mut visible_command(), "walua", &mut std::io::stdout());
            return Ok(ExitCode::SUCCESS);
        }
        Command::Man { dir } => {
            let pages = man_pages()?;
            match dir {
                None => std::io::Write::write_all(&mut std::io::stdout(), &pages[0].1)?,
                Some(dir) => {
                    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
                    for (name, page) in &pages {
                        let path = dir.join(name);
                        std::fs::write(&path, page).with_context(|| format!("cannot write {}", path.display()))?;
                        println!("wrote {}", path.display());
                    }
                }
            }
            return Ok(ExitCode::SUCCESS);
        }
        _ => {}
    }
    if let Command::Init { dir, store, force } = &cli.command {
        let report = walua::init::init(dir, store.as_deref(), *force)?;
        for f in &report.written {
            println!("wrote {}", dir.join(f).display());
        }
        println!(
            "next: walua check --config {0} && walua serve --config {0}",
            report.config.display()
        );
        return Ok(ExitCode::SUCCESS);
    }
    let config = match load_config(cli.config.as_deref()) {
        Ok(c) => c,
        Err(e) if matches!(cli.command, Command::Check { .. }) => {
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
        Command::Check { offline } => {
            println!("{}: configuration OK", config.file.display());
            if let Some(w) = walua::whatsapp::version::check(&config.whatsapp.api_base, chrono::Utc::now().date_naive())
            {
                println!("warning: {w}");
            }
            let mut odoo_failed = false;
            match (&config.odoo, offline) {
                (Some(o), false) => {
                    let result = runtime.block_on(async {
                        let client = walua::odoo::OdooClient::new(o)?;
                        client.login().await
                    });
                    match result {
                        Ok(uid) => println!("odoo: logged in to {} (database {}) as uid {uid}", o.url, o.db),
                        Err(e) => {
                            println!("error: odoo: cannot log in to {} (database {}): {e}", o.url, o.db);
                            odoo_failed = true;
                        }
                    }
                }
                (Some(_), true) => println!("odoo: not contacted (--offline)"),
                (None, _) => {}
            }
            let report = walua::replay::check(&config);
            for w in &report.warnings {
                println!("warning: {}", w.message);
            }
            for e in &report.errors {
                println!("error: {}", e.message);
            }
            println!(
                "{}: {} script(s) loaded, {} error(s), {} warning(s)",
                config.scripts.dir.display(),
                report.loaded,
                report.errors.len(),
                report.warnings.len()
            );
            for e in &report.template_errors {
                println!("error: {e}");
            }
            println!(
                "{}: {} template definition(s), {} problem(s)",
                config.templates.dir.display(),
                report.templates,
                report.template_errors.len()
            );
            Ok(
                if report.errors.is_empty() && report.template_errors.is_empty() && !odoo_failed {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::FAILURE
                },
            )
        }
        Command::Replay { file } => {
            let report = walua::replay::replay(&config, &file)?;
            println!("{}", serde_json::to_string_pretty(&report)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Init { .. } | Command::Completions { .. } | Command::Man { .. } => {
            unreachable!("handled before the configuration is loaded")
        }
        Command::Send(args) => runtime.block_on(async {
            let client = walua::cli::AdminClient::new(&config);
            let request = build_send_request(&client, *args).await?;
            let answer = client
                .request(reqwest::Method::POST, "/api/messages", Some(&request))
                .await;
            match answer {
                Ok(a) => {
                    println!("message {} {}", a["id"], a["status"].as_str().unwrap_or("?"));
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => Err(e.into()),
            }
        }),
        Command::Parked(cmd) => runtime.block_on(async {
            let client = walua::cli::AdminClient::new(&config);
            match cmd {
                ParkedCommand::List { all } => {
                    let path = if all { "/api/parked?all=1" } else { "/api/parked" };
                    let answer = client.request(reqwest::Method::GET, path, None).await?;
                    print!("{}", walua::cli::render_parked(&answer));
                    Ok(ExitCode::SUCCESS)
                }
                ParkedCommand::Replay { id } => {
                    let path = format!("/api/parked/{}/replay", walua::cli::path_segment(&id));
                    match client.request(reqwest::Method::POST, &path, None).await {
                        Ok(a) if a["message"].is_u64() => {
                            println!("{id}: message {} queued again", a["message"]);
                            Ok(ExitCode::SUCCESS)
                        }
                        Ok(_) => {
                            println!("{id}: ran, entry cleared");
                            Ok(ExitCode::SUCCESS)
                        }
                        Err(walua::cli::CliError::Api { status: 422, message }) => {
                            println!("{id}: failed again: {message}");
                            Ok(ExitCode::FAILURE)
                        }
                        Err(e) => Err(e.into()),
                    }
                }
            }
        }),
        Command::Cron(cmd) => runtime.block_on(async {
            let client = walua::cli::AdminClient::new(&config);
            match cmd {
                CronCommand::List => {
                    let answer = client.request(reqwest::Method::GET, "/api/cron", None).await?;
                    print!("{}", walua::cli::render_cron(&answer));
                    Ok(ExitCode::SUCCESS)
                }
                CronCommand::Run { name } => {
                    let path = format!("/api/cron/{}/run", walua::cli::path_segment(&name));
                    match client.request(reqwest::Method::POST, &path, None).await {
                        Ok(a) => {
                            println!("{name}: ran, {} message(s) queued", a["sent"]);
                            Ok(ExitCode::SUCCESS)
                        }
                        Err(walua::cli::CliError::Api { status: 422, message }) => {
                            println!("{name}: failed: {message}");
                            Ok(ExitCode::FAILURE)
                        }
                        Err(e) => Err(e.into()),
                    }
                }
            }
        }),
        Command::Templates(cmd) => runtime.block_on(async {
            let client = walua::cli::AdminClient::new(&config);
            let (method, path) = match &cmd {
                TemplatesCommand::List => (reqwest::Method::GET, "/api/templates".to_string()),
                TemplatesCommand::Sync => (reqwest::Method::POST, "/api/templates/sync".to_string()),
                TemplatesCommand::Diff { sync } => (
                    reqwest::Method::GET,
                    format!("/api/templates/diff{}", if *sync { "?sync=1" } else { "" }),
                ),
                TemplatesCommand::Push { delete } => (
                    reqwest::Method::POST,
                    format!("/api/templates/push{}", if *delete { "?delete=1" } else { "" }),
                ),
            };
            let answer = client.request(method, &path, None).await?;
            let (text, ok) = match cmd {
                TemplatesCommand::List => (walua::cli::render_templates(&answer), true),
                TemplatesCommand::Sync => (walua::cli::render_template_sync(&answer), true),
                TemplatesCommand::Diff { .. } => (walua::cli::render_template_diff(&answer), true),
                TemplatesCommand::Push { .. } => {
                    let failed = answer["results"]
                        .as_array()
                        .is_some_and(|r| r.iter().any(|x| x["result"] == "failed"));
                    (walua::cli::render_template_push(&answer), !failed)
                }
            };
            print!("{text}");
            Ok(if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }),
        Command::Campaign(cmd) => runtime.block_on(async {
            let client = walua::cli::AdminClient::new(&config);
            let ok = walua::campaign::cli::run(&client, cmd).await?;
            Ok(if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }),
        Command::Scenario(ScenarioCommand::Start { name, to, vars }) => runtime.block_on(async {
            let mut map = serde_json::Map::new();
            for pair in &vars {
                let Some((k, v)) = pair.split_once('=') else {
                    anyhow::bail!("--var `{pair}`: expected KEY=VALUE");
                };
                // Numbers stay numbers (an order id), the rest is text.
                let value = v
                    .parse::<i64>()
                    .map(serde_json::Value::from)
                    .unwrap_or_else(|_| v.into());
                map.insert(k.trim().to_string(), value);
            }
            let client = walua::cli::AdminClient::new(&config);
            let path = format!("/api/scenarios/{}/start", walua::cli::path_segment(&name));
            let answer = client
                .request(
                    reqwest::Method::POST,
                    &path,
                    Some(&serde_json::json!({ "to": to, "vars": map })),
                )
                .await?;
            println!(
                "scenario {name} started for {}: message(s) {}",
                answer["to"], answer["sent"]
            );
            Ok(ExitCode::SUCCESS)
        }),
        Command::User(cmd) => runtime.block_on(async {
            let client = walua::cli::AdminClient::new(&config);
            match cmd {
                UserCommand::Add { name, role } => {
                    let password = read_new_password(&name)?;
                    let body = serde_json::json!({ "name": name, "role": role, "password": password });
                    let answer = client.request(reqwest::Method::POST, "/api/users", Some(&body)).await?;
                    println!("user {name} added ({role})");
                    if let Some(w) = answer["warning"].as_str() {
                        println!("warning: {w}");
                    }
                }
                UserCommand::List => {
                    let answer = client.request(reqwest::Method::GET, "/api/users", None).await?;
                    print!("{}", walua::cli::render_users(&answer));
                }
                UserCommand::Passwd { name } => {
                    let password = read_new_password(&name)?;
                    let path = format!("/api/users/{}/password", walua::cli::path_segment(&name));
                    let body = serde_json::json!({ "password": password });
                    client.request(reqwest::Method::POST, &path, Some(&body)).await?;
                    println!("password of {name} changed; its sessions are signed out");
                }
                UserCommand::Remove { name } => {
                    let path = format!("/api/users/{}", walua::cli::path_segment(&name));
                    client.request(reqwest::Method::DELETE, &path, None).await?;
                    println!("user {name} removed; its sessions are signed out");
                }
            }
            Ok(ExitCode::SUCCESS)
        }),
        Command::Stats(args) => runtime.block_on(async {
            print!("{}", walua::stats::cli(&config, &args).await?);
            Ok(ExitCode::SUCCESS)
        }),
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

async fn build_send_request(client: &walua::cli::AdminClient, a: SendArgs) -> anyhow::Result<serde_json::Value> {
    use serde_json::json;
    let mut req = if let Some(text) = a.text {
        json!({ "type": "text", "text": text })
    } else if let Some(name) = a.template {
        let mut req = json!({ "type": "template", "name": name, "lang": a.lang });
        if !a.named.is_empty() {
            if !a.params.is_empty() {
                anyhow::bail!("give either --param values or --named NAME=VALUE pairs, not both");
            }
            let mut named = serde_json::Map::new();
            for pair in &a.named {
                let Some((k, v)) = pair.split_once('=') else {
                    anyhow::bail!("--named `{pair}`: expected NAME=VALUE");
                };
                named.insert(k.trim().to_string(), json!(v));
            }
            req["params"] = serde_json::Value::Object(named);
        } else if !a.params.is_empty() {
            req["params"] = json!(a.params);
        }
        req
    } else if let Some(link) = a.image {
        json!({ "type": "image", "link": link, "caption": a.caption })
    } else if let Some(doc) = a.document {
        if doc.starts_with("http://") || doc.starts_with("https://") {
            json!({ "type": "document", "link": doc, "caption": a.caption, "filename": a.filename })
        } else {
            let path = Path::new(&doc);
            let bytes = std::fs::read(path).with_context(|| format!("cannot read {doc}"))?;
            let filename = a
                .filename
                .clone()
                .or_else(|| path.file_name().map(|n| n.to_string_lossy().into_owned()))
                .unwrap_or_else(|| "document".into());
            let uploaded = client.upload(&filename, a.from.as_deref(), &a.to, bytes).await?;
            let id = uploaded["id"]
                .as_str()
                .context("the daemon answered no media id")?
                .to_string();
            // Sent from the number it was uploaded through: media ids belong to a number.
            json!({ "type": "document", "media": id, "caption": a.caption, "filename": filename, "from": uploaded["from"] })
        }
    } else if let Some(audio) = a.audio {
        let voice = a.voice.then_some(true);
        if audio.starts_with("http://") || audio.starts_with("https://") {
            json!({ "type": "audio", "link": audio, "voice": voice })
        } else {
            let path = Path::new(&audio);
            let bytes = std::fs::read(path).with_context(|| format!("cannot read {audio}"))?;
            // Meta's limits on the file, checked before it is uploaded.
            let check = if a.voice {
                walua::whatsapp::message::check_voice_bytes(&bytes)
            } else {
                walua::whatsapp::message::check_audio_size(bytes.len())
            };
            check.map_err(|e| anyhow::anyhow!("{audio}: {e}"))?;
            let filename = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "audio.ogg".into());
            let uploaded = client.upload(&filename, a.from.as_deref(), &a.to, bytes).await?;
            let id = uploaded["id"]
                .as_str()
                .context("the daemon answered no media id")?
                .to_string();
            json!({ "type": "audio", "media": id, "voice": voice, "from": uploaded["from"] })
        }
    } else if !a.buttons.is_empty() {
        let buttons = a
            .buttons
            .iter()
            .map(|b| match b.split_once(['=', ':']) {
                Some((id, title)) => Ok(json!({ "id": id.trim(), "title": title.trim() })),
                None => Err(anyhow::anyhow!("--button {b:?}: expected ID=TITLE or ID:TITLE")),
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let header = match (a.header, a.header_image) {
            (Some(text), _) => json!(text),
            (None, Some(link)) => json!({ "type": "image", "image": { "link": link } }),
            (None, None) => serde_json::Value::Null,
        };
        json!({ "type": "buttons", "body": a.body, "buttons": buttons, "header": header, "footer": a.footer })
    } else if let Some(wamid) = a.typing {
        json!({ "type": "typing", "message_id": wamid })
    } else {
        unreachable!("clap requires one content argument")
    };
    match a.partner {
        Some(p) => req["partner_id"] = json!(p),
        None => req["to"] = json!(a.to),
    }
    if let Some(r) = a.reply_to {
        req["reply_to"] = json!(r);
    }
    if let Some(from) = a.from {
        req["from"] = json!(from);
    }
    // drop nulls so that optional fields are simply absent
    if let Some(obj) = req.as_object_mut() {
        obj.retain(|_, v| !v.is_null());
    }
    Ok(req)
}

/// A new password for account `name`: one line of standard input when it is not a terminal
/// (scripts, tests), else typed twice without echo. Checked here too, before asking again.
fn read_new_password(name: &str) -> anyhow::Result<String> {
    use std::io::IsTerminal;
    let password = if std::io::stdin().is_terminal() {
        let first = rpassword::prompt_password(format!("Password for {name}: "))?;
        walua::console::accounts::validate_password(&first).map_err(anyhow::Error::msg)?;
        let again = rpassword::prompt_password("Same password again: ")?;
        if again != first {
            anyhow::bail!("the two passwords differ");
        }
        first
    } else {
        walua::cli::read_password_line(std::io::stdin().lock())
            .context("cannot read the password from standard input")?
    };
    walua::console::accounts::validate_password(&password).map_err(anyhow::Error::msg)?;
    Ok(password)
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

#[cfg(test)]
mod allocator_tests {
    #[test]
    fn the_purge_delay_option_number_matches_the_vendored_mimalloc() {
        // MI_OPTION_PURGE_DELAY was read off this version's mimalloc.h: re-check it on a bump.
        assert_eq!(unsafe { libmimalloc_sys::mi_version() }, 30302);
        super::tune_allocator();
        assert_eq!(
            unsafe { libmimalloc_sys::mi_option_get(super::MI_OPTION_PURGE_DELAY) },
            0
        );
    }
}
