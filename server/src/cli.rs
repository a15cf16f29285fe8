//! The `casenote-server` command line: `serve`, `admin`, `demo`, `audit`, `verify` and `export`, a thin clap shell
//! over the library. It lives in the library so that the end-to-end test package can build the same entry
//! point under its own binary name.
//!
//! Errors print as `casenote-server: {err:#}` on stderr. Exit codes: 0 success, 1 failure, 2 usage
//! (clap's own). `audit verify` prints `audit log intact: N entries` and exits 0, or prints
//! `audit log broken: entry SEQ is the first broken entry: REASON` (stdout and stderr) and exits 1.
//! `verify` prints `store verified: ...` and exits 0, or `store damaged: FIRST PROBLEM` and exits 1.
//! Both check the store as it is: they open it without healing ([`crate::SledStore::inspect`]).

use crate::{admin, audit, demo, now_ms, Config, Store};
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
        /// The data directory (created if missing).
        #[arg(long)]
        data: PathBuf,
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
    },
    /// Check the whole store: every change against its hash and the log's hash chain, the
    /// indexes against the log, the audit chain, and that everything acknowledged is there
    /// (the server must not be running on DIR). Exit 1 naming the first problem.
    Verify {
        #[arg(long)]
        data: PathBuf,
    },
    /// Export a person's whole record (restricted documents included) as record.json and
    /// record.html (the server must not be running on DIR).
    Export {
        #[arg(long)]
        data: PathBuf,
        #[arg(long)]
        case: CaseId,
        /// The directory to write into (created if missing).
        #[arg(long)]
        out: PathBuf,
    },
    /// Manage orgs, teams, staff and device tokens (the server must not be running on DIR).
    Admin {
        #[arg(long)]
        data: PathBuf,
        #[command(subcommand)]
        action: AdminCommand,
    },
    /// Load the fictional Castlebridge demo and print a token per demo staff member.
    Demo {
        #[arg(long)]
        data: PathBuf,
        /// Print one JSON object instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Check or show the hash-chained audit log (the server must not be running on DIR).
    Audit {
        #[command(subcommand)]
        action: AuditCommand,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Check every link of the chain; exit 1 naming the first broken entry.
    Verify {
        #[arg(long)]
        data: PathBuf,
    },
    /// Print the entries, oldest first.
    Show {
        #[arg(long)]
        data: PathBuf,
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
    /// Changes refused by the record rules.
    Quarantine {
        #[command(subcommand)]
        action: QuarantineCommand,
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

/// Opens the store; a loss found (and healed) on the way is said on stderr too, since the
/// offline commands have no log. The offline commands write a few small records and have no
/// free-space floor (`serve` sets its own): revoking a lost device must work on a nearly full
/// disk.
fn open(data: &std::path::Path) -> anyhow::Result<std::sync::Arc<crate::SledStore>> {
    let store = crate::open(data)?;
    store.set_free_bytes_min(0);
    if let Some(damage) = store.damage() {
        eprintln!(
            "casenote-server: warning: the store had lost writes it acknowledged ({}); it now \
             has a new log id, so every device will send back what it holds on its next sync",
            damage.findings.join("; ")
        );
    }
    Ok(store)
}

/// Opens the store to check it, healing nothing.
fn inspect(data: &std::path::Path) -> anyhow::Result<crate::SledStore> {
    Ok(crate::SledStore::inspect(data)?)
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve {
            data,
            listen,
            late_entry_hours,
            lock_after_hours,
            wipe_after_days,
            min_free_mb,
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
            let config = Config::default()
                .with_late_entry_after_ms(late_entry_hours.saturating_mul(3_600_000))
                .with_lease(lease);
            serve(data, listen, config, min_free_mb.saturating_mul(MIB))
        }
        Command::Verify { data } => {
            let store = inspect(&data)?;
            match store.verify() {
                Ok(summary) => {
                    println!("{summary}");
                    Ok(())
                }
                Err(e) => {
                    println!("{e}");
                    Err(e.into())
                }
            }
        }
        Command::Export { data, case, out } => {
            let store = open(&data)?;
            let done = crate::export::case(&*store, case, &out, now_ms())?;
            println!("{done}");
            Ok(())
        }
        Command::Admin { data, action } => {
            let store = open(&data)?;
            let out = admin_action(&*store, action)?;
            store.flush()?;
            println!("{out}");
            Ok(())
        }
        Command::Demo { data, json } => {
            let store = open(&data)?;
            let out = demo::load(&*store, now_ms())?;
            if json {
                println!("{}", demo::render_json(&out));
            } else {
                print!("{}", demo::render_human(&out));
            }
            Ok(())
        }
        Command::Audit { action } => match action {
            AuditCommand::Verify { data } => {
                let store = inspect(&data)?;
                match audit::verify_anchored(&store) {
                    Ok(n) => {
                        println!("audit log intact: {n} entries");
                        Ok(())
                    }
                    Err(e) => {
                        println!("{e}");
                        Err(e.into())
                    }
                }
            }
            AuditCommand::Show { data, json, limit } => {
                let store = open(&data)?;
                let entries = audit::entries(&*store, limit)?;
                let out = audit::render(&entries, json);
                if !out.is_empty() {
                    println!("{out}");
                }
                Ok(())
            }
        },
    }
}

fn admin_action(store: &dyn Store, action: AdminCommand) -> anyhow::Result<String> {
    Ok(match action {
        AdminCommand::Org {
            action: OrgCommand::Add { name },
        } => admin::org_add(store, &name)?,
        AdminCommand::Team {
            action: TeamCommand::Add { org, name },
        } => admin::team_add(store, &org, &name)?,
        AdminCommand::Staff {
            action:
                StaffCommand::Add {
                    name,
                    role,
                    org,
                    teams,
                },
        } => admin::staff_add(store, &name, &role, &org, &teams)?,
        AdminCommand::Token {
            action:
                TokenCommand::Issue {
                    staff,
                    device_name,
                    json,
                },
        } => admin::token_issue(store, &staff, device_name.as_deref(), json, now_ms())?,
        AdminCommand::Token {
            action: TokenCommand::Revoke { device },
        } => admin::token_revoke(store, &device)?,
        AdminCommand::Staff {
            action: StaffCommand::AddTeam { staff, team },
        } => {
            let (s, t) = (
                admin::resolve_staff(store, &staff)?,
                admin::resolve_team(store, &team)?,
            );
            admin::staff_add_team(store, s, t, now_ms())?;
            format!("staff member {s} is on team {t}")
        }
        AdminCommand::Staff {
            action: StaffCommand::RemoveTeam { staff, team },
        } => {
            let (s, t) = (
                admin::resolve_staff(store, &staff)?,
                admin::resolve_team(store, &team)?,
            );
            admin::staff_remove_team(store, s, t, now_ms())?;
            format!("staff member {s} is not on team {t}")
        }
        AdminCommand::Staff {
            action: StaffCommand::Revoke { staff },
        } => admin::staff_revoke_cmd(store, &staff)?,
        AdminCommand::Case {
            action: CaseCommand::AddTeam { case, team },
        } => {
            let t = admin::resolve_team(store, &team)?;
            admin::case_add_team(store, case, t, now_ms())?;
            format!("team {t} is on case {case}")
        }
        AdminCommand::Case {
            action: CaseCommand::RemoveTeam { case, team },
        } => {
            let t = admin::resolve_team(store, &team)?;
            admin::case_remove_team(store, case, t, now_ms())?;
            format!("team {t} is not on case {case}")
        }
        AdminCommand::Case {
            action: CaseCommand::Show { case, json },
        } => admin::case_show(store, case, json)?,
        AdminCommand::Restricted {
            action: RestrictedCommand::Grant { doc, team },
        } => {
            let t = admin::resolve_team(store, &team)?;
            admin::restricted_grant(store, doc, t, now_ms())?;
            format!("team {t} may see restricted document {doc}")
        }
        AdminCommand::Restricted {
            action: RestrictedCommand::Revoke { doc, team },
        } => {
            let t = admin::resolve_team(store, &team)?;
            admin::restricted_revoke(store, doc, t, now_ms())?;
            format!("team {t} may not see restricted document {doc}")
        }
        AdminCommand::List { json } => admin::list(store, json)?,
        AdminCommand::Restored => admin::restored(store, now_ms())?,
        AdminCommand::Quarantine {
            action: QuarantineCommand::List { json },
        } => admin::quarantine_list(store, json)?,
    })
}

fn serve(data: PathBuf, listen: String, config: Config, free_bytes_min: u64) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
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
        let store = open(&data)?;
        store.set_free_bytes_min(free_bytes_min);
        crate::listen::raise_open_files_limit();
        let listener = tokio::net::TcpListener::bind(&listen)
            .await
            .with_context(|| format!("could not listen on {listen}"))?;
        let addr = listener.local_addr()?;
        let mut stdout = std::io::stdout();
        writeln!(stdout, "casenote-server listening on http://{addr}")?;
        stdout.flush()?;
        tracing::info!(%addr, data = %data.display(), "serving");
        crate::run_until(listener, store, config, stop_signal()).await?;
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
