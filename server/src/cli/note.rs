//! `casenote-server admin note misfiled`: a note filed on the wrong person moved to the right
//! one ([`crate::misfile`]), on a stopped store or through the admin API; and
//! `casenote-server compact`, which rewrites a stopped store's files so that nothing erased
//! survives in them.
//!
//! On a stopped sled store the command reopens the store after the act, which rewrites its
//! files before it returns; through the admin API the server's sled files are rewritten at its
//! next start (the rows are erased at once, never served again), and the answer says so.

use super::admin::Target;
use super::StoreArgs;
use crate::admin::act::{Act, Outcome};
use crate::misfile::Misfiled;
use crate::store::Compaction;
use casenote_protocol::{CaseId, DocId};
use clap::Subcommand;

#[derive(Subcommand)]
pub(super) enum NoteCommand {
    /// Move a filed note from the wrong person's record to the right one: it leaves the wrong
    /// record on the server and on every device (at its next sync), a stub there says who moved
    /// it, when and why, and the note, with its author, is re-filed on --to-case.
    Misfiled {
        /// The note's id.
        #[arg(long)]
        note: DocId,
        /// The right person's case.
        #[arg(long)]
        to_case: CaseId,
        /// Why: wrong-person, duplicate-record, records-merged or other.
        #[arg(long)]
        reason_category: String,
        /// A few words shown on the stub, to the staff of the wrong person's record: never
        /// name the right person.
        #[arg(long)]
        reason: Option<String>,
    },
}

/// The act a `note` subcommand names.
pub(super) fn act(cmd: NoteCommand) -> Act {
    match cmd {
        NoteCommand::Misfiled {
            note,
            to_case,
            reason_category,
            reason,
        } => Act::NoteMisfiled {
            note,
            to_case,
            reason_category,
            reason,
        },
    }
}

/// After an act that erased something on a stopped store: opening it again rewrites a sled
/// store's files; then the store says what is left (PostgreSQL compacts at once).
/// (A misfiled note, a disposed record.)
pub(super) fn compact_after(target: &Target, outcome: Outcome) -> anyhow::Result<Outcome> {
    let erased = match &outcome {
        Outcome::NoteMisfiled(_) => true,
        Outcome::Retention(s) => s.compaction.is_some(),
        _ => false,
    };
    if !erased || target.server.is_some() {
        return Ok(outcome);
    }
    let args = StoreArgs {
        data: target.data.clone(),
        postgres: target.postgres.clone(),
    };
    let compaction = compact(&args)?;
    Ok(match outcome {
        Outcome::NoteMisfiled(done) => Outcome::NoteMisfiled(Misfiled { compaction, ..done }),
        Outcome::Retention(status) => Outcome::Retention(crate::retention::Status {
            compaction: Some(compaction),
            ..status
        }),
        other => other,
    })
}

/// `casenote-server compact`: opens the stopped store (a sled store rewrites its files if an
/// erasure left that due) and compacts it.
pub(super) fn compact(args: &StoreArgs) -> anyhow::Result<Compaction> {
    let store = args.open_existing()?.store();
    Ok(store.compact()?)
}

pub(super) fn render(m: &Misfiled) -> String {
    format!(
        "note {} moved from case {} to case {} as note {} ({} changes); stub {} left on case {}\n\
         store files: {}",
        m.note_id,
        m.from_case,
        m.to_case,
        m.refiled_id,
        m.changes,
        m.stub_id,
        m.from_case,
        m.compaction.detail
    )
}
