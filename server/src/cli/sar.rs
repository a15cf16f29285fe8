//! `casenote-server admin sar ...`: subject access requests ([`crate::subject_access`]) from the
//! command line, on a stopped store or through the admin API: open one, list the open ones with
//! their due dates (overdue flagged), fulfil one (the person's record written as `record.json`
//! and `record.html` into `--out`, as `export` does).

use crate::admin::act::Act;
use crate::subject_access::{Fulfilled, Listed, Request};
use crate::uk_time;
use casenote_protocol::CaseId;
use clap::Subcommand;
use std::fmt::Write;
use std::path::PathBuf;

#[derive(Subcommand)]
pub(super) enum SarCommand {
    /// Open a subject access request for a person's record; prints its id and due date.
    Open {
        /// The person's case.
        #[arg(long)]
        case: CaseId,
        /// The day the request was received (YYYY-MM-DD, UK); today if left out. The answer is
        /// due one calendar month later.
        #[arg(long)]
        received: Option<String>,
    },
    /// List the open requests, the soonest due first, overdue ones flagged.
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Answer a request: write the person's whole record into --out, and close the request.
    Fulfil {
        /// The request's id (see `admin sar list`).
        #[arg(long)]
        request: uuid::Uuid,
        /// The directory to write record.json and record.html into (created if missing).
        #[arg(long)]
        out: PathBuf,
    },
}

/// The act a `sar` subcommand names, and whether to print JSON.
pub(super) fn act(cmd: SarCommand) -> (Act, bool) {
    match cmd {
        SarCommand::Open { case, received } => (Act::SarOpen { case, received }, false),
        SarCommand::List { json } => (Act::SarList, json),
        SarCommand::Fulfil { request, .. } => (Act::SarFulfil { request }, false),
    }
}

pub(super) fn render_opened(r: &Request) -> String {
    format!(
        "opened subject access request {} for case {}: received {}, due {}",
        r.request_id, r.case_id, r.received, r.due
    )
}

pub(super) fn render_list(list: &[Listed], json: bool) -> String {
    if json {
        return serde_json::to_string_pretty(list).unwrap_or_default();
    }
    if list.is_empty() {
        return "no open subject access requests".into();
    }
    let mut out = String::new();
    for l in list {
        let r = &l.request;
        let state = match (l.overdue, l.days_left) {
            (true, d) => format!("OVERDUE by {} day(s)", -d),
            (false, 0) => "due today".into(),
            (false, d) => format!("{d} day(s) left"),
        };
        let _ = writeln!(
            out,
            "{}  case {}  received {}  due {}  {state}",
            r.request_id, r.case_id, r.received, r.due
        );
    }
    out.trim_end().to_string()
}

pub(super) fn render_fulfilled(f: &Fulfilled, written: &str) -> String {
    format!(
        "fulfilled subject access request {} (due {}{}) at {}: {written}",
        f.request.request_id,
        f.request.due,
        if f.late { ", answered late" } else { "" },
        uk_time::when(f.fulfilled_at_ms)
    )
}
