//! `casenote-server admin retention ...`: a record's retention class, its closure and reopening,
//! legal holds, and disposal in two steps ([`crate::retention`]), on a stopped store or through
//! the admin API.

use crate::admin::act::Act;
use crate::retention::{Class, HoldReason, Listed, State, Status};
use crate::uk_time;
use casenote_protocol::CaseId;
use clap::Subcommand;
use std::fmt::Write;

#[derive(Subcommand)]
pub(super) enum RetentionCommand {
    /// Set a record's retention class: adult_social_care and health are kept 8 years after the
    /// last contact, mental_health 20 years, children to the 25th birthday (needs --born).
    Set {
        #[arg(long)]
        case: CaseId,
        #[arg(long, value_enum)]
        class: Class,
        /// The person's date of birth (YYYY-MM-DD), for the children class.
        #[arg(long)]
        born: Option<String>,
    },
    /// Close a case on its day of last contact: the retention clock starts.
    Close {
        #[arg(long)]
        case: CaseId,
        /// The day of last contact (YYYY-MM-DD, UK); today if left out.
        #[arg(long)]
        last_contact: Option<String>,
    },
    /// Reopen a closed case: the clock stops, and an approved disposal lapses.
    Reopen {
        #[arg(long)]
        case: CaseId,
    },
    /// Place a legal hold on a record: it cannot be approved for disposal or disposed of.
    Hold {
        #[arg(long)]
        case: CaseId,
        #[arg(long, value_enum)]
        reason: HoldReason,
    },
    /// Release a legal hold (its id from `retention show`).
    Release {
        #[arg(long)]
        case: CaseId,
        #[arg(long)]
        hold: uuid::Uuid,
    },
    /// Show a record's retention: class, last contact, due day, holds, approval, disposal.
    Show {
        #[arg(long)]
        case: CaseId,
        #[arg(long)]
        json: bool,
    },
    /// List the classified records, the soonest due first (--due: only those past their day).
    List {
        #[arg(long)]
        due: bool,
        #[arg(long)]
        json: bool,
    },
    /// Approve the disposal of a due record that is not held.
    Approve {
        #[arg(long)]
        case: CaseId,
    },
    /// Dispose of an approved record: every device deletes it at its next sync; a stub is left.
    Dispose {
        #[arg(long)]
        case: CaseId,
    },
}

/// The act a `retention` subcommand names, and whether to print JSON.
pub(super) fn act(cmd: RetentionCommand) -> (Act, bool) {
    use RetentionCommand as C;
    match cmd {
        C::Set { case, class, born } => (Act::RetentionSet { case, class, born }, false),
        C::Close { case, last_contact } => (Act::RetentionClose { case, last_contact }, false),
        C::Reopen { case } => (Act::RetentionReopen { case }, false),
        C::Hold { case, reason } => (Act::RetentionHold { case, reason }, false),
        C::Release { case, hold } => (Act::RetentionRelease { case, hold }, false),
        C::Show { case, json } => (Act::RetentionShow { case }, json),
        C::List { due, json } => (Act::RetentionList { due }, json),
        C::Approve { case } => (Act::RetentionApprove { case }, false),
        C::Dispose { case } => (Act::RetentionDispose { case }, false),
    }
}

fn state(s: &Status) -> String {
    let due = s.due.as_deref().unwrap_or("-");
    match s.state {
        State::Open => "open (the clock starts when it closes)".into(),
        State::Retained => format!("kept until {due}"),
        State::Due => format!("due for disposal since {due}"),
        State::Held => format!("under legal hold (due {due})"),
        State::Approved => format!("disposal approved (due {due})"),
        State::Disposed => "disposed of".into(),
    }
}

/// One record's retention, for people (or JSON).
pub(super) fn render_one(s: &Status, json: bool) -> String {
    if json {
        return serde_json::to_string_pretty(s).unwrap_or_default();
    }
    let r = &s.retention;
    let mut out = format!("case {}: {:?}, {}", r.case_id, r.class, state(s));
    if let Some(last) = &r.last_contact {
        let _ = write!(out, "\n  last contact {last}");
    }
    for h in &r.holds {
        let _ = write!(
            out,
            "\n  legal hold {} ({:?}) placed {}",
            h.hold_id,
            h.reason,
            uk_time::when(h.placed_ms)
        );
    }
    if let Some(a) = &r.approval {
        let _ = write!(
            out,
            "\n  disposal approved {}",
            uk_time::when(a.approved_ms)
        );
    }
    if let Some(d) = &r.disposed {
        let _ = write!(
            out,
            "\n  disposed of {}: {} document(s)",
            uk_time::when(d.disposed_ms),
            d.documents
        );
    }
    if let Some(c) = &s.compaction {
        let _ = write!(out, "\n  store files: {}", c.detail);
    }
    out
}

/// A list of records' retention, for people (or JSON): the classified ones, then how many cases
/// have no class.
pub(super) fn render_list(listed: &Listed, json: bool) -> String {
    if json {
        return serde_json::to_string_pretty(listed).unwrap_or_default();
    }
    let mut lines: Vec<String> = listed.cases.iter().map(|s| render_one(s, false)).collect();
    if lines.is_empty() {
        lines.push("no classified records".into());
    }
    if !listed.unclassified.is_empty() {
        let ids: Vec<String> = listed.unclassified.iter().map(|c| c.to_string()).collect();
        lines.push(format!(
            "{} case(s) have no retention class (set one with `admin retention set`): {}",
            ids.len(),
            ids.join(", ")
        ));
    }
    lines.join("\n")
}
