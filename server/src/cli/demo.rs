//! `casenote-server demo`: loads the fictional borough of Castlebridge (../shared/DEMO.md) and
//! issues one device token per demo staff member.
//!
//! The records are real Automerge documents written with `casenote_protocol::record`, each
//! change authored by its staff member, and they are stored through [`sync::push`], the path
//! device pushes take, so they reach devices by ordinary sync and pass the same authorship checks:
//! the loader enrols one "demo loader" device per staff member (its token is thrown away) and
//! pushes each staff member's edits from that device, which the actors get bound to. Loading
//! twice does not duplicate anything: a second run only issues fresh tokens. All names, places and
//! numbers are invented; NHS numbers start 999 and pass the Modulus 11 check.

use crate::admin::{self, NewStaff};
use crate::auth::Principal;
use crate::model::{AuditKind, AuditRecord, By, Role, Staff};
use crate::store::{read, write, Store};
use crate::sync;
use anyhow::{bail, Context};
use automerge::transaction::Transactable;
use automerge::{ActorId, Author, AutoCommit, ObjType, ROOT};
use casenote_protocol::record::schema::Table;
use casenote_protocol::record::{
    self, field, statutory, Amends, Identity, NewNote, NoteAuthor, NoteKind, RecordError,
};
use casenote_protocol::wire::DocPush;
use casenote_protocol::{CaseId, DeviceId, DocId, DocKind, TeamId};
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;
use std::collections::HashMap;

const COUNCIL: &str = "Castlebridge Council";
const TRUST: &str = "Castlebridge & Vale NHS Foundation Trust";
const LTN: &str = "Locality Team North";
const HUB: &str = "Hospital Discharge Hub";
const EARLY_HELP: &str = "Children's Early Help";
const WARD7: &str = "Ward 7";
const NURSING: &str = "Community Nursing";
const CMHT: &str = "Community Mental Health Team";

const TEAMS: &[(&str, &str)] = &[
    (COUNCIL, LTN),
    (COUNCIL, HUB),
    (COUNCIL, EARLY_HELP),
    (TRUST, WARD7),
    (TRUST, NURSING),
    (TRUST, CMHT),
];

/// (name, role, org, team) of every demo staff member.
const STAFF: &[(&str, Role, &str, &str)] = &[
    ("Priya Shah", Role::SocialWorker, COUNCIL, LTN),
    ("Mark Ellison", Role::OccupationalTherapist, COUNCIL, LTN),
    ("Ruth Adebayo", Role::TeamManager, COUNCIL, LTN),
    ("Sam Kowalski", Role::SocialWorker, COUNCIL, HUB),
    ("Grace Liu", Role::Nurse, TRUST, WARD7),
    ("Owen Hughes", Role::Nurse, TRUST, NURSING),
    ("Dr Helen Marsh", Role::Psychiatrist, TRUST, CMHT),
    ("Joe Ward", Role::Amhp, TRUST, CMHT),
    (
        "Lena Fischer",
        Role::FamilySupportWorker,
        COUNCIL,
        EARLY_HELP,
    ),
];

/// The meta key under which the demo remembers that it was loaded.
const MARKER_KEY: &str = "demo";

/// One demo staff member's token, as printed.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DemoToken {
    pub staff: String,
    pub staff_id: String,
    pub team: String,
    pub role: String,
    pub org: String,
    pub token: String,
}

/// One demo person's case.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DemoCase {
    pub case_id: CaseId,
    pub label: String,
}

/// What `demo` prints.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DemoOutput {
    pub tokens: Vec<DemoToken>,
    pub cases: Vec<DemoCase>,
    /// A fresh admin token (`demo`), for `admin --server URL`.
    pub admin_token: String,
    /// True when this run loaded the records; false when they were already there.
    #[serde(skip)]
    pub loaded: bool,
}

#[derive(Serialize, Deserialize)]
struct Marker {
    staff: Vec<casenote_protocol::StaffId>,
    cases: Vec<DemoCase>,
}

/// Loads the demo into `store` (once) and issues a fresh token per demo staff member.
pub fn load(store: &dyn Store, now_ms: i64) -> anyhow::Result<DemoOutput> {
    let (marker, loaded) = match read(store, |t| t.meta(MARKER_KEY))? {
        Some(bytes) => (
            serde_json::from_slice::<Marker>(&bytes)
                .context("the stored demo marker is corrupt")?,
            false,
        ),
        None => (load_once(store, now_ms)?, true),
    };
    let mut tokens = Vec::new();
    for id in &marker.staff {
        tokens.push(token_for(store, *id, now_ms)?);
    }
    let admin_token = admin::issue_admin_token(store, By::Cli, "demo", now_ms)?.token;
    store.flush()?;
    Ok(DemoOutput {
        tokens,
        cases: marker.cases,
        admin_token,
        loaded,
    })
}

