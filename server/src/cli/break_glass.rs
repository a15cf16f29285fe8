//! `casenote-server admin break-glass ...`: the IG lead's view of break-glass grants
//! ([`crate::break_glass`]) from the command line, on a stopped store or through the admin API:
//! list the grants not yet reviewed or still in force, with who, which section, the reason
//! category and text, and when it ends; mark one reviewed.

use crate::admin::act::Act;
use crate::break_glass::Record;
use crate::uk_time;
use clap::Subcommand;
use std::fmt::Write;

#[derive(Subcommand)]
pub(super) enum BreakGlassCommand {
    /// List the grants not yet reviewed or still in force, the oldest first, with their reasons.
    List {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Mark a grant reviewed (audited); once it has also lapsed it leaves the list.
    Review {
        /// The grant's id (see `admin break-glass list`).
        #[arg(long)]
        id: uuid::Uuid,
    },
}

/// The act a `break-glass` subcommand names, and whether to print JSON.
pub(super) fn act(cmd: BreakGlassCommand) -> (Act, bool) {
    match cmd {
        BreakGlassCommand::List { json } => (Act::BreakGlassList, json),
        BreakGlassCommand::Review { id } => (Act::BreakGlassReview { id }, false),
    }
}

fn state(r: &Record) -> String {
    let force = if r.lapsed { "ended" } else { "in force" };
    match &r.reviewed {
        Some(v) => format!("{force}, reviewed {}", uk_time::when(v.at_ms)),
        None => format!("{force}, NOT REVIEWED"),
    }
}

pub(super) fn render_list(records: &[Record], json: bool) -> String {
    if json {
        return serde_json::to_string_pretty(records).unwrap_or_default();
    }
    if records.is_empty() {
        return "no break-glass grants to review".into();
    }
    let mut out = String::new();
    for r in records {
        let _ = writeln!(
            out,
            "{}  {} {} of case {}  staff {} (device {})\n  {}: {}\n  granted {}, until {}; {}",
            r.id,
            r.kind,
            r.doc_id,
            r.case_id,
            r.staff_id,
            r.device_id,
            r.category.as_str(),
            r.reason,
            uk_time::when(r.granted_ms),
            uk_time::when(r.expires_ms),
            state(r)
        );
    }
    out.trim_end().to_string()
}

pub(super) fn render_reviewed(r: &Record) -> String {
    format!("break-glass grant {} reviewed: {}", r.id, state(r))
}
