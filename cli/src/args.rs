//! The command line: every command, flag and argument, each with its help line (`help_expected`
//! makes a debug build refuse to start if one lacks it), and the exit codes in `--help`.

use crate::exit::EXIT_CODES;
use casenote_protocol::record::NoteKind;
use casenote_protocol::wire::BreakGlassCategory;
use casenote_protocol::{limits, CaseId, DocId};
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "casenote",
    version,
    about = "casenote field client: case notes that work offline and sync",
    after_help = EXIT_CODES,
    help_expected = true
)]
pub struct Cli {
    /// The device store directory: `login` makes it; every other command needs it to exist.
    #[arg(long, env = "CASENOTE_STORE", global = true)]
    pub store: Option<PathBuf>,
    /// The file holding the store's key (`login` makes it, mode 0600, for a new store).
    /// Default: store-ID.key under $XDG_CONFIG_HOME/casenote/keys, named by the store's own id.
    #[arg(long, env = "CASENOTE_KEY_FILE", global = true)]
    pub key_file: Option<PathBuf>,
    /// Derive the store's key from a passphrase (Argon2id) instead of a key file. The passphrase
    /// comes from CASENOTE_PASSPHRASE, or a prompt when there is a terminal.
    #[arg(long, global = true, conflicts_with = "key_file")]
    pub passphrase: bool,
    /// How long to wait for the store while another casenote uses it (a `sync --watch` that is
    /// syncing, say) before saying it is busy (exit 6).
    #[arg(long, global = true, value_name = "DURATION", default_value_t = default_wait())]
    pub wait: humantime::Duration,
    #[command(subcommand)]
    pub cmd: Cmd,
}

fn default_wait() -> humantime::Duration {
    Duration::from_millis(limits::DEVICE_STORE_BUSY_WAIT_MS).into()
}

