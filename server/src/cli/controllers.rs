//! `casenote-server admin agreement ...`, `admin case object|object-withdraw|override|override-end`
//! and `admin team move`: controllers, data-sharing agreements, objections to sharing and
//! restructures ([`crate::controllers`], [`crate::admin::sharing`],
//! [`crate::admin::restructure`]) from the command line, on a stopped store or through the admin
//! API, and how their outcomes print.

use crate::admin::act::Act;
use crate::admin::restructure::{Moved, Records};
use crate::admin::sharing::AgreementRow;
use crate::controllers::{Agreement, Objection, ObjectionReason, OverrideReason};
use casenote_protocol::CaseId;
use clap::Subcommand;
use std::fmt::Write;

#[derive(Subcommand)]
pub(super) enum AgreementCommand {
    /// Record a data-sharing agreement: staff of either organisation may then hold the other's
    /// documents of the cases their teams are on (devices are backfilled at their next sync).
    Add {
        /// One organisation's exact name.
        #[arg(long)]
        between: String,
        /// The other organisation's exact name.
        #[arg(long)]
        and: String,
        /// What the sharing is for (kept with the agreement; never audited).
        #[arg(long)]
        purpose: Option<String>,
    },
    /// End the agreement between two organisations: their staff's devices delete the other's
    /// documents at their next sync.
    End {
        #[arg(long)]
        between: String,
        #[arg(long)]
        and: String,
    },
    /// List the agreements in force and the objections to sharing recorded.
    List {
        /// Print JSON instead of lines.
        #[arg(long)]
        json: bool,
    },
}

/// The case subcommands on objections to sharing (flattened into `admin case`).
#[derive(Subcommand)]
pub(super) enum ObjectionCommand {
    /// Record the person's objection to sharing between controllers: each organisation's staff
    /// then hold only their own organisation's documents of the case.
    Object {
        #[arg(long)]
        case: CaseId,
        /// Who objected.
        #[arg(long, value_enum, default_value = "person")]
        reason_category: ObjectionReason,
    },
    /// Withdraw the objection (and any override of it).
    ObjectWithdraw {
        #[arg(long)]
        case: CaseId,
    },
    /// Override the objection, with its reason: sharing goes on under the agreements.
    Override {
        #[arg(long)]
        case: CaseId,
        #[arg(long, value_enum)]
        reason_category: OverrideReason,
    },
    /// End the override: the objection stands again.
    OverrideEnd {
        #[arg(long)]
        case: CaseId,
    },
}

/// The team subcommand on restructures (flattened into `admin team`).
#[derive(Subcommand)]
pub(super) enum TeamMoveCommand {
    /// Move a team, with its staff, to another organisation; what happens to the controller of
    /// its records is --records (see ARCHITECTURE.md, admin/restructure.rs).
    Move {
        /// Team id or exact name.
        #[arg(long)]
        team: String,
        /// The organisation's exact name.
        #[arg(long)]
        to_org: String,
        /// `stay`: every document keeps its controller; `move`: the members' documents of the
        /// team's cases go to the new organisation.
        #[arg(long, value_enum)]
        records: Records,
        /// Take members who are also on other teams of the old organisation off those teams
        /// (without it such a move is refused, naming them).
        #[arg(long)]
        leave_other_teams: bool,
    },
}

/// The act an `agreement` subcommand names, and whether to print JSON.
pub(super) fn agreement_act(cmd: AgreementCommand) -> (Act, bool) {
    match cmd {
        AgreementCommand::Add {
            between,
            and,
            purpose,
        } => (
            Act::AgreementAdd {
                between,
                and,
                purpose,
            },
            false,
        ),
        AgreementCommand::End { between, and } => (Act::AgreementEnd { between, and }, false),
        AgreementCommand::List { json } => (Act::AgreementList, json),
    }
}

/// The act of an objection subcommand.
pub(super) fn objection_act(cmd: ObjectionCommand) -> Act {
    match cmd {
        ObjectionCommand::Object {
            case,
            reason_category,
        } => Act::CaseObject {
            case,
            reason_category,
        },
        ObjectionCommand::ObjectWithdraw { case } => Act::CaseObjectWithdraw { case },
        ObjectionCommand::Override {
            case,
            reason_category,
        } => Act::CaseOverride {
            case,
            reason_category,
        },
        ObjectionCommand::OverrideEnd { case } => Act::CaseOverrideEnd { case },
    }
}

/// The act of `team move`.
pub(super) fn team_move_act(cmd: TeamMoveCommand) -> Act {
    let TeamMoveCommand::Move {
        team,
        to_org,
        records,
        leave_other_teams,
    } = cmd;
    Act::TeamMove {
        team,
        to_org,
        records,
        leave_other_teams,
    }
}

pub(super) fn render_agreement(a: &Agreement, what: &str) -> String {
    format!(
        "agreement {} between {} and {} {what}",
        a.agreement_id, a.orgs[0], a.orgs[1]
    )
}

pub(super) fn render_list(rows: &[AgreementRow], objections: &[Objection], json: bool) -> String {
    if json {
        let v = serde_json::json!({"agreements": rows, "objections": objections});
        return serde_json::to_string_pretty(&v).unwrap_or_default();
    }
    let mut out = String::new();
    if rows.is_empty() {
        out.push_str("no agreements in force\n");
    }
    for r in rows {
        let [a, b] = &r.org_names;
        let _ = writeln!(out, "{}  {a} <-> {b}", r.agreement.agreement_id);
    }
    for o in objections {
        let state = match &o.overridden {
            Some(ov) => format!("overridden ({})", enum_name(&ov.reason_category)),
            None => "stands".into(),
        };
        let _ = writeln!(
            out,
            "objection on case {} ({}): {state}",
            o.case_id,
            enum_name(&o.reason_category)
        );
    }
    out.trim_end().to_string()
}

pub(super) fn render_objection(case_id: &CaseId, objection: &Option<Objection>) -> String {
    match objection {
        None => format!("case {case_id}: no objection to sharing"),
        Some(o) => match &o.overridden {
            None => format!("case {case_id}: objection to sharing stands"),
            Some(ov) => format!(
                "case {case_id}: objection to sharing overridden ({})",
                enum_name(&ov.reason_category)
            ),
        },
    }
}

pub(super) fn render_moved(m: &Moved) -> String {
    format!(
        "team {} moved from {} to {} with {} staff (records {}: {} documents changed controller; \
         {} other team memberships ended)",
        m.team.team_id,
        m.from_org,
        m.team.org_id,
        m.staff.len(),
        enum_name(&m.records),
        m.docs_moved,
        m.left_teams
    )
}

/// A unit enum's snake_case name as stored.
fn enum_name<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}
