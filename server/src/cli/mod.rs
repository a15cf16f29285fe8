//! The `casenote-server` command line: `serve`, `admin` (with `admin backup`, [`backup`]),
//! `restore`, `demo`, `audit`, `verify` and `export`, a
//! thin clap shell over the library that parses, calls the domain (the admin service, audit,
//! export, the demo loader in [`demo`]), renders what it returns, and maps the outcome to an exit
//! code. It lives in the library so that the end-to-end test package can build the same entry
//! point under its own binary name. It opens the backend named on the command line and hands
//! `serve` the store.
//!
//! Errors print as `casenote-server: {err:#}` on stderr. Exit codes: 0 success, 1 failure, 2 usage
//! (clap's own). `audit verify` prints `audit log intact: N entries` and exits 0, or prints
//! `audit log broken: entry SEQ is the first broken entry: REASON` (stdout and stderr) and exits 1.
//! `verify` prints `store verified: ...` and exits 0, or `store damaged: FIRST PROBLEM` and exits 1.
//! Both check the store as it is: they open it without healing (`StoreArgs::inspect`). Every
//! command takes `--data DIR` (the embedded sled store) or `--postgres URL` ([`StoreArgs`]).

mod backup;
pub mod demo;

use crate::admin::act::{Act, Outcome, QuarantineRow};
use crate::admin::{CaseSummary, Directory, TeamName};
use crate::model::Role;
use crate::{now_ms, Config};
use anyhow::Context;
use casenote_protocol::{CaseId, DocId};
use clap::{Parser, Subcommand};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "casenote-server", version, about = "The casenote sync server")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the sync API until SIGTERM or Ctrl-C, which stop it cleanly (pending audit counts
    /// written, the store flushed).
    Serve {
        #[command(flatten)]
        store: StoreArgs,
        /// The address to listen on; port 0 picks a free one.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: String,
        /// Filing a note more than this many hours after it happened needs a late-entry reason.
        #[arg(long, default_value_t = casenote_protocol::limits::LATE_ENTRY_AFTER_MS_DEFAULT / 3_600_000)]
        late_entry_hours: i64,
        /// A device that has not reached the server for this many hours locks until its user
        /// signs in again.
        #[arg(long, default_value_t = casenote_protocol::limits::DEVICE_LOCK_AFTER_MS_DEFAULT / 3_600_000)]
        lock_after_hours: i64,
        /// A device that has not reached the server for this many days wipes itself.
        #[arg(long, default_value_t = casenote_protocol::limits::DEVICE_WIPE_AFTER_MS_DEFAULT / 86_400_000)]
        wipe_after_days: i64,
        /// Refuse writes (507 `store_full`) while the data directory has less than this many
        /// MiB free; 0 turns the check off.
        #[arg(long, default_value_t = casenote_protocol::limits::STORE_FREE_BYTES_MIN_DEFAULT / MIB)]
        min_free_mb: u64,
        /// Terminate TLS here (https:// and wss://): the server's certificate chain, PEM, its
        /// own certificate first. Needs --tls-key. Without both, plain HTTP, for a proxy that
        /// terminates TLS in front (or loopback).
        #[arg(long, value_name = "FILE", requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        /// The private key of --tls-cert's certificate, PEM (PKCS#8, RSA or EC).
        #[arg(long, value_name = "FILE", requires = "tls_cert")]
        tls_key: Option<PathBuf>,
        /// Serve the built web app (web/dist: `npm run build` in web/) at /app/.
        #[arg(long, value_name = "DIR")]
        app_dir: Option<PathBuf>,
    },
    /// Create an empty store (a sled directory, or the schema in an empty PostgreSQL database) to
    /// bootstrap with `admin`; `serve` and `demo` create one too. The other commands refuse a
    /// directory that holds no store, so a mistyped `--data` is an error, not a new store.
    Init {
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Check the whole store: every change against its hash and the log's hash chain, the
    /// indexes against the log, the audit chain, and that everything acknowledged is there
    /// (the server must not be running on DIR). Exit 1 naming the first problem.
    Verify {
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Export a person's whole record (restricted documents included) as record.json and
    /// record.html: from a stopped store (--data, --postgres) or a running server (--server).
    Export {
        #[command(flatten)]
        target: Target,
        #[arg(long)]
        case: CaseId,
        /// The directory to write into (created if missing).
        #[arg(long)]
        out: PathBuf,
    },
    /// Manage orgs, teams, staff, device and admin tokens: on a running server (--server URL with
    /// an admin token) or a stopped store (--data DIR, --postgres URL).
    Admin {
        #[command(flatten)]
        target: Target,
        #[command(subcommand)]
        action: AdminCommand,
    },
    /// Load the fictional Castlebridge demo and print a token per demo staff member.
    Demo {
        #[command(flatten)]
        store: StoreArgs,
        /// Print one JSON object instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Move the sled store in DIR (no server may be running on it) into the empty PostgreSQL
    /// database at URL: the log with its sequences, received times and chain, the directory,
    /// device state, quarantine, audit chain and escrowed keys. Devices carry on unchanged.
    Migrate {
        /// The sled store's data directory.
        #[arg(long, value_name = "DIR")]
        data: PathBuf,
        /// The empty database (or CASENOTE_POSTGRES_URL).
        #[arg(
            long,
            value_name = "URL",
            env = "CASENOTE_POSTGRES_URL",
            hide_env_values = true
        )]
        postgres: String,
    },
    /// Restore a backup (`admin backup`) into an empty store, which gets a new log id: every
    /// device resets at its next sync and re-sends what the backup lacks. A truncated or
    /// damaged backup is refused before anything is written.
    Restore {
        /// The backup file.
        #[arg(long, value_name = "FILE")]
        from: PathBuf,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Rewrite a stopped store's files so that nothing erased (`admin note misfiled`) is left
    /// in them: sled copies its live records into fresh files; PostgreSQL rewrites the tables
    /// and retires its write-ahead log.
    Compact {
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Check or show the hash-chained audit log (of a stopped store, or through --server).
    Audit {
        #[command(subcommand)]
        action: AuditCommand,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Check every link of the chain; exit 1 naming the first broken entry.
    Verify {
        #[command(flatten)]
        target: Target,
    },
    /// Print the entries, oldest first.
    Show {
        #[command(flatten)]
        target: Target,
        /// One JSON array instead of one line per entry.
        #[arg(long)]
        json: bool,
        /// Only the last N entries.
        #[arg(long)]
        limit: Option<usize>,
    },
}

#[derive(Subcommand)]
enum CaseCommand {
    /// Put a team around the person: its members' devices receive the case on their next sync.
    AddTeam {
        #[arg(long)]
        case: CaseId,
        /// Team id or exact name.
        #[arg(long)]
        team: String,
    },
    /// Take a team off the case: its members' devices delete the case on their next sync.
    RemoveTeam {
        #[arg(long)]
        case: CaseId,
        /// Team id or exact name.
        #[arg(long)]
        team: String,
    },
    /// Show the case's teams and documents (kind and access list; never content).
    Show {
        #[arg(long)]
        case: CaseId,
        #[arg(long)]
        json: bool,
    },
    #[command(flatten)]
    Objection(controllers::ObjectionCommand),
}

#[derive(Subcommand)]
enum RestrictedCommand {
    /// Put a team on a restricted document's access list.
    Grant {
        #[arg(long)]
        doc: DocId,
        /// Team id or exact name.
        #[arg(long)]
        team: String,
    },
    /// Take a team off a restricted document's access list.
    Revoke {
        #[arg(long)]
        doc: DocId,
        /// Team id or exact name.
        #[arg(long)]
        team: String,
    },
}

#[derive(Subcommand)]
enum AdminCommand {
    /// Organisations.
    Org {
        #[command(subcommand)]
        action: OrgCommand,
    },
    /// Teams.
    Team {
        #[command(subcommand)]
        action: TeamCommand,
    },
    /// Staff.
    Staff {
        #[command(subcommand)]
        action: StaffCommand,
    },
    /// Device tokens.
    Token {
        #[command(subcommand)]
        action: TokenCommand,
    },
    /// Cases: the teams around the person.
    Case {
        #[command(subcommand)]
        action: CaseCommand,
    },
    /// Restricted documents' access lists.
    Restricted {
        #[command(subcommand)]
        action: RestrictedCommand,
    },
    /// List orgs, teams, staff and devices (never tokens).
    List {
        #[arg(long)]
        json: bool,
    },
    /// Say that DIR was restored from a backup: devices reset and re-send what they hold.
    Restored,
    /// Back up the whole store, consistently, while devices sync (with --server), into FILE
    /// (written as FILE.tmp, checked, then renamed); `restore --from FILE` puts it back.
    Backup {
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Changes refused by the record rules.
    Quarantine {
        #[command(subcommand)]
        action: QuarantineCommand,
    },
    /// Admin tokens: who may use the admin API (`--server URL`).
    AdminToken {
        #[command(subcommand)]
        action: AdminTokenCommand,
    },
    /// Subject access requests: a person's whole record, due within one month.
    Sar {
        #[command(subcommand)]
        action: sar::SarCommand,
    },
    /// Data-sharing agreements between organisations (data controllers).
    Agreement {
        #[command(subcommand)]
        action: controllers::AgreementCommand,
    },
    /// Retention: a record's class, closure, legal holds, and disposal once due and approved.
    Retention {
        #[command(subcommand)]
        action: retention::RetentionCommand,
    },
    /// Notes: move one filed on the wrong person.
    Note {
        #[command(subcommand)]
        action: note::NoteCommand,
    },
    /// Break-glass grants on sealed sections: the IG lead lists them and marks them reviewed.
    BreakGlass {
        #[command(subcommand)]
        action: break_glass::BreakGlassCommand,
    },
}

#[derive(Subcommand)]
enum AdminTokenCommand {
    /// Issue an admin token; prints it (shown once, stored only as a hash).
    Issue {
        /// A label for whoever holds it (`ops-rota`); shown by `admin list`, never audited.
        #[arg(long)]
        name: String,
        /// Print {"admin_id","token"}.
        #[arg(long)]
        json: bool,
    },
    /// Revoke an admin token: it opens nothing from now on.
    Revoke {
        /// The admin token's id (see `admin list`).
        #[arg(long)]
        id: uuid::Uuid,
    },
}

#[derive(Subcommand)]
enum QuarantineCommand {
    /// List quarantined changes: ids, reasons, sizes (never content).
    List {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum OrgCommand {
    /// Add an organisation; prints its id.
    Add {
        #[arg(long)]
        name: String,
    },
}

#[derive(Subcommand)]
enum TeamCommand {
    /// Add a team to an organisation; prints its id.
    Add {
        /// The organisation's exact name.
        #[arg(long)]
        org: String,
        #[arg(long)]
        name: String,
    },
    #[command(flatten)]
    Move(controllers::TeamMoveCommand),
}

#[derive(Subcommand)]
enum StaffCommand {
    /// Add a member of staff; prints their id.
    Add {
        #[arg(long)]
        name: String,
        /// One of: social_worker, nurse, occupational_therapist, gp, team_manager, admin,
        /// psychiatrist, amhp, family_support_worker.
        #[arg(long)]
        role: String,
        /// The organisation's exact name.
        #[arg(long)]
        org: String,
        /// A team of that organisation (repeat for several).
        #[arg(long = "team", required = true)]
        teams: Vec<String>,
    },
    /// Add a member of staff to a team.
    AddTeam {
        /// Staff id or exact name.
        #[arg(long)]
        staff: String,
        /// Team id or exact name.
        #[arg(long)]
        team: String,
    },
    /// Take a member of staff off a team.
    RemoveTeam {
        /// Staff id or exact name.
        #[arg(long)]
        staff: String,
        /// Team id or exact name.
        #[arg(long)]
        team: String,
    },
    /// Revoke a member of staff (a leaver) and every device of theirs.
    Revoke {
        /// Staff id or exact name.
        #[arg(long)]
        staff: String,
    },
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Enrol a device for a member of staff; prints its token (shown once, never stored).
    Issue {
        /// Staff id or exact name.
        #[arg(long)]
        staff: String,
        #[arg(long)]
        device_name: Option<String>,
        /// Print {"staff_id","device_id","token"}.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a device's token.
    Revoke {
        #[arg(long)]
        device: String,
    },
}

/// Parses the command line, runs it, and turns the outcome into an exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("casenote-server: {err:#}");
            ExitCode::FAILURE
        }
    }
}

const MIB: u64 = 1024 * 1024;

mod admin;
mod break_glass;
mod controllers;
mod note;
mod retention;
mod sar;
mod store;
mod tls;
pub use admin::{Open, Target};
use store::Opened;
pub use store::StoreArgs;

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve {
            store,
            listen,
            late_entry_hours,
            lock_after_hours,
            wipe_after_days,
            min_free_mb,
            tls_cert,
            tls_key,
            app_dir,
        } => {
            if late_entry_hours < 0 {
                anyhow::bail!("--late-entry-hours must be 0 or more");
            }
            if lock_after_hours < 1 || wipe_after_days < 1 {
                anyhow::bail!("--lock-after-hours and --wipe-after-days must be at least 1");
            }
            let lease = casenote_protocol::wire::Lease {
                lock_after_ms: lock_after_hours.saturating_mul(3_600_000),
                wipe_after_ms: wipe_after_days.saturating_mul(86_400_000),
            };
            if lease.wipe_after_ms <= lease.lock_after_ms {
                anyhow::bail!("--wipe-after-days must come after --lock-after-hours");
            }
            let mut config = Config::default()
                .with_late_entry_after_ms(late_entry_hours.saturating_mul(3_600_000))
                .with_lease(lease);
            if let Some(dir) = app_dir {
                if !dir.join("index.html").is_file() {
                    anyhow::bail!("--app-dir {} holds no index.html: build the app first (npm run build in web/)", dir.display());
                }
                config = config.with_app_dir(dir);
            }
            if let (Some(cert), Some(key)) = (&tls_cert, &tls_key) {
                let tls = tls::server_config(cert, key)?;
                let connections = config.connections.clone().with_tls(tls);
                config = config.with_connections(connections);
            }
            serve(store, listen, config, min_free_mb.saturating_mul(MIB))
        }
        Command::Init { store } => {
            let opened = store.open()?.store();
            opened.flush()?;
            println!("store ready: {}", store.describe());
            Ok(())
        }
        Command::Verify { store } => match store.verify()? {
            Ok(summary) => {
                println!("{summary}");
                Ok(())
            }
            Err(e) => {
                println!("{e}");
                Err(anyhow::anyhow!(e))
            }
        },
        Command::Migrate { data, postgres } => {
            let copied = store::migrate(&data, &postgres)?;
            println!(
                "moved: {} changes, {} documents of {} cases, {} actors, {} orgs, {} teams, \
                 {} staff, {} devices, {} quarantined changes, {} audit entries; access epoch {}",
                copied.changes,
                copied.docs,
                copied.cases,
                copied.actors,
                copied.orgs,
                copied.teams,
                copied.staff,
                copied.devices,
                copied.quarantined,
                copied.audit_entries,
                copied.access_epoch
            );
            Ok(())
        }
        Command::Export { target, case, out } => {
            let outcome = target.perform(Act::Export { case }, Open::Existing)?;
            let Outcome::Exported(record) = outcome else {
                anyhow::bail!("the server answered something other than an export");
            };
            println!("{}", crate::export::write_files(&record, &out)?);
            Ok(())
        }
        Command::Admin {
            target,
            action: AdminCommand::Backup { out },
        } => {
            let (summary, bytes) = backup::save(&target, &out)?;
            println!("{}", backup::render_saved(&summary, bytes, &out));
            Ok(())
        }
        Command::Restore { from, store } => {
            println!(
                "{}",
                backup::render_restored(&backup::restore(&from, &store)?)
            );
            Ok(())
        }
        Command::Admin {
            target,
            action:
                AdminCommand::Sar {
                    action: sar::SarCommand::Fulfil { request, out },
                },
        } => {
            let outcome = target.perform(Act::SarFulfil { request }, Open::Existing)?;
            let Outcome::SarFulfilled(done) = outcome else {
                anyhow::bail!("the server answered something other than a fulfilled request");
            };
            let written = crate::export::write_files(&done.export, &out)?;
            println!("{}", sar::render_fulfilled(&done, &written.to_string()));
            Ok(())
        }
        Command::Admin { target, action } => {
            let (act, json) = admin_act(action)?;
            let outcome = note::compact_after(&target, target.perform(act, Open::Existing)?)?;
            println!("{}", admin::render(&outcome, json));
            Ok(())
        }
        Command::Compact { store } => {
            println!("{}", note::compact(&store)?.detail);
            Ok(())
        }
        Command::Demo { store, json } => {
            let store = store.open()?.store();
            let out = demo::load(&*store, now_ms())?;
            if json {
                println!("{}", demo::render_json(&out));
            } else {
                print!("{}", demo::render_human(&out));
            }
            Ok(())
        }
        Command::Audit { action } => {
            let (target, act, json, open) = match action {
                AuditCommand::Verify { target } => (target, Act::AuditVerify, false, Open::Inspect),
                AuditCommand::Show {
                    target,
                    json,
                    limit,
                } => (target, Act::AuditShow { limit }, json, Open::Existing),
            };
            let outcome = target.perform(act, open)?;
            let out = admin::render(&outcome, json);
            if let Outcome::AuditBroken { message } = outcome {
                println!("{message}");
                anyhow::bail!(message);
            }
            if !out.is_empty() {
                println!("{out}");
            }
            Ok(())
        }
    }
}

/// The act an `admin` subcommand names, and whether to print JSON.
fn admin_act(action: AdminCommand) -> anyhow::Result<(Act, bool)> {
    Ok(match action {
        AdminCommand::Org {
            action: OrgCommand::Add { name },
        } => (Act::OrgAdd { name }, false),
        AdminCommand::Team {
            action: TeamCommand::Add { org, name },
        } => (Act::TeamAdd { org, name }, false),
        AdminCommand::Team {
            action: TeamCommand::Move(m),
        } => (controllers::team_move_act(m), false),
        AdminCommand::Agreement { action } => controllers::agreement_act(action),
        AdminCommand::Staff { action } => (staff_act(action)?, false),
        AdminCommand::Token { action } => token_act(action),
        AdminCommand::Case { action } => case_act(action),
        AdminCommand::Restricted { action } => (
            match action {
                RestrictedCommand::Grant { doc, team } => Act::RestrictedGrant { doc, team },
                RestrictedCommand::Revoke { doc, team } => Act::RestrictedRevoke { doc, team },
            },
            false,
        ),
        AdminCommand::List { json } => (Act::List, json),
        AdminCommand::Restored => (Act::Restored, false),
        AdminCommand::Backup { .. } => anyhow::bail!("`admin backup` is not an act"),
        AdminCommand::Sar { action } => sar::act(action),
        AdminCommand::Retention { action } => retention::act(action),
        AdminCommand::Note { action } => (note::act(action), false),
        AdminCommand::BreakGlass { action } => break_glass::act(action),
        AdminCommand::Quarantine {
            action: QuarantineCommand::List { json },
        } => (Act::QuarantineList, json),
        AdminCommand::AdminToken { action } => match action {
            AdminTokenCommand::Issue { name, json } => (Act::AdminTokenIssue { name }, json),
            AdminTokenCommand::Revoke { id } => (Act::AdminTokenRevoke { admin_id: id }, false),
        },
    })
}

fn staff_act(action: StaffCommand) -> anyhow::Result<Act> {
    Ok(match action {
        StaffCommand::Add {
            name,
            role,
            org,
            teams,
        } => Act::StaffAdd {
            name,
            role: role.parse::<Role>()?,
            org,
            teams,
        },
        StaffCommand::AddTeam { staff, team } => Act::StaffAddTeam { staff, team },
        StaffCommand::RemoveTeam { staff, team } => Act::StaffRemoveTeam { staff, team },
        StaffCommand::Revoke { staff } => Act::StaffRevoke { staff },
    })
}

fn token_act(action: TokenCommand) -> (Act, bool) {
    match action {
        TokenCommand::Issue {
            staff,
            device_name,
            json,
        } => (Act::TokenIssue { staff, device_name }, json),
        TokenCommand::Revoke { device } => (Act::TokenRevoke { device }, false),
    }
}

fn case_act(action: CaseCommand) -> (Act, bool) {
    match action {
        CaseCommand::AddTeam { case, team } => (Act::CaseAddTeam { case, team }, false),
        CaseCommand::RemoveTeam { case, team } => (Act::CaseRemoveTeam { case, team }, false),
        CaseCommand::Show { case, json } => (Act::CaseShow { case }, json),
        CaseCommand::Objection(o) => (controllers::objection_act(o), false),
    }
}

fn serve(
    where_: StoreArgs,
    listen: String,
    config: Config,
    free_bytes_min: u64,
) -> anyhow::Result<()> {
    // Opened before the runtime: a PostgreSQL connection must not be made on a runtime thread.
    let opened = where_.open()?;
    if let Opened::Sled(s) = &opened {
        s.set_free_bytes_min(free_bytes_min);
    }
    let rewritten = match &opened {
        Opened::Sled(s) => s.rewritten(),
        Opened::Postgres(_) => None,
    };
    let store = opened.store();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(casenote_protocol::limits::SERVER_BLOCKING_THREADS_MAX)
        .build()
        .context("could not start the async runtime")?;
    runtime.block_on(async move {
        tracing_subscriber::fmt()
            .with_writer(std::io::stderr)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
            )
            .init();
        crate::config::raise_open_files_limit();
        let listener = tokio::net::TcpListener::bind(&listen)
            .await
            .with_context(|| format!("could not listen on {listen}"))?;
        let addr = listener.local_addr()?;
        let tls = config.connections.tls.is_some();
        let scheme = if tls { "https" } else { "http" };
        let mut stdout = std::io::stdout();
        writeln!(stdout, "casenote-server listening on {scheme}://{addr}")?;
        stdout.flush()?;
        tracing::info!(%addr, tls, store = %where_.describe(), "serving");
        match rewritten {
            Some(Ok(())) => tracing::info!("the store's files were rewritten for erasures"),
            Some(Err(e)) => tracing::error!(
                error = %e,
                "the store's files could not be rewritten for erasures; the next start tries again"
            ),
            None => {}
        }
        crate::run(listener, store, config, stop_signal()).await?;
        tracing::info!("stopped: pending audit counts written, store flushed");
        Ok(())
    })
}

/// Completes on SIGTERM (systemd, `kill`) or Ctrl-C, so `serve` stops cleanly.
async fn stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

/// `quarantine list`: document, change hash, size, who pushed it, when, and the rule it broke;
/// never content. JSON: an array of `{"doc_id", "hash", "bytes", "reason", "staff_id",
/// "device_id", "at_ms"}`, oldest first.
pub(crate) fn render_quarantine(entries: &[QuarantineRow], json: bool) -> String {
    if json {
        return serde_json::to_string(entries).unwrap_or_else(|_| "[]".into());
    }
    if entries.is_empty() {
        return "no quarantined changes".into();
    }
    let mut out = format!("{} quarantined change(s):\n", entries.len());
    for e in entries {
        out.push_str(&format!(
            "  {}  doc {}  change {}  {} bytes  staff {}  device {}\n    {}\n",
            e.at_ms,
            e.doc_id,
            e.hash.get(..16).unwrap_or(&e.hash),
            e.bytes,
            e.staff_id,
            e.device_id,
            e.reason
        ));
    }
    out.trim_end().to_string()
}

fn team_json(t: &TeamName) -> serde_json::Value {
    serde_json::json!({"team_id": t.team_id, "name": t.name})
}

fn team_names(list: &[TeamName]) -> String {
    list.iter()
        .map(|t| format!("{} ({})", t.name, t.team_id))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `case show`: the case's teams and its documents with kind and access list; never content.
/// JSON: `{"case_id","owner_org","teams":[{"team_id","name"}],"docs":[{"doc_id","kind",
/// "created_ms","access_teams":[{"team_id","name"}]|null}]}`.
pub(crate) fn render_case(case: &CaseSummary, json: bool) -> String {
    if json {
        let docs: Vec<serde_json::Value> = case
            .docs
            .iter()
            .map(|d| {
                let access = d
                    .access_teams
                    .as_ref()
                    .map(|l| l.iter().map(team_json).collect::<Vec<_>>());
                serde_json::json!({
                    "doc_id": d.doc_id, "kind": d.kind.as_str(),
                    "created_ms": d.created_ms, "access_teams": access,
                    "owner_org": d.owner_org, "sealed": d.sealed,
                })
            })
            .collect();
        let teams: Vec<_> = case.teams.iter().map(team_json).collect();
        return serde_json::json!({
            "case_id": case.case_id, "owner_org": case.owner_org, "teams": teams, "docs": docs,
            "objection": case.objection, "retention": case.retention,
        })
        .to_string();
    }
    let mut out = format!(
        "Case {}\nTeams: {}\n{}Documents:\n",
        case.case_id,
        team_names(&case.teams),
        case_standing(case)
    );
    for d in &case.docs {
        out.push_str(&format!("  {}  {}", d.doc_id, d.kind.as_str()));
        if let Some(org) = d.owner_org.filter(|o| *o != case.owner_org) {
            out.push_str(&format!("  controller: {org}"));
        }
        if let Some(list) = &d.access_teams {
            let seal = if d.sealed { "sealed" } else { "hidden" };
            out.push_str(&format!("  {seal}, access: {}", team_names(list)));
        }
        out.push('\n');
    }
    out.trim_end().to_string()
}

/// A case's objection to sharing and its retention, one line each (empty when it has neither).
fn case_standing(case: &CaseSummary) -> String {
    let mut out = String::new();
    if let Some(o) = &case.objection {
        let overridden = match &o.overridden {
            Some(v) => format!(", overridden ({:?})", v.reason_category),
            None => String::new(),
        };
        out.push_str(&format!(
            "Objection to sharing: {:?}{overridden}\n",
            o.reason_category
        ));
    }
    if let Some(r) = &case.retention {
        let last = r.last_contact.as_deref().unwrap_or("open");
        let disposed = if r.disposed.is_some() {
            ", disposed of"
        } else {
            ""
        };
        out.push_str(&format!(
            "Retention: {:?}, last contact {last}, {} hold(s){disposed}\n",
            r.class,
            r.holds.len()
        ));
    }
    out
}

/// `list`: orgs, teams, staff and devices, as text or one JSON object (never tokens).
pub(crate) fn render_directory(dir: &Directory, json: bool) -> String {
    let names = Names::of(dir);
    if json {
        return directory_json(dir, &names).to_string();
    }
    let mut out = String::from("Organisations:\n");
    for o in &dir.orgs {
        out.push_str(&format!("  {}  {}\n", o.org_id, o.name));
    }
    out.push_str("Teams:\n");
    for t in &dir.teams {
        out.push_str(&format!(
            "  {}  {} ({})\n",
            t.team_id,
            t.name,
            names.org(t.org_id)
        ));
    }
    out.push_str("Staff:\n");
    for s in &dir.staff {
        out.push_str(&format!(
            "  {}  {}, {}, {} [{}]{}\n",
            s.staff_id,
            s.name,
            s.role,
            names.org(s.org_id),
            names.teams(&s.teams).join(", "),
            if s.revoked { " (revoked)" } else { "" }
        ));
    }
    out.push_str("Devices:\n");
    for d in &dir.devices {
        out.push_str(&format!(
            "  {}  {} for {}{}\n",
            d.device_id,
            d.name,
            names.staff(d.staff_id),
            if d.revoked { " (revoked)" } else { "" }
        ));
    }
    out.push_str("Admin tokens:\n");
    for a in &dir.admins {
        out.push_str(&format!(
            "  {}  {}{}\n",
            a.admin_id,
            a.name,
            if a.revoked { " (revoked)" } else { "" }
        ));
    }
    out.trim_end().to_string()
}

fn directory_json(dir: &Directory, names: &Names) -> serde_json::Value {
    use serde_json::json;
    json!({
        "orgs": dir.orgs.iter().map(|o| json!({"org_id": o.org_id, "name": o.name})).collect::<Vec<_>>(),
        "teams": dir.teams.iter().map(|t| json!({
            "team_id": t.team_id, "org_id": t.org_id, "org": names.org(t.org_id), "name": t.name,
        })).collect::<Vec<_>>(),
        "staff": dir.staff.iter().map(|s| json!({
            "staff_id": s.staff_id, "name": s.name, "role": s.role, "revoked": s.revoked,
            "org_id": s.org_id, "org": names.org(s.org_id), "teams": names.teams(&s.teams),
        })).collect::<Vec<_>>(),
        "devices": dir.devices.iter().map(|d| json!({
            "device_id": d.device_id, "staff_id": d.staff_id,
            "staff": names.staff(d.staff_id),
            "name": d.name, "created_ms": d.created_ms, "revoked": d.revoked,
        })).collect::<Vec<_>>(),
        "admins": dir.admins,
    })
}

/// The names a listing shows for ids.
struct Names {
    orgs: std::collections::HashMap<casenote_protocol::OrgId, String>,
    teams: std::collections::HashMap<casenote_protocol::TeamId, String>,
    staff: std::collections::HashMap<casenote_protocol::StaffId, String>,
}

impl Names {
    fn of(dir: &Directory) -> Self {
        Names {
            orgs: dir
                .orgs
                .iter()
                .map(|o| (o.org_id, o.name.clone()))
                .collect(),
            teams: dir
                .teams
                .iter()
                .map(|t| (t.team_id, t.name.clone()))
                .collect(),
            staff: dir
                .staff
                .iter()
                .map(|s| (s.staff_id, s.name.clone()))
                .collect(),
        }
    }

    fn org(&self, id: casenote_protocol::OrgId) -> String {
        self.orgs.get(&id).cloned().unwrap_or_default()
    }

    fn staff(&self, id: casenote_protocol::StaffId) -> String {
        self.staff.get(&id).cloned().unwrap_or_default()
    }

    fn teams(&self, ids: &[casenote_protocol::TeamId]) -> Vec<String> {
        ids.iter()
            .map(|t| self.teams.get(t).cloned().unwrap_or_else(|| t.to_string()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::act::perform;
    use crate::model::By;
    use crate::store::Store;
    use crate::testkit::{add_org, add_staff, add_team};

    #[test]
    fn the_listing_shows_every_device_but_never_a_token() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::sled::open(dir.path()).unwrap();
        let s: &dyn Store = &*store;
        add_org(s, "Council").unwrap();
        add_team(s, "Council", "North").unwrap();
        let staff = add_staff(s, "Pat Example", "nurse", "Council", &["North".into()]).unwrap();
        let run = |act: Act, json: bool| admin::render(&perform(s, By::Cli, act, 0).unwrap(), json);
        let issue = |device_name: Option<&str>, json: bool| {
            let act = Act::TokenIssue {
                staff: staff.staff_id.to_string(),
                device_name: device_name.map(str::to_string),
            };
            run(act, json)
        };
        let token = issue(Some("tablet"), false);
        let issued: serde_json::Value = serde_json::from_str(&issue(None, true)).unwrap();
        let device = issued["device_id"].as_str().unwrap().to_string();
        run(
            Act::TokenRevoke {
                device: device.clone(),
            },
            false,
        );
        let admin_token = run(Act::AdminTokenIssue { name: "ops".into() }, false);
        let text = run(Act::List, false);
        let json = run(Act::List, true);
        for shown in [&text, &json] {
            assert!(!shown.contains(&token));
            assert!(!shown.contains(issued["token"].as_str().unwrap()));
            assert!(!shown.contains(&admin_token));
            assert!(shown.contains("tablet") && shown.contains(&device));
        }
        assert!(text.contains("(revoked)"));
        let parsed: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(parsed["devices"].as_array().unwrap().len(), 2);
        assert_eq!(parsed["admins"][0]["name"], "ops");
    }

    #[test]
    fn an_unknown_role_names_the_valid_ones() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::sled::open(dir.path()).unwrap();
        add_org(&*store, "Council").unwrap();
        add_team(&*store, "Council", "North").unwrap();
        let add = StaffCommand::Add {
            name: "X".into(),
            role: "surgeon".into(),
            org: "Council".into(),
            teams: vec!["North".into()],
        };
        let err = staff_act(add).unwrap_err();
        assert!(err.to_string().contains("occupational_therapist"));
    }
}