#[derive(Subcommand)]
pub enum Cmd {
    /// Sign this store in to a server with a device token (makes the store if it is new).
    Login {
        /// The server's address: https://HOST[:PORT] (http://127.0.0.1:PORT on this machine).
        #[arg(long, value_name = "URL", value_parser = parse_server)]
        server: String,
        /// Trust only the CA certificate(s) in this PEM file for the server (a trust's internal
        /// CA) instead of the built-in public roots. The store keeps them for later syncs.
        #[arg(long, value_name = "FILE")]
        ca_file: Option<PathBuf>,
        /// Allow plain http:// to a server that is not on this machine: the token and case notes
        /// then cross the network unencrypted. Only on a network you trust.
        #[arg(long)]
        allow_insecure_http: bool,
        /// The device token an administrator issued. On the command line other users can see
        /// it in the process list: prefer CASENOTE_TOKEN, or `--token -` to read it from
        /// standard input. With neither, casenote asks for it on a terminal.
        #[arg(long, env = "CASENOTE_TOKEN", hide_env_values = true)]
        token: Option<String>,
    },
    /// Who this store is signed in as.
    Whoami {
        /// Print JSON instead of text.
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
    /// Mental capacity, Care Act needs and carer's, and early help assessments.
    #[command(subcommand)]
    Assessment(AssessmentCmd),
    /// Hospital discharges: pathway, dates, equipment, the day-one welfare check.
    #[command(subcommand)]
    Discharge(DischargeCmd),
    /// Referrals and their triage.
    #[command(subcommand)]
    Referral(ReferralCmd),
    /// Safeguarding enquiries (restricted: to the teams of whoever opens one, or to --team).
    #[command(subcommand)]
    Safeguarding(SafeguardingCmd),
    /// Restricted sections: only the teams on their access list read them.
    #[command(subcommand)]
    Restricted(RestrictedCmd),
    /// Ask for urgent access to a sealed section (online only; audited, and reviewed by the IG
    /// lead). Access ends after 4 hours; the section leaves this device at the next sync after.
    BreakGlass {
        /// The sealed section (`show` lists it with its id).
        #[arg(long)]
        doc: DocId,
        /// Why: risk_to_life, safeguarding_emergency, urgent_care or out_of_hours.
        #[arg(long, value_parser = parse_category)]
        reason_category: BreakGlassCategory,
        /// Why it cannot wait, in a few sentences (the IG lead reads it).
        #[arg(long)]
        reason: String,
    },
    /// A person's legal status: MHA section, DoLS, LPS, lasting power of attorney, court order.
    #[command(subcommand)]
    Legal(LegalCmd),
    /// The people around the person: carer, next of kin, attorney, deputy, advocate, nearest
    /// relative.
    #[command(subcommand)]
    Contact(ContactCmd),
    /// Add someone to the team around the person (org, team, role, worker); prints the entry id.
    Team {
        /// The case.
        case_id: CaseId,
        /// Their organisation.
        #[arg(long)]
        org: String,
        /// Their team.
        #[arg(long)]
        team: String,
        /// Their role, e.g. "district nurse".
        #[arg(long)]
        role: String,
        /// Their name, if one worker is named.
        #[arg(long, default_value = "")]
        worker: String,
    },
    /// Settle a conflicted field with one value; the resolution is recorded.
    Resolve {
        /// The case.
        case_id: CaseId,
        /// The field as `conflicts` prints it: discharge_date, pathway, alerts.ID.status,
        /// actions.ID.status... (dashes for underscores are read the same).
        #[arg(long)]
        field: String,
        /// The value that settles it.
        #[arg(long)]
        value: String,
        /// The document holding the field, when several have a conflict at that path.
        #[arg(long)]
        doc: Option<DocId>,
    },
    /// Show a whole case as a page to read before a visit: alerts first, then the person,
    /// discharge, team, plan and notes.
    Show {
        /// The case.
        case_id: CaseId,
        /// Print the whole case as JSON instead (record, plans, notes, restricted sections,
        /// conflicts, people).
        #[arg(long)]
        json: bool,
    },
    /// Fields of a case written concurrently, with every value and who wrote it.
    Conflicts {
        /// The case.
        case_id: CaseId,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Who changed a document and when: staff, role, device, server time (from the server).
    History {
        /// The document (a case id is its case document's id).
        doc_id: DocId,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Send local edits and fetch what changed.
    Sync {
        /// Print the sync's report as JSON (and no progress).
        #[arg(long)]
        json: bool,
        /// Keep syncing: when the server's live channel says something changed, when a command
        /// beside it edits the store, on a timer, and with exponential backoff and jitter after
        /// failures (never a tight loop). One JSON line per sync. Other commands work meanwhile.
        #[arg(long)]
        watch: bool,
        /// With --watch: stop after this long (e.g. 30s, 8h); default: until interrupted.
        #[arg(long = "for", value_parser = humantime::parse_duration, requires = "watch")]
        for_: Option<Duration>,
    },
    /// Unsynced changes, refusals, last sync, server, store size, offline lease.
    Status {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
pub enum CaseCmd {
    /// Open a new case; prints its id.
    New {
        /// The person's name.
        #[arg(long)]
        name: String,
        /// Their NHS number.
        #[arg(long)]
        nhs_number: Option<String>,
        /// Date of birth, YYYY-MM-DD.
        #[arg(long)]
        dob: Option<String>,
        /// Their address.
        #[arg(long)]
        address: Option<String>,
    },
    /// List the cases on this device.
    List {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
pub enum NoteCmd {
    /// Add a draft note to a case; prints the note id.
    Add {
        /// The case.
        case_id: CaseId,
        /// The note's text.
        #[arg(long)]
        text: String,
        /// What kind of contact: visit, phone, mdt or case-note.
        #[arg(long, default_value = "case-note", value_parser = parse_kind)]
        kind: NoteKind,
        /// When it happened, as the worker states it: RFC 3339 (2026-11-23T09:30:00Z) or a time
        /// ago (30h, 90min). Defaults to now.
        #[arg(long, value_parser = parse_when)]
        occurred_at: Option<i64>,
    },
    /// Replace a draft note's text (a filed note refuses).
    Edit {
        /// The draft note.
        note_id: DocId,
        /// The note's new text.
        #[arg(long)]
        text: String,
    },
    /// File a draft note; it never changes again.
    File {
        /// The draft note.
        note_id: DocId,
        /// Why the note is filed more than 24 hours after it happened (required then).
        #[arg(long)]
        late_entry_reason: Option<String>,
    },
    /// Amend a filed note with a new note; prints the amendment's id.
    Amend {
        /// The filed note to amend.
        note_id: DocId,
        /// Why it is amended, e.g. "wrong date".
        #[arg(long)]
        reason: String,
        /// The amendment's text.
        #[arg(long)]
        text: String,
        /// A correction rather than an addendum.
        #[arg(long)]
        correction: bool,
    },
}

#[derive(Subcommand)]
pub enum PlanCmd {
    /// Append to, or splice, the plan narrative.
    #[command(flatten)]
    Narrative(TextCmd),
    /// Record that the plan was agreed with the person (kept with the plan's state; any later
    /// edit shows as "changed since agreed").
    Agree {
        /// The case.
        case_id: CaseId,
        /// Who it was agreed with, e.g. "Peggy and her son".
        #[arg(long)]
        with: String,
    },
    /// Add a goal, in the person's words; prints its id.
    Goal {
        /// The case.
        case_id: CaseId,
        /// The goal, in the person's words.
        #[arg(long)]
        text: String,
    },
    /// Add an action (what, who, by when); prints its id.
    Action {
        /// The case.
        case_id: CaseId,
        /// What is to be done.
        #[arg(long)]
        what: String,
        /// Who does it.
        #[arg(long, default_value = "")]
        who: String,
        /// By when, e.g. 2026-12-15.
        #[arg(long, default_value = "")]
        by: String,
    },
    /// Set an action's (or with --goal, a goal's) status: open, in-progress, done, cancelled.
    Status {
        /// The case.
        case_id: CaseId,
        /// The action's (or goal's) id.
        id: String,
        /// open, in-progress, done or cancelled.
        #[arg(long)]
        status: String,
        /// The id is a goal's.
        #[arg(long)]
        goal: bool,
    },
    /// Set a plan field: discharge_date or pathway.
    Set {
        /// The case.
        case_id: CaseId,
        /// discharge_date or pathway (discharge-date is read as discharge_date).
        #[arg(long)]
        field: String,
        /// The field's new value.
        #[arg(long)]
        value: String,
    },
}

/// Setting one field of a statutory record by its path.
#[derive(clap::Args)]
pub struct SetArgs {
    /// The document.
    pub id: DocId,
    /// The field's path as `show --json` has it, e.g. outcome, tests.retain.result,
    /// day_one_welfare_check.due (dashes are read as underscores).
    #[arg(long)]
    pub field: String,
    /// The new value (a text field is replaced with it).
    #[arg(long)]
    pub value: String,
}

#[derive(Subcommand)]
pub enum AssessmentCmd {
    /// Start an assessment on a case; prints its id.
    New {
        /// The case.
        case_id: CaseId,
        /// mca, needs (Care Act s9), carers (s10) or early_help.
        #[arg(long = "type")]
        ty: String,
    },
    /// Set one field of an assessment in progress.
    Set(SetArgs),
    /// Record one functional test of a capacity assessment.
    Test {
        /// The assessment.
        id: DocId,
        /// understand, retain, use_or_weigh or communicate.
        test: String,
        /// can or cannot.
        #[arg(long)]
        result: String,
        /// The evidence for the result.
        #[arg(long, default_value = "")]
        evidence: String,
    },
    /// Add someone consulted about a best-interests decision; prints the entry id.
    Consult {
        /// The assessment.
        id: DocId,
        /// Their name.
        #[arg(long)]
        name: String,
        /// Their relationship to the person.
        #[arg(long, default_value = "")]
        relationship: String,
        /// Their view.
        #[arg(long, default_value = "")]
        view: String,
    },
    /// Complete an assessment; it never changes again.
    Complete {
        /// The assessment.
        id: DocId,
    },
    /// Amend a completed assessment with a new one that points at it; prints its id.
    Amend {
        /// The completed assessment.
        id: DocId,
        /// Why it is amended.
        #[arg(long)]
        reason: String,
        /// A correction rather than an addendum.
        #[arg(long)]
        correction: bool,
    },
}

#[derive(Subcommand)]
pub enum DischargeCmd {
    /// Open a discharge for a hospital episode; prints its id.
    New {
        /// The case.
        case_id: CaseId,
    },
    /// Set a discharge field: pathway (0-3), medically_optimised_date, expected_discharge_date,
    /// package_start, day_one_welfare_check.due|done_by|done_at|outcome.
    Set(SetArgs),
    /// Add a piece of equipment; prints the entry id.
    Equipment {
        /// The discharge.
        id: DocId,
        /// What it is.
        #[arg(long)]
        item: String,
        /// needed, ordered, delivered or not_needed.
        #[arg(long, default_value = "needed")]
        status: String,
    },
}

#[derive(Subcommand)]
pub enum ReferralCmd {
    /// Record a referral on a case, pending triage; prints its id.
    New {
        /// The case.
        case_id: CaseId,
        /// gp, hospital, self, family_or_carer, police, school or other.
        #[arg(long)]
        source: String,
        /// routine, urgent or emergency.
        #[arg(long)]
        urgency: String,
        /// Why the person was referred.
        #[arg(long)]
        reason: String,
    },
    /// Set a referral field: source, urgency or reason.
    Set(SetArgs),
    /// Record the triage decision: accepted, signposted, no_further_action or pending.
    Triage {
        /// The referral.
        id: DocId,
        /// The decision.
        #[arg(long)]
        decision: String,
    },
}

/// Who may read a new restricted section, and whether others on the case are told of it.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct AccessArgs {
    /// A team on the section's access list (its id, or the name of one of your teams); repeat
    /// for more. Each must be on the case, and one of yours among them. Your teams if left out.
    #[arg(long = "team")]
    pub teams: Vec<String>,
    /// Sealed: staff on the case who are not on the list see that the section exists and whom
    /// to ask, never its content. Without it the section is hidden from them.
    #[arg(long)]
    pub sealed: bool,
}

#[derive(Subcommand)]
pub enum RestrictedCmd {
    /// Create a restricted section on a case; prints its id.
    New {
        /// The case.
        case_id: CaseId,
        /// Its title.
        #[arg(long)]
        title: String,
        /// Its text.
        #[arg(long, default_value = "")]
        text: String,
        #[command(flatten)]
        access: AccessArgs,
    },
}

#[derive(Subcommand)]
pub enum SafeguardingCmd {
    /// Open a safeguarding enquiry with its concern; prints its id.
    New {
        /// The case.
        case_id: CaseId,
        /// The concern raised.
        #[arg(long)]
        concern: String,
        #[command(flatten)]
        access: AccessArgs,
    },
    /// Set a field: s42_decision, s42_reason, desired_outcomes, outcomes_met, enquiry,
    /// alleged_source_of_harm.relationship|description, protection_plan.
    Set(SetArgs),
}

#[derive(Subcommand)]
pub enum LegalCmd {
    /// Add a legal status; prints its id.
    Add {
        /// The case.
        case_id: CaseId,
        /// mha_section, dols, lps, lpa or court_order.
        #[arg(long)]
        kind: String,
        /// For an MHA section its number (2, 3, 37...); for a court order what it is.
        #[arg(long)]
        detail: Option<String>,
        /// For an LPA: property_and_financial_affairs or health_and_welfare.
        #[arg(long)]
        scope: Option<String>,
        /// From, YYYY-MM-DD.
        #[arg(long)]
        start: Option<String>,
        /// Until, YYYY-MM-DD.
        #[arg(long)]
        end: Option<String>,
    },
    /// End a legal status on a date.
    End {
        /// The case.
        case_id: CaseId,
        /// The legal status's id.
        id: String,
        /// The day it ended, YYYY-MM-DD.
        #[arg(long)]
        date: String,
    },
}

#[derive(Subcommand)]
pub enum ContactCmd {
    /// Add a contact; prints its id.
    Add {
        /// The case.
        case_id: CaseId,
        /// carer, next_of_kin, attorney, deputy, advocate or nearest_relative.
        #[arg(long)]
        role: String,
        /// Their name.
        #[arg(long)]
        name: String,
        /// Their relationship to the person.
        #[arg(long)]
        relationship: Option<String>,
        /// Their phone number.
        #[arg(long)]
        phone: Option<String>,
        /// For an attorney or deputy: property_and_financial_affairs, health_and_welfare or both.
        #[arg(long)]
        may_decide: Option<String>,
        /// Anything else to know.
        #[arg(long)]
        notes: Option<String>,
    },
}

#[derive(Subcommand)]
pub enum AlertCmd {
    /// Raise an alert (e.g. "visit in pairs"); prints its id.
    Add {
        /// The case.
        case_id: CaseId,
        /// What everyone visiting must know.
        #[arg(long)]
        text: String,
    },
    /// Set an alert's status: active or resolved.
    Status {
        /// The case.
        case_id: CaseId,
        /// The alert's id.
        alert_id: String,
        /// active or resolved.
        #[arg(long)]
        status: String,
    },
}

#[derive(Subcommand)]
pub enum TextCmd {
    /// Append text.
    Append {
        /// The case.
        case_id: CaseId,
        /// The text to append.
        #[arg(long)]
        text: String,
    },
    /// Delete characters at a position and insert text there.
    Splice {
        /// The case.
        case_id: CaseId,
        /// Where, in characters (Unicode code points) from the start.
        #[arg(long)]
        pos: usize,
        /// How many characters to delete there.
        #[arg(long)]
        delete: usize,
        /// The text to insert there.
        #[arg(long, default_value = "")]
        text: String,
    },
}

fn parse_category(s: &str) -> Result<BreakGlassCategory, String> {
    s.parse()
}

fn parse_kind(s: &str) -> Result<NoteKind, String> {
    s.parse()
}

/// A server address the device can talk to (`check_server_url`), or a usage error saying how to
/// write it.
fn parse_server(s: &str) -> Result<String, String> {
    casenote_client_core::transport::check_server_url(s)
        .map(|()| s.to_string())
        .map_err(|e| e.to_string())
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