/// Loads the records, then, in one transaction, the marker that says so, a new access epoch (the
/// loader set case teams after creating the cases: every device is reconciled) and the audit
/// entry.
fn load_once(store: &dyn Store, now_ms: i64) -> anyhow::Result<Marker> {
    let before = store.last_seq()?;
    let marker = Loader::new(store, now_ms)?.load_all()?;
    let changes = store.last_seq()?.0 - before.0;
    let bytes = serde_json::to_vec(&marker)?;
    let record = AuditRecord::new(
        AuditKind::DemoLoad,
        now_ms,
        serde_json::json!({
            "cases": marker.cases.iter().map(|c| c.case_id).collect::<Vec<_>>(),
            "staff": marker.staff,
            "changes": changes,
        }),
    )
    .by(By::Cli);
    write(store, |t| {
        t.put_meta(MARKER_KEY, &bytes)?;
        t.bump_access_epoch()?;
        t.audit_append(record.clone())?;
        Ok(())
    })?;
    Ok(marker)
}

/// A fresh token for demo staff member `id`, with the names the table shows.
fn token_for(
    store: &dyn Store,
    id: casenote_protocol::StaffId,
    now_ms: i64,
) -> anyhow::Result<DemoToken> {
    let issued = admin::issue_token(store, By::Cli, id, "demo device", now_ms)?;
    let (staff, org, team) = read(store, |t| {
        let staff = t.staff(id)?;
        let org = match &staff {
            Some(s) => t.org(s.org_id)?.map(|o| o.name),
            None => None,
        };
        let team = match staff.as_ref().and_then(|s| s.teams.first()) {
            Some(team) => t.team(*team)?.map(|t| t.name),
            None => None,
        };
        Ok((staff, org, team))
    })?;
    let staff =
        staff.with_context(|| format!("demo staff member {id} is missing from the directory"))?;
    Ok(DemoToken {
        staff: staff.name,
        staff_id: staff.staff_id.to_string(),
        team: team.unwrap_or_default(),
        role: staff.role.to_string(),
        org: org.unwrap_or_default(),
        token: issued.token,
    })
}

/// The human rendering: a table of staff, team and token, and how to point a client at it.
pub fn render_human(out: &DemoOutput) -> String {
    let w_staff = out
        .tokens
        .iter()
        .map(|t| t.staff.len())
        .max()
        .unwrap_or(5)
        .max(5);
    let w_team = out
        .tokens
        .iter()
        .map(|t| t.team.len())
        .max()
        .unwrap_or(4)
        .max(4);
    let mut s = String::new();
    s.push_str(if out.loaded {
        "Loaded the Castlebridge demo (fictional people and numbers).\n\n"
    } else {
        "The Castlebridge demo was already loaded; issued fresh tokens.\n\n"
    });
    s.push_str(&format!(
        "{:w_staff$}  {:w_team$}  TOKEN\n",
        "STAFF", "TEAM"
    ));
    for t in &out.tokens {
        s.push_str(&format!(
            "{:w_staff$}  {:w_team$}  {}\n",
            t.staff, t.team, t.token
        ));
    }
    s.push_str("\nCases: ");
    s.push_str(
        &out.cases
            .iter()
            .map(|c| format!("{} {}", c.label, c.case_id))
            .collect::<Vec<_>>()
            .join(", "),
    );
    let example = out
        .tokens
        .first()
        .map(|t| t.token.as_str())
        .unwrap_or("TOKEN");
    s.push_str(&format!(
        "\n\nStart the server with `casenote-server serve --data DIR`, then point a client at it, e.g. as Priya:\n  \
         casenote --store ./priya login --server http://127.0.0.1:8080 --token {example}\n"
    ));
    s.push_str(&format!(
        "\nAdmin token (for `casenote-server admin --server http://127.0.0.1:8080`, as CASENOTE_ADMIN_TOKEN):\n  {}\n",
        out.admin_token
    ));
    s
}

/// The `--json` rendering: one object `{"tokens": [...], "cases": [...], "admin_token": "cna_..."}`.
pub fn render_json(out: &DemoOutput) -> String {
    serde_json::to_string(out).unwrap_or_else(|_| "{}".into())
}

/// One demo document being written.
struct Doc {
    id: DocId,
    case_id: CaseId,
    kind: DocKind,
    doc: AutoCommit,
}

struct Loader<'a> {
    store: &'a dyn Store,
    now_ms: i64,
    teams: HashMap<&'static str, TeamId>,
    staff: HashMap<&'static str, Staff>,
    /// The device each staff member's edits are pushed from.
    devices: HashMap<&'static str, DeviceId>,
}

const HOUR_MS: i64 = 60 * 60 * 1000;

