//! The authorization matrix, through the real HTTP API: every role, every document kind, every
//! operation (cold pull, incremental feed, push) and every relationship (team on the case or not;
//! on the restricted document's access list or not), each checked against the expected allow or
//! deny from one table.

mod common;
use automerge::transaction::Transactable;
use automerge::{ActorId, Author, AutoCommit, ObjType, ReadDoc, ROOT};
use casenote_protocol::record::{self, Identity, NewNote, NoteAuthor, NoteKind};
use casenote_protocol::wire::{self, DocPush};
use casenote_protocol::{CaseId, DocId, DocKind, ErrorCode, Seq, StaffId};
use common::*;
use serde_bytes::ByteBuf;
use std::collections::{BTreeSet, HashMap};

const ROLES: &[&str] = &[
    "social_worker",
    "nurse",
    "occupational_therapist",
    "gp",
    "team_manager",
    "admin",
    "psychiatrist",
    "amhp",
    "family_support_worker",
];
const KINDS: &[DocKind] = &[
    DocKind::Case,
    DocKind::Plan,
    DocKind::Note,
    DocKind::Restricted,
    DocKind::Safeguarding,
];

/// Writes `value` at root `key`, or, in a safeguarding enquiry (whose table takes no field it
/// does not name), into its `s42_reason` text.
fn touch(kind: DocKind, d: &mut AutoCommit, key: &str, value: String) {
    if kind == DocKind::Safeguarding {
        let text = match d.get(ROOT, "s42_reason").unwrap() {
            Some((automerge::Value::Object(ObjType::Text), id)) => id,
            other => panic!("no s42_reason: {other:?}"),
        };
        d.update_text(&text, format!("{key} {value}")).unwrap();
    } else {
        d.put(ROOT, key, value).unwrap();
    }
}

/// The relationships a member of staff can have with the test case.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Relationship {
    /// Their team is on the case, and on the restricted document's access list.
    OnCaseAndOnRestrictedList,
    /// Their team is on the case, not on the restricted list.
    OnCaseOnly,
    /// Their team is not on the case.
    NotOnCase,
}

const RELATIONSHIPS: &[(Relationship, &str)] = &[
    (Relationship::OnCaseAndOnRestrictedList, "Sealed"),
    (Relationship::OnCaseOnly, "Alpha"),
    (Relationship::NotOnCase, "Beta"),
];

/// The table: whether `role` with `rel` may hold a document of `kind`. Access follows the
/// relationship alone; the system `admin` role manages the service and reads no records.
fn allowed(role: &str, rel: Relationship, kind: DocKind) -> bool {
    if role == "admin" {
        return false;
    }
    match rel {
        Relationship::OnCaseAndOnRestrictedList => true,
        Relationship::OnCaseOnly => !kind.is_restricted(),
        Relationship::NotOnCase => false,
    }
}

/// Whether `role` with `rel` may push changes to the test case's document of `kind`: what they
/// may hold, except a note, which is its author's alone (the creator's here) while it is a draft
/// and nobody's once filed. A member who may hold a note but not write it is told
/// `rule_violation`; one who may not hold it, `forbidden`.
fn may_push(role: &str, rel: Relationship, kind: DocKind) -> bool {
    allowed(role, rel, kind) && kind != DocKind::Note
}

struct Member {
    role: &'static str,
    rel: Relationship,
    staff_id: StaffId,
    token: String,
}

fn editor(doc: &AutoCommit, staff: StaffId) -> AutoCommit {
    let mut d = doc.clone();
    d.set_author(Some(Author::from(staff.as_bytes().to_vec())));
    d.set_actor(ActorId::random());
    d
}

fn push_of(
    doc_id: DocId,
    case: CaseId,
    kind: DocKind,
    doc: &mut AutoCommit,
    base: &[automerge::ChangeHash],
) -> DocPush {
    DocPush {
        doc_id,
        case_id: case,
        kind,
        base: wire::to_wire_heads(base),
        changes: doc
            .get_changes(base)
            .iter()
            .map(|c| ByteBuf::from(c.raw_bytes().to_vec()))
            .collect(),
    }
}

