//! `casenote`, the command-line field client: a thin shell over client-core.
//!
//! Every command takes `--store DIR` (the device store; only `login` makes one); commands that
//! print data take `--json`. Errors print once, as `casenote: ...`, saying what happened and what
//! to do, with an exit code that means something ([`exit::EXIT_CODES`], also in `--help`).
//!
//! The store is encrypted; [`keys`] finds its key (a key file named by the store's id, or
//! `--passphrase`). A store another casenote holds (a `sync --watch` mid-sync) is waited for, up
//! to `--wait`. Output into a pipe that closed ends the command quietly, as ripgrep does.

mod args;
mod exit;
pub mod keys;
mod page;
mod page_statutory;
mod progress;
mod watch;

use anyhow::{Context, Result};
use args::{AlertCmd, CaseCmd, Cli, Cmd, NoteCmd, PlanCmd, TextCmd};
use casenote_client_core::tls::{Endpoint, ServerOptions};
use casenote_client_core::{fields, lock, store, Clocks, Device, Error as CoreError};
use casenote_protocol::record::{Identity, RecordError};
use clap::Parser;
use exit::{advise, Doing, Exit};
use page::count;
use std::io::{BufRead, IsTerminal, Read, Write};
use std::path::Path;
use std::process::ExitCode;

/// Prints a line on stdout; a reader that went away (`| head`) ends the command quietly.
macro_rules! out {
    ($($arg:tt)*) => { $crate::emit(&format!($($arg)*)) };
}

fn emit(text: &str) {
    let mut stdout = std::io::stdout().lock();
    if let Err(e) = writeln!(stdout, "{text}").and_then(|()| stdout.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
    }
}

mod sealed;
mod statutory;

/// Runs the CLI with the process's arguments; returns the exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("casenote: {err:#}");
            ExitCode::from(exit::code(&err))
        }
    }
}

/// A time in ms since the epoch as RFC 3339 (UTC, seconds).
fn format_ms(ms: i64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_seconds(t).to_string()
}