impl<'a> Loader<'a> {
    fn new(store: &'a dyn Store, now_ms: i64) -> anyhow::Result<Self> {
        for org in [COUNCIL, TRUST] {
            if read(store, |t| admin::find_org(t, org))?.is_none() {
                admin::add_org(store, By::Cli, org, now_ms)?;
            }
        }
        // The council and the trust share the records of the people both serve (DEMO.md).
        let purpose = "integrated health and social care in Castlebridge";
        admin::sharing::agreement_add(store, By::Cli, (COUNCIL, TRUST), Some(purpose), now_ms)?;
        let mut teams = HashMap::new();
        for (org, team) in TEAMS {
            let found = read(store, |t| match admin::find_org(t, org)? {
                Some(o) => admin::find_team(t, o.org_id, team),
                None => Ok(None),
            })?;
            let t = match found {
                Some(t) => t,
                None => admin::add_team(store, By::Cli, org, team, now_ms)?,
            };
            teams.insert(*team, t.team_id);
        }
        let mut staff = HashMap::new();
        let mut devices = HashMap::new();
        for (name, role, org, team) in STAFF {
            let new = NewStaff {
                name,
                role: *role,
                org,
                teams: &[team.to_string()],
            };
            let s = admin::add_staff(store, By::Cli, new, now_ms)?;
            let loader = admin::issue_token(store, By::Cli, s.staff_id, "demo loader", now_ms)?;
            devices.insert(*name, loader.device.device_id);
            staff.insert(*name, s);
        }
        Ok(Loader {
            store,
            now_ms,
            teams,
            staff,
            devices,
        })
    }

    fn who(&self, name: &str) -> &Staff {
        &self.staff[name]
    }

    /// Makes `name` the actor and author of the next edits to `doc`.
    fn as_staff(&self, doc: &mut Doc, name: &str) {
        let id = self.who(name).staff_id;
        doc.doc.set_actor(ActorId::from(*id.as_bytes()));
        doc.doc
            .set_author(Some(Author::from(id.as_bytes().to_vec())));
    }

    fn new_doc(&self, name: &str, id: DocId, case_id: CaseId, kind: DocKind) -> Doc {
        let mut doc = Doc {
            id,
            case_id,
            kind,
            doc: AutoCommit::new(),
        };
        self.as_staff(&mut doc, name);
        doc
    }

    /// Pushes everything in `doc` as `name` through the sync path (what the server has already
    /// counts as a duplicate).
    fn push(&self, doc: &mut Doc, name: &str) -> anyhow::Result<()> {
        self.push_at(doc, name, self.now_ms)
    }

    /// [`Loader::push`] as the server would have received it at `received_ms`: a demo note
    /// reached the server when it was written up, as a device in coverage would have sent it.
    fn push_at(&self, doc: &mut Doc, name: &str, received_ms: i64) -> anyhow::Result<()> {
        let changes = doc
            .doc
            .get_changes(&[])
            .into_iter()
            .map(|mut c| ByteBuf::from(c.bytes().into_owned()))
            .collect();
        let staff = self.who(name).clone();
        let shares = read(self.store, |t| {
            crate::controllers::shares_of(t, staff.org_id)
        })?;
        let who = Principal {
            device_id: self.devices[name],
            staff,
            shares,
        };
        let out = sync::push(
            self.store,
            &who,
            vec![DocPush {
                doc_id: doc.id,
                case_id: doc.case_id,
                kind: doc.kind,
                base: Vec::new(),
                changes,
            }],
            received_ms,
        )?;
        if let Some(r) = out.rejections.first() {
            bail!("the demo push of {} was rejected: {}", doc.id, r.reason);
        }
        if !out.need_full_history.is_empty() {
            bail!("the demo push of {} lacked history", doc.id);
        }
        Ok(())
    }

    /// Sets the team around the person (who may hold the case's documents).
    fn set_case_teams(&self, case_id: CaseId, teams: &[&str]) -> anyhow::Result<()> {
        let teams: Vec<TeamId> = teams.iter().map(|t| self.teams[t]).collect();
        let set = write(self.store, |t| {
            let Some(mut case) = t.case(case_id)? else {
                return Ok(false);
            };
            case.teams = teams.clone();
            t.put_case(&case)?;
            Ok(true)
        })?;
        anyhow::ensure!(set, "a demo case was not created");
        Ok(())
    }

    fn open_case(
        &self,
        by: &str,
        who: Identity,
        about_me: &str,
        teams: &[&str],
    ) -> anyhow::Result<Doc> {
        let case_id = CaseId::new_random();
        let mut doc = self.new_doc(by, DocId(case_id.0), case_id, DocKind::Case);
        record::init_case(&mut doc.doc, case_id, &who)?;
        if !about_me.is_empty() {
            record::append_root_text(&mut doc.doc, "case", field::ABOUT_ME, about_me)?;
        }
        commit_at(&mut doc.doc, self.now_ms);
        self.push(&mut doc, by)?;
        self.set_case_teams(case_id, teams)?;
        Ok(doc)
    }

    fn add_map_entry(
        &self,
        doc: &mut Doc,
        key: &str,
        entries: &[(&str, &str)],
    ) -> anyhow::Result<()> {
        let parent = record::get_obj(&doc.doc, &ROOT, key, ObjType::Map)
            .with_context(|| format!("the demo document has no {key} map"))?;
        let obj = doc
            .doc
            .put_object(&parent, uuid::Uuid::new_v4().to_string(), ObjType::Map)?;
        for (k, v) in entries {
            doc.doc.put(&obj, *k, *v)?;
        }
        commit_at(&mut doc.doc, self.now_ms);
        Ok(())
    }