#[test]
fn every_role_kind_operation_and_relationship_gets_exactly_the_access_the_table_says() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("server");
    admin(&data, &["org", "add", "--name", "Test Council"]);
    for team in ["Alpha", "Beta", "Sealed"] {
        admin(
            &data,
            &["team", "add", "--org", "Test Council", "--name", team],
        );
    }
    let creator_id: StaffId = admin(
        &data,
        &[
            "staff",
            "add",
            "--name",
            "Creator",
            "--role",
            "social_worker",
            "--org",
            "Test Council",
            "--team",
            "Sealed",
        ],
    )
    .parse()
    .unwrap();
    let creator = issue_token(&data, "Creator");
    let mut members = Vec::new();
    for role in ROLES {
        for (rel, team) in RELATIONSHIPS {
            let name = format!("{role} in {team}");
            let staff_id: StaffId = admin(
                &data,
                &[
                    "staff",
                    "add",
                    "--name",
                    &name,
                    "--role",
                    role,
                    "--org",
                    "Test Council",
                    "--team",
                    team,
                ],
            )
            .parse()
            .unwrap();
            members.push(Member {
                role,
                rel: *rel,
                staff_id,
                token: issue_token(&data, &name),
            });
        }
    }

    // The creator (team Sealed) opens a case with one document of every kind.
    let mut server = Server::start(&data);
    let case = CaseId::new_random();
    let mut docs: HashMap<DocKind, (DocId, AutoCommit)> = HashMap::new();
    let author = NoteAuthor {
        staff_id: creator_id.to_string(),
        role: "social_worker".into(),
        org: "Test Council".into(),
        team: "Sealed".into(),
    };
    for kind in KINDS {
        let mut d = editor(&AutoCommit::new(), creator_id);
        match kind {
            DocKind::Case => record::init_case(
                &mut d,
                case,
                &Identity {
                    name: "Matrix Person".into(),
                    ..Default::default()
                },
            )
            .unwrap(),
            DocKind::Plan => record::init_plan(&mut d, case).unwrap(),
            DocKind::Note => record::init_note(
                &mut d,
                &NewNote {
                    case_id: case,
                    kind: NoteKind::Visit,
                    author: author.clone(),
                    occurred_at_ms: 0,
                    recorded_at_ms: 0,
                    text: "draft".into(),
                    amends: None,
                    late_entry_reason: None,
                },
            )
            .unwrap(),
            DocKind::Restricted => {
                d.put(ROOT, "case_id", case.to_string()).unwrap();
                d.put_object(ROOT, "narrative", ObjType::Text).unwrap();
            }
            DocKind::Safeguarding => {
                record::statutory::init_safeguarding(&mut d, case, "Concern").unwrap()
            }
            other => panic!("{other} is not in the matrix"),
        }
        let id = if *kind == DocKind::Case {
            DocId(case.0)
        } else {
            DocId::new_random()
        };
        docs.insert(*kind, (id, d));
    }
    let pushes: Vec<DocPush> = KINDS
        .iter()
        .map(|k| {
            let (id, d) = docs.get_mut(k).unwrap();
            push_of(*id, case, *k, d, &[])
        })
        .collect();
    let r = raw::sync(&server.url, &creator, Seq(0), pushes).unwrap();
    assert!(
        r.rejections.is_empty(),
        "the creator's documents were refused: {:?}",
        r.rejections
    );

    // Team Alpha joins the case (team Beta never does).
    drop(server);
    admin(
        &data,
        &[
            "case",
            "add-team",
            "--case",
            &case.to_string(),
            "--team",
            "Alpha",
        ],
    );
    server = Server::start(&data);
    let kind_of: HashMap<DocId, DocKind> = docs.iter().map(|(k, (id, _))| (*id, *k)).collect();

    let mut checked = 0;
    for m in &members {
        let who = format!("{} ({:?})", m.role, m.rel);
        let want: BTreeSet<DocId> = KINDS
            .iter()
            .filter(|k| allowed(m.role, m.rel, **k))
            .map(|k| docs[k].0)
            .collect();

        // Operation: cold pull.
        let (pulled, _, cursor) = raw::pull_all(&server.url, &m.token, Seq(0));
        let got: BTreeSet<DocId> = pulled
            .iter()
            .map(|p| p.doc_id)
            .filter(|d| kind_of.contains_key(d))
            .collect();
        for kind in KINDS {
            assert_eq!(
                got.contains(&docs[kind].0),
                want.contains(&docs[kind].0),
                "pull of a {kind} by {who}"
            );
            checked += 1;
        }

        // Operation: feed (a new change after this device's cursor).
        for kind in KINDS {
            let (id, d) = docs.get_mut(kind).unwrap();
            let before = d.get_heads();
            touch(*kind, d, "touched", checked.to_string());
            let push = push_of(*id, case, *kind, d, &before);
            let r = raw::sync(&server.url, &creator, Seq(0), vec![push]).unwrap();
            assert!(
                r.rejections.is_empty(),
                "the creator's edit was refused: {:?}",
                r.rejections
            );
        }
        let (fed, _, _) = raw::pull_all(&server.url, &m.token, cursor);
        let got: BTreeSet<DocId> = fed.iter().map(|p| p.doc_id).collect();
        for kind in KINDS {
            assert_eq!(
                got.contains(&docs[kind].0),
                want.contains(&docs[kind].0),
                "feed of a {kind} for {who}"
            );
            checked += 1;
        }

        // Operation: push.
        for kind in KINDS {
            let (id, d) = &docs[kind];
            let mut mine = editor(d, m.staff_id);
            let base = mine.get_heads();
            touch(*kind, &mut mine, "pushed_by", m.staff_id.to_string());
            let r = raw::sync(
                &server.url,
                &m.token,
                cursor,
                vec![push_of(*id, case, *kind, &mut mine, &base)],
            )
            .unwrap();
            if may_push(m.role, m.rel, *kind) {
                assert!(
                    r.rejections.is_empty(),
                    "push to a {kind} by {who} was refused: {:?}",
                    r.rejections
                );
                assert_eq!(
                    r.acks.len(),
                    1,
                    "push to a {kind} by {who} was not acknowledged"
                );
            } else {
                assert_eq!(
                    r.acks.len(),
                    0,
                    "push to a {kind} by {who} was acknowledged"
                );
                assert_eq!(
                    r.rejections.len(),
                    1,
                    "push to a {kind} by {who}: no rejection"
                );
                let code = if want.contains(id) {
                    ErrorCode::RuleViolation
                } else {
                    ErrorCode::Forbidden
                };
                assert_eq!(r.rejections[0].code, code, "push to a {kind} by {who}");
            }
            checked += 1;
        }
    }
    assert_eq!(checked, ROLES.len() * RELATIONSHIPS.len() * KINDS.len() * 3);

    // Nothing refused was stored anywhere: every change the creator can now see was written by
    // the creator or by someone the table allows to write that document.
    let (all, _, _) = raw::pull_all(&server.url, &creator, Seq(0));
    let may_write: HashMap<String, &Member> = members
        .iter()
        .map(|m| (m.staff_id.to_string(), m))
        .collect();
    for pull in all.iter().filter(|p| kind_of.contains_key(&p.doc_id)) {
        let kind = kind_of[&pull.doc_id];
        // Automerge 0.12 writes the author into an actor's first change only; later changes
        // are attributed through their actor.
        let changes: Vec<automerge::Change> = pull
            .changes
            .iter()
            .map(|b| automerge::Change::from_bytes(b.to_vec()).unwrap())
            .collect();
        let mut doc = AutoCommit::new();
        doc.apply_changes(changes.clone()).unwrap();
        for change in &changes {
            let author = doc
                .get_author_for_actor(change.actor_id())
                .map(|a| a.as_bytes().to_vec())
                .expect("every stored change is attributed to an author");
            let author = StaffId::from_slice(&author)
                .map(|s| s.to_string())
                .unwrap_or_default();
            if author == creator_id.to_string() {
                continue;
            }
            let m = may_write
                .get(&author)
                .unwrap_or_else(|| panic!("a change by an unknown author {author} is stored"));
            assert!(
                may_push(m.role, m.rel, kind),
                "a refused push by {} ({:?}) to a {kind} was stored",
                m.role,
                m.rel
            );
        }
    }
}
