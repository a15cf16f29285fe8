//! `casenote`, the command-line field client: a thin shell over client-core.
//!
//! Every command takes `--store DIR` (the device store); commands that print data take `--json`.
//! Errors print as `casenote: ...` with an exit code that means something:
//! 1 the request was refused or invalid, 2 usage, 3 the server could not be reached (edits are
//! safe on the device), 4 the server refused the token, 5 the device is locked or wiped by its
//! offline lease (sign in again: `login` brings a wiped store back).
//!
//! The store is encrypted; [`keys`] finds its key (a key file, or `--passphrase`).

pub mod keys;
mod watch;

use anyhow::{Context, Result};
use casenote_client_core::store::Unlock;
use casenote_client_core::{Clocks, Device, Error as CoreError, TransportError};
use casenote_protocol::record::{field, Identity, NoteKind};
use casenote_protocol::{CaseId, DocId};
use clap::{Parser, Subcommand};
use serde_json::json;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "casenote",
    version,
    about = "casenote field client: case notes that work offline and sync"
)]
struct Cli {
    /// The device store directory (created if missing).
    #[arg(long, env = "CASENOTE_STORE", global = true)]
    store: Option<PathBuf>,
    /// The file holding the store's key (created, mode 0600, with a new store). Default: a file
    /// under $XDG_CONFIG_HOME/casenote/keys named by the store's path.
    #[arg(long, env = "CASENOTE_KEY_FILE", global = true)]
    key_file: Option<PathBuf>,
    /// Derive the store's key from a passphrase (Argon2id) instead of a key file. The passphrase
    /// comes from CASENOTE_PASSPHRASE, or a prompt when there is a terminal.
    #[arg(long, global = true, conflicts_with = "key_file")]
    passphrase: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Sign this store in to a server with a device token.
    Login {
        #[arg(long)]
        server: String,
        #[arg(long)]
        token: String,
    },
    /// Who this store is signed in as.
    Whoami {
        #[arg(long)]
        json: bool,
    },
    /// Open and list cases.
    #[command(subcommand)]
    Case(CaseCmd),
    /// Write, file and amend notes.
    #[command(subcommand)]
    Note(NoteCmd),
    /// Edit a case's plan.
    #[command(subcommand)]
    Plan(PlanCmd),
    /// Edit a case's About Me text.
    #[command(subcommand, name = "about-me")]
    AboutMe(TextCmd),
    /// Raise alerts on a case and set their status.
    #[command(subcommand)]
    Alert(AlertCmd),
    /// Add someone to the team around the person (org, team, role, worker); prints the entry id.
    Team {
        case_id: CaseId,
        #[arg(long)]
        org: String,
        #[arg(long)]
        team: String,
        #[arg(long)]
        role: String,
        #[arg(long, default_value = "")]
        worker: String,
    },
    /// Settle a conflicted field with one value; the resolution is recorded.
    Resolve {
        case_id: CaseId,
        /// The field's path as `conflicts` prints it, e.g. discharge_date or alerts.ID.status.
        #[arg(long)]
        field: String,
        #[arg(long)]
        value: String,
        /// The document holding the field, when several have a conflict at that path.
        #[arg(long)]
        doc: Option<DocId>,
    },
    /// Show a whole case: record, notes, plan.
    Show {
        case_id: CaseId,
        #[arg(long)]
        json: bool,
    },
    /// Fields of a case written concurrently, with every value.
    Conflicts {
        case_id: CaseId,
        #[arg(long)]
        json: bool,
    },
    /// Who changed a document and when: staff, role, device, server time (from the server).
    History {
        doc_id: DocId,
        #[arg(long)]
        json: bool,
    },
    /// Send local edits and fetch what changed.
    Sync {
        #[arg(long)]
        json: bool,
        /// Keep syncing: when the server's live channel says something changed, on a timer,
        /// and with exponential backoff and jitter after failures (never a tight loop).
        #[arg(long)]
        watch: bool,
        /// With --watch: stop after this long (e.g. 30s, 8h); default: until interrupted.
        #[arg(long = "for", value_parser = humantime::parse_duration, requires = "watch")]
        for_: Option<std::time::Duration>,
    },
    /// Unsynced changes, refusals, last sync, server.
    Status {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum CaseCmd {
    /// Open a new case; prints its id.
    New {
        #[arg(long)]
        name: String,
        #[arg(long)]
        nhs_number: Option<String>,
        /// Date of birth, YYYY-MM-DD.
        #[arg(long)]
        dob: Option<String>,
        #[arg(long)]
        address: Option<String>,
    },
    /// List the cases on this device.
    List {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum NoteCmd {
    /// Add a draft note to a case; prints the note id.
    Add {
        case_id: CaseId,
        #[arg(long)]
        text: String,
        #[arg(long, default_value = "case-note", value_parser = parse_kind)]
        kind: NoteKind,
        /// When it happened, as the worker states it: RFC 3339 (2026-11-23T09:30:00Z) or a time
        /// ago (30h, 90min). Defaults to now.
        #[arg(long, value_parser = parse_when)]
        occurred_at: Option<i64>,
    },
    /// Replace a draft note's text (a filed note refuses).
    Edit {
        note_id: DocId,
        #[arg(long)]
        text: String,
    },
    /// File a draft note; it never changes again.
    File {
        note_id: DocId,
        /// Why the note is filed more than 24 hours after it happened (required then).
        #[arg(long)]
        late_entry_reason: Option<String>,
    },
    /// Amend a filed note with a new note; prints the amendment's id.
    Amend {
        note_id: DocId,
        #[arg(long)]
        reason: String,
        #[arg(long)]
        text: String,
        /// A correction rather than an addendum.
        #[arg(long)]
        correction: bool,
    },
}

#[derive(Subcommand)]
enum PlanCmd {
    /// Append to, or splice, the plan narrative.
    #[command(flatten)]
    Narrative(TextCmd),
    /// Record that the plan was agreed with the person (kept with the plan's state; any later
    /// edit shows as "changed since agreed").
    Agree {
        case_id: CaseId,
        /// Who it was agreed with, e.g. "Peggy and her son".
        #[arg(long)]
        with: String,
    },
    /// Add a goal, in the person's words; prints its id.
    Goal {
        case_id: CaseId,
        #[arg(long)]
        text: String,
    },
    /// Add an action (what, who, by when); prints its id.
    Action {
        case_id: CaseId,
        #[arg(long)]
        what: String,
        #[arg(long, default_value = "")]
        who: String,
        #[arg(long, default_value = "")]
        by: String,
    },
    /// Set an action's (or with --goal, a goal's) status: open, in-progress, done, cancelled.
    Status {
        case_id: CaseId,
        id: String,
        #[arg(long)]
        status: String,
        #[arg(long)]
        goal: bool,
    },
    /// Set a plan field: discharge-date or pathway.
    Set {
        case_id: CaseId,
        #[arg(long, value_parser = ["discharge-date", "pathway"])]
        field: String,
        #[arg(long)]
        value: String,
    },
}

#[derive(Subcommand)]
enum AlertCmd {
    /// Raise an alert (e.g. "visit in pairs"); prints its id.
    Add {
        case_id: CaseId,
        #[arg(long)]
        text: String,
    },
    /// Set an alert's status: active or resolved.
    Status {
        case_id: CaseId,
        alert_id: String,
        #[arg(long)]
        status: String,
    },
}

#[derive(Subcommand)]
enum TextCmd {
    /// Append text.
    Append {
        case_id: CaseId,
        #[arg(long)]
        text: String,
    },
    /// Delete characters at a position and insert text there.
    Splice {
        case_id: CaseId,
        #[arg(long)]
        pos: usize,
        #[arg(long)]
        delete: usize,
        #[arg(long, default_value = "")]
        text: String,
    },
}

fn parse_kind(s: &str) -> Result<NoteKind, String> {
    s.parse()
}

/// Parses an RFC 3339 time or a duration ago into ms since the Unix epoch.
fn parse_when(s: &str) -> Result<i64, String> {
    let at = match humantime::parse_rfc3339_weak(s) {
        Ok(t) => t,
        Err(_) => {
            let ago = humantime::parse_duration(s.trim_end_matches(" ago")).map_err(|_| {
                format!("{s:?} is neither a time like 2026-11-23T09:30:00Z nor a time ago like 30h")
            })?;
            std::time::SystemTime::now()
                .checked_sub(ago)
                .ok_or_else(|| format!("{s:?} is too long ago"))?
        }
    };
    at.duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .map_err(|_| format!("{s:?} is before 1970"))
}

/// Runs the CLI with the process's arguments; returns the exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("casenote: {err:#}");
            ExitCode::from(exit_code(&err))
        }
    }
}

fn exit_code(err: &anyhow::Error) -> u8 {
    match err.downcast_ref::<CoreError>() {
        Some(CoreError::Transport(TransportError::Unreachable { .. })) => 3,
        Some(CoreError::Transport(TransportError::Unauthorized(_)))
        | Some(CoreError::Transport(TransportError::Revoked(_)))
        | Some(CoreError::RevokedAndWiped(_)) => 4,
        Some(CoreError::Locked { .. })
        | Some(CoreError::ExpiredAndWiped { .. })
        | Some(CoreError::Wiped)
        | Some(CoreError::Unrecoverable) => 5,
        _ => 1,
    }
}

/// A time in ms since the epoch as RFC 3339 (UTC, seconds).
fn format_ms(ms: i64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_seconds(t).to_string()
}

fn print_json(v: &impl serde::Serialize) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

fn run(cli: Cli) -> Result<()> {
    let store = cli
        .store
        .context("no device store given: pass --store DIR (or set CASENOTE_STORE)")?;
    let key = keys::resolve(&store, cli.key_file, cli.passphrase)?;
    let unlock = match &key {
        keys::KeySource::Key(k) => Unlock::Key(k),
        keys::KeySource::Passphrase(p) => Unlock::Passphrase(p),
    };
    if let Cmd::Login { server, token } = &cli.cmd {
        // Signing in also brings back a store that the offline lease wiped.
        let (_, who) = Device::sign_in(&store, unlock, Clocks::system(), server, token)
            .with_context(|| format!("cannot sign in the device store at {}", store.display()))?;
        let teams: Vec<&str> = who.teams.iter().map(|t| t.name.as_str()).collect();
        println!(
            "signed in as {} ({}, {}; {}) to {server}",
            who.name,
            who.role,
            who.org,
            teams.join(", ")
        );
        return Ok(());
    }
    let device = Device::open_with(&store, unlock, Clocks::system())
        .with_context(|| format!("cannot open the device store at {}", store.display()))?;
    match cli.cmd {
        Cmd::Login { .. } => {} // signed in above
        Cmd::Whoami { json } => {
            let who = device.whoami()?;
            if json {
                print_json(&who)?;
            } else {
                println!(
                    "{} ({}, {}), staff {} on device {}",
                    who.name, who.role, who.org, who.staff_id, who.device_id
                );
            }
        }
        Cmd::Case(CaseCmd::New {
            name,
            nhs_number,
            dob,
            address,
        }) => {
            let id = device.case_new(&Identity {
                name,
                nhs_number,
                dob,
                address,
            })?;
            println!("{id}");
        }
        Cmd::Case(CaseCmd::List { json }) => {
            let cases = device.cases()?;
            if json {
                print_json(&cases)?;
            } else if cases.is_empty() {
                println!("no cases on this device yet: `casenote sync` fetches your caseload");
            } else {
                for c in cases {
                    let unsynced = if c.unsynced_docs > 0 {
                        format!(", {} unsynced", c.unsynced_docs)
                    } else {
                        String::new()
                    };
                    println!(
                        "{}  {}  ({} notes, {} drafts{unsynced})",
                        c.case_id, c.name, c.notes, c.drafts
                    );
                }
            }
        }
        Cmd::Note(NoteCmd::Add {
            case_id,
            text,
            kind,
            occurred_at,
        }) => println!("{}", device.note_add(case_id, kind, &text, occurred_at)?),
        Cmd::Note(NoteCmd::Edit { note_id, text }) => device.note_edit(note_id, &text)?,
        Cmd::Note(NoteCmd::File {
            note_id,
            late_entry_reason,
        }) => {
            device.note_file_with(note_id, late_entry_reason.as_deref())?;
            println!("filed {note_id}");
        }
        Cmd::Note(NoteCmd::Amend {
            note_id,
            reason,
            text,
            correction,
        }) => {
            let kind = if correction { "correction" } else { "addendum" };
            println!("{}", device.note_amend(note_id, kind, &reason, &text)?);
        }
        Cmd::Plan(PlanCmd::Narrative(TextCmd::Append { case_id, text })) => {
            device.plan_append(case_id, &text)?
        }
        Cmd::Plan(PlanCmd::Narrative(TextCmd::Splice {
            case_id,
            pos,
            delete,
            text,
        })) => device.plan_splice(case_id, pos, delete, &text)?,
        Cmd::Plan(PlanCmd::Set {
            case_id,
            field: f,
            value,
        }) => {
            let key = if f == "pathway" {
                field::PATHWAY
            } else {
                field::DISCHARGE_DATE
            };
            device.plan_set(case_id, key, &value)?;
        }
        Cmd::Plan(PlanCmd::Agree { case_id, with }) => device.plan_agree(case_id, &with)?,
        Cmd::Plan(PlanCmd::Goal { case_id, text }) => {
            println!("{}", device.goal_add(case_id, &text)?)
        }
        Cmd::Plan(PlanCmd::Action {
            case_id,
            what,
            who,
            by,
        }) => {
            println!("{}", device.action_add(case_id, &what, &who, &by)?)
        }
        Cmd::Plan(PlanCmd::Status {
            case_id,
            id,
            status,
            goal,
        }) => device.action_status(case_id, &id, &status, goal)?,
        Cmd::Alert(AlertCmd::Add { case_id, text }) => {
            println!("{}", device.alert_add(case_id, &text)?)
        }
        Cmd::Alert(AlertCmd::Status {
            case_id,
            alert_id,
            status,
        }) => device.alert_status(case_id, &alert_id, &status)?,
        Cmd::Team {
            case_id,
            org,
            team,
            role,
            worker,
        } => println!("{}", device.team_add(case_id, &org, &team, &role, &worker)?),
        Cmd::Resolve {
            case_id,
            field: path,
            value,
            doc,
        } => {
            let path: Vec<String> = path.split('.').map(str::to_string).collect();
            let doc = device.resolve(case_id, doc, &path, &value)?;
            println!("resolved {} in {doc}", path.join("."));
        }
        Cmd::AboutMe(TextCmd::Append { case_id, text }) => {
            device.about_me_append(case_id, &text)?
        }
        Cmd::AboutMe(TextCmd::Splice {
            case_id,
            pos,
            delete,
            text,
        }) => device.about_me_splice(case_id, pos, delete, &text)?,
        Cmd::Show { case_id, json } => {
            let v = device.show(case_id)?;
            if json {
                print_json(&v)?;
            } else {
                print_case(&v);
            }
        }
        Cmd::Conflicts { case_id, json } => {
            let found = device.conflicts(case_id)?;
            if json {
                let v: Vec<_> = found
                    .iter()
                    .map(|(d, c)| json!({"doc_id": d, "path": c.path, "values": c.values}))
                    .collect();
                print_json(&v)?;
            } else if found.is_empty() {
                println!("no conflicts");
            } else {
                for (doc, c) in found {
                    let values: Vec<String> = c.values.iter().map(|v| v.to_string()).collect();
                    println!("{doc} {}: {}", c.path.join("."), values.join(" | "));
                }
            }
        }
        Cmd::Sync {
            json: _,
            watch: true,
            for_,
        } => watch::run(&device, for_)?,
        Cmd::Sync { json, .. } => {
            let r = device.sync()?;
            if json {
                print_json(&r)?;
            } else {
                println!(
                    "sent {} changes in {} documents ({} new to the server, {} it already had); received {} changes in {} documents; {} requests, {} bytes up, {} bytes down, {} ms",
                    r.changes_up, r.docs_up, r.changes_stored, r.changes_duplicate, r.changes_down, r.docs_down, r.requests, r.bytes_up, r.bytes_down, r.elapsed_ms
                );
                for rej in &r.rejections {
                    println!(
                        "refused: document {} ({}): {}",
                        rej.doc_id, rej.code, rej.reason
                    );
                }
                if r.evicted > 0 {
                    println!(
                        "removed {} documents this device may no longer hold",
                        r.evicted
                    );
                }
                if r.clock_flagged {
                    println!("warning: this device's clock is {} s off the server's; check its date and time", r.clock_offset_ms / 1000);
                }
            }
        }
        Cmd::History { doc_id, json } => {
            let entries = device
                .http_transport()?
                .history(doc_id)
                .map_err(CoreError::from)?;
            if json {
                print_json(&entries)?;
            } else {
                for e in entries {
                    println!(
                        "#{} received {} (device clock {}) by {} ({}, {}) on device {}: {} ops",
                        e.seq,
                        e.received_at_ms
                            .map(format_ms)
                            .unwrap_or_else(|| "?".into()),
                        format_ms(e.device_time_ms),
                        e.staff_name.as_deref().unwrap_or("unknown"),
                        e.role.as_deref().unwrap_or("?"),
                        e.org.as_deref().unwrap_or("?"),
                        e.device_id
                            .map(|d| d.to_string())
                            .unwrap_or_else(|| "?".into()),
                        e.ops
                    );
                }
            }
        }
        Cmd::Status { json } => {
            let s = device.status()?;
            if json {
                print_json(&s)?;
            } else {
                println!(
                    "server: {}",
                    s.server.as_deref().unwrap_or("(not signed in)")
                );
                println!("documents held: {}", s.docs_held);
                println!(
                    "unsynced: {} changes in {} documents ({} bytes)",
                    s.unsynced_changes, s.unsynced_docs, s.unsynced_bytes
                );
                match &s.last_sync {
                    Some(r) => println!(
                        "last sync: cursor {}, {} bytes up, {} bytes down, {} ms",
                        r.cursor, r.bytes_up, r.bytes_down, r.elapsed_ms
                    ),
                    None => println!("last sync: never"),
                }
                println!(
                    "all syncs: {} bytes up, {} bytes down",
                    s.bytes_up_total, s.bytes_down_total
                );
                let lease = &s.lease;
                if lease.locked {
                    println!("locked: this device has been out of touch too long; sign in again");
                } else if let (Some(locks), Some(wipes)) = (lease.locks_at_ms, lease.wipes_at_ms) {
                    println!(
                        "offline lease: locks at {} and wipes itself at {} unless it reaches the server",
                        format_ms(locks),
                        format_ms(wipes)
                    );
                }
                for r in &s.refused {
                    println!(
                        "refused by the server: {} ({}): {}",
                        r.doc_id, r.code, r.reason
                    );
                }
                println!("store size: {} bytes", s.store_bytes);
            }
        }
    }
    Ok(())
}

fn print_case(v: &serde_json::Value) {
    let r = &v["record"];
    println!(
        "{} ({})",
        r[field::NAME].as_str().unwrap_or("?"),
        v["case_id"].as_str().unwrap_or("?")
    );
    if let Some(a) = r[field::ABOUT_ME].as_str().filter(|s| !s.is_empty()) {
        println!("About me: {a}");
    }
    for p in v["plans"].as_array().into_iter().flatten() {
        println!(
            "Plan: {}",
            p["content"][field::NARRATIVE].as_str().unwrap_or("")
        );
    }
    for n in v["notes"].as_array().into_iter().flatten() {
        let c = &n["content"];
        println!(
            "- [{}] {} {}: {}",
            c[field::STATUS].as_str().unwrap_or("?"),
            n["note_id"].as_str().unwrap_or("?"),
            c[field::NOTE_KIND].as_str().unwrap_or("?"),
            c[field::TEXT].as_str().unwrap_or("")
        );
    }
    let conflicts = v["conflicts"].as_array().map(Vec::len).unwrap_or(0);
    if conflicts > 0 {
        println!("{conflicts} conflicting fields: see `casenote conflicts`");
    }
}