    fn team_member(&self, case: &mut Doc, by: &str, staff: &str) -> anyhow::Result<()> {
        let s = self.who(staff).clone();
        let team = STAFF
            .iter()
            .find(|(n, ..)| *n == staff)
            .map(|(_, _, org, team)| (*org, *team))
            .unwrap_or_default();
        self.as_staff(case, by);
        self.add_map_entry(
            case,
            field::TEAM,
            &[
                ("org", team.0),
                ("team", team.1),
                ("role", s.role.as_str()),
                ("worker", &s.name),
                ("staff_id", &s.staff_id.to_string()),
            ],
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn note(
        &self,
        case_id: CaseId,
        by: &str,
        kind: NoteKind,
        occurred_ago_ms: i64,
        text: &str,
        amends: Option<Amends>,
        late_entry_reason: Option<&str>,
    ) -> anyhow::Result<DocId> {
        let id = DocId::new_random();
        let s = self.who(by).clone();
        let (org, team) = STAFF
            .iter()
            .find(|(n, ..)| *n == by)
            .map(|(_, _, org, team)| (*org, *team))
            .unwrap_or_default();
        // Written up and filed twenty minutes after the contact, or now for a late entry.
        let recorded_at_ms = if late_entry_reason.is_some() {
            self.now_ms
        } else {
            self.now_ms - occurred_ago_ms + HOUR_MS / 3
        };
        let mut doc = self.new_doc(by, id, case_id, DocKind::Note);
        record::init_note(
            &mut doc.doc,
            &NewNote {
                case_id,
                kind,
                author: NoteAuthor {
                    staff_id: s.staff_id.to_string(),
                    role: s.role.to_string(),
                    org: org.into(),
                    team: team.into(),
                },
                occurred_at_ms: self.now_ms - occurred_ago_ms,
                recorded_at_ms,
                text: text.into(),
                amends,
                late_entry_reason: late_entry_reason.map(Into::into),
            },
        )?;
        commit_at(&mut doc.doc, recorded_at_ms);
        record::file_note(&mut doc.doc, id, recorded_at_ms)?;
        commit_at(&mut doc.doc, recorded_at_ms);
        self.push_at(&mut doc, by, recorded_at_ms)?;
        Ok(id)
    }

    /// A new statutory document of `kind` on `case`, written by `init` and then `edit` as `by`,
    /// pushed through the sync path (so the server's rules judge it as a device's).
    fn statutory(
        &self,
        by: &str,
        case_id: CaseId,
        kind: DocKind,
        init: impl FnOnce(&mut AutoCommit) -> Result<(), RecordError>,
        edit: impl FnOnce(&mut AutoCommit, &Table) -> Result<(), RecordError>,
    ) -> anyhow::Result<Doc> {
        let mut doc = self.new_doc(by, DocId::new_random(), case_id, kind);
        init(&mut doc.doc)?;
        let table = statutory::table_of(&doc.doc, kind).context("a statutory kind")?;
        edit(&mut doc.doc, &table)?;
        commit_at(&mut doc.doc, self.now_ms);
        self.push(&mut doc, by)?;
        Ok(doc)
    }

    /// Sets every (path, value) pair on a statutory document.
    fn fill(
        &self,
        doc: &mut AutoCommit,
        table: &Table,
        pairs: &[(&str, &str)],
    ) -> Result<(), RecordError> {
        for (path, value) in pairs {
            let path: Vec<&str> = path.split('.').collect();
            statutory::set_field(doc, table, &path, value, self.now_ms)?;
        }
        Ok(())
    }

    /// Completes an assessment as `by`, pushed as `by`.
    fn complete(&self, doc: &mut Doc, by: &str) -> anyhow::Result<()> {
        self.as_staff(doc, by);
        let id = self.who(by).staff_id.to_string();
        statutory::complete_assessment(&mut doc.doc, doc.id, &id, self.now_ms)?;
        commit_at(&mut doc.doc, self.now_ms);
        self.push(doc, by)
    }

    /// Peggy: her capacity to decide to go home (she has it) and her discharge on pathway 1.
    fn peggy_statutory(&self, case_id: CaseId) -> anyhow::Result<()> {
        let now = self.now_ms;
        let mut mca = self.statutory(
            "Sam Kowalski",
            case_id,
            DocKind::Assessment,
            |d| statutory::init_assessment(d, case_id, "mca", now, None),
            |d, t| {
                self.fill(
                    d,
                    t,
                    &[
                        (
                            "decision",
                            "Whether to return home to Rose Cottage to live alone",
                        ),
                        (
                            "help_given",
                            "Assessed in the morning, hearing aids in, with her son present",
                        ),
                        ("stage1.impairment", "no"),
                        (
                            "stage1.evidence",
                            "No impairment of mind or brain found; mild frailty only",
                        ),
                        ("outcome", "has_capacity"),
                    ],
                )?;
                for test in casenote_protocol::record::vocab::MCA_TESTS {
                    self.fill(
                        d,
                        t,
                        &[
                            (&format!("tests.{test}.result"), "can"),
                            (
                                &format!("tests.{test}.evidence"),
                                "Explained the risks of living alone in her own words",
                            ),
                        ],
                    )?;
                }
                Ok(())
            },
        )?;
        self.complete(&mut mca, "Sam Kowalski")?;
        self.statutory(
            "Sam Kowalski",
            case_id,
            DocKind::Discharge,
            |d| statutory::init_discharge(d, case_id),
            |d, t| {
                self.fill(
                    d,
                    t,
                    &[
                        ("pathway", "1"),
                        ("medically_optimised_date", "2026-02-26"),
                        ("expected_discharge_date", "2026-03-02"),
                        ("package_start", "2026-03-02"),
                        ("day_one_welfare_check.due", "2026-03-03"),
                    ],
                )?;
                for (item, status) in [
                    ("Perching stool", "ordered"),
                    ("Second stair rail", "needed"),
                ] {
                    statutory::add_entry(
                        d,
                        t,
                        &["equipment"],
                        &[("item", item), ("status", status)],
                        now,
                    )?;
                }
                Ok(())
            },
        )?;
        Ok(())
    }

    /// Jean lacks capacity to decide on respite: a best-interests decision consulting Tom and
    /// their son.
    fn jean_capacity(&self, case_id: CaseId) -> anyhow::Result<()> {
        let now = self.now_ms;
        let mut mca = self.statutory(
            "Priya Shah",
            case_id,
            DocKind::Assessment,
            |d| statutory::init_assessment(d, case_id, "mca", now, None),
            |d, t| {
                self.fill(d, t, &[
                    ("decision", "Whether to stay two weeks in respite care at Elm House"),
                    ("help_given", "Photographs of Elm House; a quiet room; Tom present"),
                    ("stage1.impairment", "yes"),
                    ("stage1.evidence", "Diagnosis of Alzheimer's disease (memory clinic, 2024)"),
                    ("tests.understand.result", "cannot"),
                    ("tests.understand.evidence", "Could not say what respite would involve after explanation"),
                    ("tests.retain.result", "cannot"),
                    ("tests.retain.evidence", "Did not recall the conversation ten minutes later"),
                    ("tests.use_or_weigh.result", "cannot"),
                    ("tests.use_or_weigh.evidence", "Could not weigh Tom's exhaustion against staying home"),
                    ("tests.communicate.result", "can"),
                    ("tests.communicate.evidence", "Communicated clearly in speech"),
                    ("outcome", "lacks_capacity"),
                    ("best_interests.wishes_and_beliefs", "Jean has always wanted Tom to be well; she likes the radio in the mornings"),
                    ("best_interests.least_restrictive_option", "Short respite close to home, with her routines kept"),
                    ("best_interests.rationale", "Tom needs rest to keep caring; Jean is safe and settled at Elm House"),
                    ("best_interests.decision", "Two weeks' respite at Elm House"),
                ])?;
                for (name, relationship, view) in [
                    ("Tom Reilly", "husband and carer", "Needs a rest; supports respite"),
                    ("Their son", "son", "Supports respite if Jean's routines are kept"),
                ] {
                    statutory::add_entry(
                        d,
                        t,
                        &["best_interests", "consulted"],
                        &[("name", name), ("relationship", relationship), ("view", view)],
                        now,
                    )?;
                }
                Ok(())
            },
        )?;
        self.complete(&mut mca, "Priya Shah")
    }

    /// Tom's carer's assessment (Care Act s10): eligible.
    fn tom_carers(&self, case_id: CaseId) -> anyhow::Result<()> {
        let now = self.now_ms;
        let mut carers = self.statutory(
            "Priya Shah",
            case_id,
            DocKind::Assessment,
            |d| statutory::init_assessment(d, case_id, "carers", now, None),
            |d, t| {
                for o in casenote_protocol::record::vocab::CARERS_OUTCOMES {
                    let unable = if matches!(*o, "recreation" | "relationships") {
                        "yes"
                    } else {
                        "no"
                    };
                    self.fill(
                        d,
                        t,
                        &[(&format!("outcomes.{o}.unable_to_achieve"), unable)],
                    )?;
                }
                self.fill(
                    d,
                    t,
                    &[
                        (
                            "outcomes.recreation.impact",
                            "No time for the allotment or the bowls club",
                        ),
                        (
                            "outcomes.relationships.impact",
                            "Has not seen friends for months",
                        ),
                        ("needs_arise_from_caring", "yes"),
                        ("health_at_risk", "yes"),
                        ("wellbeing_impact", "significant"),
                        ("eligible", "yes"),
                    ],
                )
            },
        )?;
        self.complete(&mut carers, "Priya Shah")
    }

    /// Daniel: detained under section 2 after an MHA assessment; his nearest relative.
    fn daniel_mha(&self, daniel: &mut Doc) -> anyhow::Result<()> {
        self.as_staff(daniel, "Dr Helen Marsh");
        let t = casenote_protocol::record::schema::CASE_TABLE;
        statutory::add_entry(
            &mut daniel.doc,
            &t,
            &["legal_status"],
            &[
                ("kind", "mha_section"),
                ("detail", "2"),
                ("start", "2026-01-10"),
                ("end", "2026-02-07"),
                ("status", "ended"),
            ],
            self.now_ms,
        )?;
        statutory::add_entry(
            &mut daniel.doc,
            &t,
            &["contacts"],
            &[
                ("role", "nearest_relative"),
                ("name", "Grace Okafor"),
                ("relationship", "mother"),
                ("phone", "01632 960 118"),
            ],
            self.now_ms,
        )?;
        commit_at(&mut daniel.doc, self.now_ms);
        self.push(daniel, "Dr Helen Marsh")
    }

    /// Aisha's early help assessment, in progress.
    fn aisha_early_help(&self, case_id: CaseId) -> anyhow::Result<()> {
        let now = self.now_ms;
        self.statutory(
            "Lena Fischer",
            case_id,
            DocKind::Assessment,
            |d| statutory::init_assessment(d, case_id, "early_help", now, None),
            |d, t| {
                self.fill(d, t, &[
                    ("needs", "Aisha is often late to school; mum works nights and has no support nearby"),
                    ("strengths", "Aisha loves drawing; mum is keen to work with the school"),
                    ("plan", "Breakfast club place; a family support worker for six weeks; review at the next team around the child meeting"),
                ])
            },
        )?;
        Ok(())
    }

    fn load_all(&self) -> anyhow::Result<Marker> {
        let mut cases = Vec::new();

        // 1. Peggy Doyle, 84: in hospital after a fall, going home on pathway 1.
        let mut peggy = self.open_case(
            "Sam Kowalski",
            Identity {
                name: "Peggy Doyle".into(),
                nhs_number: Some("999 234 5675".into()),
                dob: Some("1941-03-12".into()),
                address: Some("Rose Cottage, Fell Lane, Castlebridge CB7 0XX".into()),
            },
            "Call me Peggy; I feed the birds at 7am. I want to go home to my cottage.",
            &[HUB, LTN, WARD7, NURSING],
        )?;
        for member in ["Sam Kowalski", "Mark Ellison", "Grace Liu", "Owen Hughes"] {
            self.team_member(&mut peggy, "Sam Kowalski", member)?;
        }
        self.as_staff(&mut peggy, "Sam Kowalski");
        self.push(&mut peggy, "Sam Kowalski")?;
        self.peggy_statutory(peggy.case_id)?;

        let mut plan = self.new_doc(
            "Sam Kowalski",
            DocId::new_random(),
            peggy.case_id,
            DocKind::Plan,
        );
        record::init_plan(&mut plan.doc, peggy.case_id)?;
        record::append_root_text(
            &mut plan.doc,
            "plan",
            field::NARRATIVE,
            "Discharge plan. Peggy wants to go home to her cottage and has capacity to make that \
             decision. Pathway 1: home with support.\n\nRisk Peggy chooses to take: living alone \
             with no mobile signal. Agreed mitigations: a pendant alarm on the landline, daily \
             visits for the first two weeks, a neighbour calls in at noon.",
        )?;
        record::set_root_str(&mut plan.doc, field::PATHWAY, "1")?;
        record::set_root_str(&mut plan.doc, field::DISCHARGE_DATE, "2026-03-02")?;
        commit_at(&mut plan.doc, self.now_ms);
        self.push(&mut plan, "Sam Kowalski")?;
        self.as_staff(&mut plan, "Mark Ellison");
        self.add_map_entry(
            &mut plan,
            field::ACTIONS,
            &[
                (
                    "what",
                    "Fit grab rails by the back door and a perching stool",
                ),
                ("who", "Mark Ellison, OT"),
                ("by", "2026-03-01"),
                ("status", "open"),
            ],
        )?;
        record::append_root_text(
            &mut plan.doc,
            "plan",
            field::NARRATIVE,
            "\n\nOT: home visit done; the stairs are manageable with a second rail.",
        )?;
        commit_at(&mut plan.doc, self.now_ms);
        self.push(&mut plan, "Mark Ellison")?;

        self.note(
            peggy.case_id,
            "Grace Liu",
            NoteKind::CaseNote,
            6 * HOUR_MS,
            "Peggy mobilising with a frame; eating well. Keen to get home to feed the birds.",
            None,
            None,
        )?;
        self.note(
            peggy.case_id,
            "Sam Kowalski",
            NoteKind::Mdt,
            4 * HOUR_MS,
            "MDT on Ward 7: medically fit for discharge. Pathway 1 agreed with Peggy.",
            None,
            None,
        )?;
        // 5. A district nurse's note about Jean, filed on Peggy's record by mistake, then corrected.
        let wrong = self.note(
            peggy.case_id,
            "Owen Hughes",
            NoteKind::Visit,
            3 * HOUR_MS,
            "Home visit: leg ulcer dressing changed; healing well. Husband present.",
            None,
            None,
        )?;
        self.note(
            peggy.case_id,
            "Owen Hughes",
            NoteKind::CaseNote,
            2 * HOUR_MS,
            "Correction: the visit note above was about Jean Reilly and was filed on this record \
             by mistake. It does not concern Peggy.",
            Some(Amends {
                note_id: wrong,
                kind: "correction".into(),
                reason: "Filed on the wrong person's record".into(),
            }),
            None,
        )?;
        cases.push(DemoCase {
            case_id: peggy.case_id,
            label: "Peggy".into(),
        });

        // 2. Daniel Okafor, 42: visit in pairs; a restricted safeguarding section; a late entry.
        let mut daniel = self.open_case(
            "Dr Helen Marsh",
            Identity {
                name: "Daniel Okafor".into(),
                nhs_number: Some("999 345 6780".into()),
                dob: Some("1983-07-21".into()),
                address: Some("Flat 4, 17 Mill Street, Castlebridge CB2 0XX".into()),
            },
            "I prefer to be called Dan. Phone first; please don't knock unannounced.",
            &[CMHT, LTN],
        )?;
        for member in ["Dr Helen Marsh", "Joe Ward", "Priya Shah"] {
            self.team_member(&mut daniel, "Dr Helen Marsh", member)?;
        }
        // Each staff member pushes only their own edits: authorship is checked.
        self.push(&mut daniel, "Dr Helen Marsh")?;
        self.as_staff(&mut daniel, "Joe Ward");
        // Who raised an alert is the raiser's staff id: the server checks it is the pusher's.
        let joe = self.who("Joe Ward").staff_id.to_string();
        record::add_alert(&mut daniel.doc, "Visit in pairs", &joe, self.now_ms)?;
        commit_at(&mut daniel.doc, self.now_ms);
        self.push(&mut daniel, "Joe Ward")?;
        self.daniel_mha(&mut daniel)?;

        let mut safeguarding = self.new_doc(
            "Dr Helen Marsh",
            DocId::new_random(),
            daniel.case_id,
            DocKind::Restricted,
        );
        safeguarding
            .doc
            .put(ROOT, field::SCHEMA, "casenote/restricted/1")?;
        safeguarding
            .doc
            .put(ROOT, field::CASE_ID, daniel.case_id.to_string())?;
        safeguarding.doc.put(ROOT, "title", "Safeguarding")?;
        let text = safeguarding
            .doc
            .put_object(ROOT, field::NARRATIVE, ObjType::Text)?;
        safeguarding.doc.splice_text(
            &text,
            0,
            0,
            "Safeguarding concern raised; strategy discussion held. Shared with the Community \
             Mental Health Team only.",
        )?;
        commit_at(&mut safeguarding.doc, self.now_ms);
        self.push(&mut safeguarding, "Dr Helen Marsh")?;

        self.note(
            daniel.case_id,
            "Joe Ward",
            NoteKind::Visit,
            30 * HOUR_MS,
            "Joint visit with Dr Marsh. Daniel calm, engaged; agreed to review in a week.",
            None,
            Some("No signal after the visit and the tablet battery failed; written up next day."),
        )?;
        cases.push(DemoCase {
            case_id: daniel.case_id,
            label: "Daniel".into(),
        });

        // 3. Jean Reilly, 79, and Tom Reilly, 81, her carer.
        let mut jean = self.open_case(
            "Priya Shah",
            Identity {
                name: "Jean Reilly".into(),
                nhs_number: Some("999 456 7896".into()),
                dob: Some("1946-11-02".into()),
                address: Some("22 Orchard Road, Castlebridge CB4 0XX".into()),
            },
            "Tom is my husband. I like the radio on in the mornings.",
            &[LTN, NURSING],
        )?;
        for member in ["Priya Shah", "Owen Hughes"] {
            self.team_member(&mut jean, "Priya Shah", member)?;
        }
        self.push(&mut jean, "Priya Shah")?;
        let mut jean_plan = self.new_doc(
            "Priya Shah",
            DocId::new_random(),
            jean.case_id,
            DocKind::Plan,
        );
        record::init_plan(&mut jean_plan.doc, jean.case_id)?;
        record::append_root_text(
            &mut jean_plan.doc,
            "plan",
            field::NARRATIVE,
            "Best-interests decision about respite: Jean lacks capacity to decide on respite care \
             (MCA assessment). Consulted Tom (husband and carer) and their son. Decision: two \
             weeks' respite at Elm House so Tom can rest; Jean's routines kept.",
        )?;
        commit_at(&mut jean_plan.doc, self.now_ms);
        self.push(&mut jean_plan, "Priya Shah")?;
        self.jean_capacity(jean.case_id)?;
        self.note(
            jean.case_id,
            "Priya Shah",
            NoteKind::Mdt,
            24 * HOUR_MS,
            "Best-interests meeting with Tom and their son; respite agreed.",
            None,
            None,
        )?;
        cases.push(DemoCase {
            case_id: jean.case_id,
            label: "Jean".into(),
        });

        let tom = self.open_case(
            "Priya Shah",
            Identity {
                name: "Tom Reilly".into(),
                nhs_number: Some("999 678 9012".into()),
                dob: Some("1944-05-30".into()),
                address: Some("22 Orchard Road, Castlebridge CB4 0XX".into()),
            },
            "I look after Jean. I need a proper night's sleep now and then.",
            &[LTN],
        )?;
        self.note(
            tom.case_id,
            "Priya Shah",
            NoteKind::Visit,
            26 * HOUR_MS,
            "Carer's assessment with Tom: exhausted by night-time care; wants respite and a \
             carers' group.",
            None,
            None,
        )?;
        self.tom_carers(tom.case_id)?;
        cases.push(DemoCase {
            case_id: tom.case_id,
            label: "Tom".into(),
        });

        // 4. Aisha Rahman, 9: a team around the child with Early Help and the school nurse.
        let mut aisha = self.open_case(
            "Lena Fischer",
            Identity {
                name: "Aisha Rahman".into(),
                nhs_number: Some("999 789 0124".into()),
                dob: Some("2016-09-14".into()),
                address: Some("5 Canal Walk, Castlebridge CB3 0XX".into()),
            },
            "I like drawing and my cat Biscuit.",
            &[EARLY_HELP],
        )?;
        self.team_member(&mut aisha, "Lena Fischer", "Lena Fischer")?;
        self.add_map_entry(
            &mut aisha,
            field::TEAM,
            &[
                ("org", "Castlebridge Primary School"),
                ("team", "School nursing"),
                ("role", "school nurse"),
                ("worker", "School nurse"),
            ],
        )?;
        self.push(&mut aisha, "Lena Fischer")?;
        self.note(
            aisha.case_id,
            "Lena Fischer",
            NoteKind::Visit,
            5 * HOUR_MS,
            "Team around the child meeting at school with the school nurse and Aisha's mum.",
            None,
            None,
        )?;
        self.aisha_early_help(aisha.case_id)?;
        cases.push(DemoCase {
            case_id: aisha.case_id,
            label: "Aisha".into(),
        });

        self.store.flush()?;
        Ok(Marker {
            staff: STAFF
                .iter()
                .map(|(name, ..)| self.who(name).staff_id)
                .collect(),
            cases,
        })
    }
}

/// Commits `doc`'s pending edits stamped with `at_ms`, as a device stamps its commits with its
/// clock (a bare `commit` stamps 0, which history would show as a device clock of 1970).
fn commit_at(doc: &mut AutoCommit, at_ms: i64) {
    doc.commit_with(automerge::transaction::CommitOptions::default().with_time(at_ms));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::nhs_number_is_valid;

    #[test]
    fn the_demo_loads_once_and_every_nhs_number_is_fictional_and_valid() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::sled::open(dir.path()).unwrap();
        let first = load(&*store, 1_700_000_000_000).unwrap();
        assert!(first.loaded);
        assert_eq!(first.tokens.len(), STAFF.len());
        assert_eq!(first.cases.len(), 5);
        let seq_after_first = store.last_seq().unwrap();
        assert!(seq_after_first.0 > 20);

        let second = load(&*store, 1_700_000_000_000).unwrap();
        assert!(!second.loaded);
        assert_eq!(
            store.last_seq().unwrap(),
            seq_after_first,
            "nothing is loaded twice"
        );
        let staff = read(&*store, |t| t.staff_all()).unwrap();
        assert_eq!(staff.len(), STAFF.len());
        assert_ne!(first.tokens[0].token, second.tokens[0].token);

        let json: serde_json::Value = serde_json::from_str(&render_json(&second)).unwrap();
        assert_eq!(json["tokens"][0]["staff"], "Priya Shah");
        assert_eq!(json["tokens"][0]["team"], "Locality Team North");
        assert_eq!(json["cases"][0]["label"], "Peggy");
        assert!(render_human(&second).contains("casenote --store ./priya login"));

        for case in &first.cases {
            let rec = read(&*store, |t| t.doc(DocId(case.case_id.0)))
                .unwrap()
                .unwrap();
            assert_eq!(rec.header.kind, DocKind::Case);
            let mut changes = Vec::new();
            store
                .scan_log(casenote_protocol::Seq(0), seq_after_first, &mut |e| {
                    if e.doc_id == rec.header.doc_id {
                        changes.push(automerge::Change::from_bytes(e.bytes.to_vec()).unwrap());
                    }
                    true
                })
                .unwrap();
            let mut doc = AutoCommit::new();
            doc.apply_changes(changes).unwrap();
            let nhs = record::get_str(&doc, &ROOT, field::NHS_NUMBER).unwrap();
            assert!(nhs.starts_with("999"), "{nhs}");
            assert!(nhs_number_is_valid(&nhs), "{nhs}");
        }
    }
}