fn print_json(v: &impl serde::Serialize) -> Result<()> {
    out!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

fn run(cli: Cli) -> Result<()> {
    let Some(store) = cli.store.clone() else {
        return Err(Exit::usage(
            "no device store given: pass --store DIR (or set CASENOTE_STORE)",
        ));
    };
    let wait = *cli.wait;
    if let Cmd::Login {
        server,
        token,
        ca_file,
        allow_insecure_http,
    } = &cli.cmd
    {
        let server = endpoint(server, ca_file.as_deref(), *allow_insecure_http)?;
        return login(&cli, &store, &server, token.as_deref());
    }
    if !store::exists(&store) {
        return Err(exit::no_store(&store));
    }
    lock::wait_free(&store, wait)?;
    let keys = keys::Keys::new(&store, cli.key_file.clone(), cli.passphrase)?;
    let device = keys
        .unlock(|u| Device::open_existing(&store, u, Clocks::system()))
        .map_err(|e| match e {
            CoreError::NoStore(_) => exit::no_store(&store),
            e => e.into(),
        })?;
    keys.settle(&device)?;
    dispatch(&device, cli.cmd)
}

/// The device token: from `--token` or CASENOTE_TOKEN, from standard input with `--token -`, or
/// asked for on a terminal; never from a script that gave none (it would hang).
fn read_token(given: Option<&str>) -> Result<zeroize::Zeroizing<String>> {
    let token = match given {
        Some("-") => {
            let mut line = String::new();
            std::io::stdin()
                .lock()
                .take(64 * 1024)
                .read_line(&mut line)
                .context("cannot read the token from standard input")?;
            line
        }
        Some(t) => t.to_string(),
        None if std::io::stdin().is_terminal() => {
            rpassword::prompt_password("device token: ").context("cannot read the token")?
        }
        None => {
            return Err(Exit::usage(
                "no device token: set CASENOTE_TOKEN, or pipe it in with `--token -` (--token \
                 TOKEN works too, but other users can see it in the process list)",
            ))
        }
    };
    let token = zeroize::Zeroizing::new(token.trim().to_string());
    if token.is_empty() {
        return Err(Exit::usage("the device token is empty"));
    }
    Ok(token)
}

/// The server `login` was given, with what to trust: checked, and the CA file read, before
/// anything else (a store, a key file, a token prompt).
fn endpoint(server: &str, ca_file: Option<&Path>, allow_insecure_http: bool) -> Result<Endpoint> {
    let ca_pem = ca_file.map(read_ca_file).transpose()?;
    let options = ServerOptions {
        ca_pem,
        allow_insecure_http,
    };
    Endpoint::new(server, options).map_err(|e| {
        let message = match (&e, ca_file) {
            (CoreError::InsecureHttp { .. }, _) => format!("{e} (--allow-insecure-http)"),
            (CoreError::BadCa(why), Some(path)) => {
                format!("the CA file {} cannot be used: {why}", path.display())
            }
            _ => e.to_string(),
        };
        Exit {
            code: exit::core_code(&e),
            message: format!("cannot sign in: {message}; nothing was changed"),
        }
        .into()
    })
}

/// The bytes of a `--ca-file`, read with a bound: a missing or unreadable file is a usage error.
fn read_ca_file(path: &Path) -> Result<Vec<u8>> {
    let unreadable = |e: std::io::Error| {
        Exit::usage(format!(
            "cannot read the CA file {}: {e}; nothing was changed",
            path.display()
        ))
    };
    let file = std::fs::File::open(path).map_err(unreadable)?;
    let mut pem = Vec::new();
    file.take(casenote_protocol::limits::DEVICE_CA_PEM_BYTES_MAX as u64 + 1)
        .read_to_end(&mut pem)
        .map_err(unreadable)?;
    Ok(pem)
}

fn login(cli: &Cli, store: &Path, server: &Endpoint, token: Option<&str>) -> Result<()> {
    let token = read_token(token)?;
    if store::exists(store) {
        lock::wait_free(store, *cli.wait)?;
    }
    let keys = keys::Keys::new(store, cli.key_file.clone(), cli.passphrase)?;
    let signed_in = keys.unlock(|u| Device::sign_in_to(store, u, Clocks::system(), server, &token));
    let (device, who) = match signed_in {
        Ok(signed_in) => signed_in,
        Err(e) => {
            // A store that sign-in did not create keeps no key file made for it.
            keys.discard_new();
            return Err(advise(e, Doing::SignIn));
        }
    };
    keys.settle(&device)?;
    let teams: Vec<&str> = who.teams.iter().map(|t| t.name.as_str()).collect();
    out!(
        "signed in as {} ({}, {}; {}) to {}",
        who.name,
        who.role,
        who.org,
        teams.join(", "),
        server.url()
    );
    Ok(())
}

/// Reads a field name as the schema spells it, saying so when it was spelled otherwise.
fn spelled_as(given: &str, canonical: &str) {
    if given != canonical {
        eprintln!("casenote: --field {given} is read as {canonical}");
    }
}

fn dispatch(device: &Device, cmd: Cmd) -> Result<()> {
    match cmd {
        Cmd::Login { .. } => unreachable!("signed in before the store is opened"),
        Cmd::Whoami { json } => {
            let who = device.whoami()?;
            if json {
                print_json(&who)?;
            } else {
                out!(
                    "{} ({}, {}), staff {} on device {}",
                    who.name,
                    who.role,
                    who.org,
                    who.staff_id,
                    who.device_id
                );
            }
        }
        Cmd::Case(c) => case(device, c)?,
        Cmd::Note(n) => note(device, n)?,
        Cmd::Plan(p) => plan(device, p)?,
        Cmd::Assessment(c) => statutory::assessment(device, c)?,
        Cmd::Discharge(c) => statutory::discharge(device, c)?,
        Cmd::Referral(c) => statutory::referral(device, c)?,
        Cmd::Safeguarding(c) => statutory::safeguarding(device, c)?,
        Cmd::Restricted(c) => sealed::restricted(device, c)?,
        Cmd::BreakGlass {
            doc,
            reason_category,
            reason,
        } => sealed::break_glass(device, doc, reason_category, &reason)?,
        Cmd::Legal(c) => statutory::legal(device, c)?,
        Cmd::Contact(c) => statutory::contact(device, c)?,
        Cmd::AboutMe(TextCmd::Append { case_id, text }) => {
            device.about_me_append(case_id, &text)?
        }
        Cmd::AboutMe(TextCmd::Splice {
            case_id,
            pos,
            delete,
            text,
        }) => device.about_me_splice(case_id, pos, delete, &text)?,
        Cmd::Alert(AlertCmd::Add { case_id, text }) => {
            out!("{}", device.alert_add(case_id, &text)?)
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
        } => out!("{}", device.team_add(case_id, &org, &team, &role, &worker)?),
        Cmd::Resolve {
            case_id,
            field: given,
            value,
            doc,
        } => {
            let path: Vec<String> = given.split('.').map(str::to_string).collect();
            let path = fields::resolvable_path(&path)?;
            let shown = path.join(".");
            spelled_as(&given, &shown);
            let doc = device
                .resolve(case_id, doc, &path, &value)
                .map_err(|e| match e {
                    CoreError::Record(RecordError::NoConflict(_)) => Exit {
                        code: 1,
                        message: format!(
                            "{e} (`casenote conflicts {case_id}` lists the fields that have)"
                        ),
                    }
                    .into(),
                    e => anyhow::Error::from(e),
                })?;
            out!("resolved {shown} in {doc}");
        }
        Cmd::Show { case_id, json } => {
            if json {
                let v = device.export(case_id)?;
                let freshness = serde_json::to_value(device.freshness()?)?;
                if let Some(warning) = page::stale_warning(&freshness) {
                    eprintln!("casenote: {warning}");
                }
                print_json(&v)?;
            } else {
                let mut v = with_me(device, device.show(case_id)?)?;
                v["seen"] = serde_json::json!({
                    "now_ms": device.clock_ms(),
                    "freshness": device.freshness()?,
                });
                out!("{}", page::case_page(&v).trim_end());
            }
            warn_unrecorded(device);
        }
        Cmd::Conflicts { case_id, json } => {
            let v = device.view(case_id, casenote_protocol::wire::ViewKind::Conflicts)?;
            if json {
                print_json(&v["conflicts"])?;
            } else {
                out!("{}", page::conflicts(&with_me(device, v)?).trim_end());
            }
            warn_unrecorded(device);
        }
        Cmd::History { doc_id, json } => history(device, doc_id, json)?,
        Cmd::Sync {
            json: _,
            watch: true,
            for_,
        } => watch::run(device, for_)?,
        Cmd::Sync { json, .. } => sync(device, json)?,
        Cmd::Status { json } => status(device, json)?,
    }
    Ok(())
}

/// Says on stderr when a view could not be kept for the audit log (a full disk: reading wins).
fn warn_unrecorded(device: &Device) {
    if device.views_unrecorded() > 0 {
        eprintln!(
            "casenote: the disk is full, so this view was not kept for the audit log; free some \
             space"
        );
    }
}

/// A case as `show` gives it, with this device's own user among its people, by name: the
/// record alone names only workers on the team, and `show --json` stays the same on every device.
fn with_me(device: &Device, mut show: serde_json::Value) -> Result<serde_json::Value> {
    let me = device.whoami()?;
    let team = me.teams.first().map(|t| t.name.clone());
    let known = &mut show["people"][me.staff_id.to_string()];
    let mut facts =
        serde_json::json!({ "name": me.name, "role": me.role, "org": me.org, "team": team });
    if let Some(o) = known.as_object() {
        for (k, v) in o {
            facts[k] = v.clone();
        }
        facts["name"] = serde_json::json!(me.name);
    }
    *known = facts;
    Ok(show)
}

fn case(device: &Device, cmd: CaseCmd) -> Result<()> {
    match cmd {
        CaseCmd::New {
            name,
            nhs_number,
            dob,
            address,
        } => {
            let id = device.case_new(&Identity {
                name,
                nhs_number,
                dob,
                address,
            })?;
            out!("{id}");
        }
        CaseCmd::List { json } => {
            let cases = device.cases()?;
            if json {
                print_json(&cases)?;
            } else if cases.is_empty() {
                out!("no cases on this device yet: `casenote sync` fetches your caseload");
            } else {
                for c in cases {
                    let unsynced = if c.unsynced_docs > 0 {
                        format!(", {} unsynced", c.unsynced_docs)
                    } else {
                        String::new()
                    };
                    out!(
                        "{}  {}  ({}, {}{unsynced})",
                        c.case_id,
                        c.name,
                        count(c.notes, "note"),
                        count(c.drafts, "draft")
                    );
                }
            }
        }
    }
    Ok(())
}

fn note(device: &Device, cmd: NoteCmd) -> Result<()> {
    match cmd {
        NoteCmd::Add {
            case_id,
            text,
            kind,
            occurred_at,
        } => out!("{}", device.note_add(case_id, kind, &text, occurred_at)?),
        NoteCmd::Edit { note_id, text } => device.note_edit(note_id, &text)?,
        NoteCmd::File {
            note_id,
            late_entry_reason,
        } => {
            device.note_file_with(note_id, late_entry_reason.as_deref())?;
            out!("filed {note_id}");
        }
        NoteCmd::Amend {
            note_id,
            reason,
            text,
            correction,
        } => {
            let kind = if correction { "correction" } else { "addendum" };
            out!("{}", device.note_amend(note_id, kind, &reason, &text)?);
        }
    }
    Ok(())
}

fn plan(device: &Device, cmd: PlanCmd) -> Result<()> {
    match cmd {
        PlanCmd::Narrative(TextCmd::Append { case_id, text }) => {
            device.plan_append(case_id, &text)?
        }
        PlanCmd::Narrative(TextCmd::Splice {
            case_id,
            pos,
            delete,
            text,
        }) => device.plan_splice(case_id, pos, delete, &text)?,
        PlanCmd::Set {
            case_id,
            field: given,
            value,
        } => {
            let key = fields::plan_field(&given)?;
            spelled_as(&given, key);
            device.plan_set(case_id, key, &value)?;
        }
        PlanCmd::Agree { case_id, with } => device.plan_agree(case_id, &with)?,
        PlanCmd::Goal { case_id, text } => out!("{}", device.goal_add(case_id, &text)?),
        PlanCmd::Action {
            case_id,
            what,
            who,
            by,
        } => out!("{}", device.action_add(case_id, &what, &who, &by)?),
        PlanCmd::Status {
            case_id,
            id,
            status,
            goal,
        } => device.action_status(case_id, &id, &status, goal)?,
    }
    Ok(())
}

fn sync(device: &Device, json: bool) -> Result<()> {
    let mut progress = progress::Progress::new(!json);
    progress.start("syncing");
    let r = device
        .sync_observed(&mut |r| progress.sync(r))
        .map_err(|e| advise(e, Doing::Sync))?;
    progress.finish();
    if json {
        return print_json(&r);
    }
    out!(
        "sent {} in {} ({} new to the server, {} it already had); received {} in {}; {}, {} bytes up, {} bytes down, {} ms",
        count(r.changes_up, "change"),
        count(r.docs_up, "document"),
        r.changes_stored,
        r.changes_duplicate,
        count(r.changes_down, "change"),
        count(r.docs_down, "document"),
        count(r.requests, "request"),
        r.bytes_up,
        r.bytes_down,
        r.elapsed_ms
    );
    for rej in &r.rejections {
        out!(
            "refused: document {} ({}): {}",
            rej.doc_id,
            rej.code,
            rej.reason
        );
    }
    if r.evicted > 0 {
        out!(
            "removed {} this device may no longer hold",
            count(r.evicted, "document")
        );
    }
    for doc in &r.damaged {
        out!(
            "damaged: document {doc} cannot be read on this device and was skipped (what the server sent for it is kept beside it); everything else synced"
        );
    }
    if r.clock_flagged {
        out!(
            "warning: this device's clock is {} s off the server's; check its date and time",
            r.clock_offset_ms / 1000
        );
    }
    Ok(())
}

fn history(device: &Device, doc_id: casenote_protocol::DocId, json: bool) -> Result<()> {
    let transport = device.http_transport()?;
    // The store is not needed while the server answers: let another casenote use it.
    device.release();
    let entries = transport
        .history(doc_id)
        .map_err(|e| advise(CoreError::from(e), Doing::History))?;
    if json {
        return print_json(&entries);
    }
    for e in entries {
        out!(
            "#{} received {} (device clock {}) by {} ({}, {}) on device {}: {}",
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
            count(e.ops as usize, "op")
        );
    }
    Ok(())
}

/// Bytes for people: `8.4 MB`, `61 KB`, `512 bytes`.
fn bytes(n: u64) -> String {
    match n {
        n if n >= 1_000_000 => format!("{:.1} MB", n as f64 / 1e6),
        n if n >= 1_000 => format!("{} KB", n / 1_000),
        n => count(n as usize, "byte"),
    }
}

fn status(device: &Device, json: bool) -> Result<()> {
    let s = device.status()?;
    if json {
        return print_json(&s);
    }
    out!(
        "server: {}",
        s.server.as_deref().unwrap_or("(not signed in)")
    );
    out!("documents held: {}", s.docs_held);
    out!(
        "unsynced: {} in {} ({})",
        count(s.unsynced_changes, "change"),
        count(s.unsynced_docs, "document"),
        bytes(s.unsynced_bytes as u64)
    );
    for doc in &s.damaged {
        out!("damaged: document {doc} has unsent edits this device cannot read");
    }
    match &s.last_sync {
        Some(r) => out!(
            "last sync: {}, cursor {}, {} up, {} down, {} ms",
            format_ms(r.finished_at_ms),
            r.cursor,
            bytes(r.bytes_up as u64),
            bytes(r.bytes_down as u64),
            r.elapsed_ms
        ),
        None => out!("last sync: never"),
    }
    if let Some(warning) = page::stale_warning(&serde_json::to_value(&s.freshness)?) {
        out!("{warning}");
    }
    out!(
        "views awaiting the server's audit: {}",
        count(s.views_queued, "view")
    );
    out!(
        "all syncs: {} up, {} down",
        bytes(s.bytes_up_total),
        bytes(s.bytes_down_total)
    );
    let lease = &s.lease;
    if lease.locked {
        out!("locked: this device has been out of touch too long; sign in again");
    } else if let (Some(locks), Some(wipes)) = (lease.locks_at_ms, lease.wipes_at_ms) {
        out!(
            "offline lease: locks at {} and wipes itself at {} unless it reaches the server",
            format_ms(locks),
            format_ms(wipes)
        );
    }
    for r in &s.refused {
        out!(
            "refused by the server: {} ({}): {}",
            r.doc_id,
            r.code,
            r.reason
        );
    }
    out!(
        "store size: {} on disk, an {} reserve for a full disk included; records {}",
        bytes(s.store_bytes),
        bytes(casenote_protocol::limits::DEVICE_DISK_HEADROOM_BYTES as u64),
        bytes(s.records_bytes)
    );
    Ok(())
}
