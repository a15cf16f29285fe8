//! Tests only: the directory a test needs, built through the admin service as the CLI would
//! (`By::Cli`), in one line each. Each returns the service's own result, so a test can check a
//! refusal as well as unwrap a success.

use crate::admin::{self, AdminError, NewStaff};
use crate::auth::{self, Authenticated, Issued, Principal};
use crate::model::{By, Device, Org, Role, Staff, Team};
use crate::store::Store;
use casenote_protocol::DeviceId;

pub(crate) fn add_org(store: &dyn Store, name: &str) -> Result<Org, AdminError> {
    admin::add_org(store, By::Cli, name, 0)
}

pub(crate) fn add_team(store: &dyn Store, org: &str, name: &str) -> Result<Team, AdminError> {
    admin::add_team(store, By::Cli, org, name, 0)
}

/// A member of staff with role `role` (a valid role name) on teams `teams` of `org`.
pub(crate) fn add_staff(
    store: &dyn Store,
    name: &str,
    role: &str,
    org: &str,
    teams: &[String],
) -> Result<Staff, AdminError> {
    let role: Role = role.parse().expect("tests name valid roles");
    admin::add_staff(
        store,
        By::Cli,
        NewStaff {
            name,
            role,
            org,
            teams,
        },
        0,
    )
}

pub(crate) fn issue(
    store: &dyn Store,
    staff: &Staff,
    device_name: &str,
    now_ms: i64,
) -> Result<Issued, AdminError> {
    admin::issue_token(store, By::Cli, staff.staff_id, device_name, now_ms)
}

pub(crate) fn revoke(store: &dyn Store, device: DeviceId, now_ms: i64) -> Device {
    admin::revoke_device(store, By::Cli, &device.to_string(), now_ms).unwrap()
}

/// The principal a live token stands for.
pub(crate) fn principal(store: &dyn Store, token: &str) -> Principal {
    match auth::authenticate(store, token).unwrap() {
        Authenticated::Ok(p) => p,
        other => panic!("not a live token: {other:?}"),
    }
}

/// The test directory: a council with team North (Alice, a social worker; Bob, a nurse) and team
/// South (Carol, a GP), each with one device token. Shared by the API and live-channel tests.
pub(crate) fn people(s: &dyn Store) -> [(Staff, String); 3] {
    add_org(s, "Council").unwrap();
    add_team(s, "Council", "North").unwrap();
    add_team(s, "Council", "South").unwrap();
    [
        ("Alice", "social_worker", "North"),
        ("Bob", "nurse", "North"),
        ("Carol", "gp", "South"),
    ]
    .map(|(name, role, team)| {
        let staff = add_staff(s, name, role, "Council", &[team.into()]).unwrap();
        let token = issue(s, &staff, "test", 0).unwrap().token;
        (staff, token)
    })
}

/// Alice, a social worker of Council's team North (both made here), with a device: her
/// principal and the team.
pub(crate) fn alice_of_north(store: &dyn Store) -> (Principal, Team) {
    add_org(store, "Council").unwrap();
    let team = add_team(store, "Council", "North").unwrap();
    let staff = add_staff(
        store,
        "Alice",
        "social_worker",
        "Council",
        &["North".into()],
    )
    .unwrap();
    let token = issue(store, &staff, "test", 0).unwrap().token;
    (principal(store, &token), team)
}

/// [`alice_of_north`], and a case of team North (stored): her principal and the case.
pub(crate) fn alice_with_case(store: &dyn Store) -> (Principal, crate::model::CaseRecord) {
    let (who, team) = alice_of_north(store);
    let case = crate::model::CaseRecord {
        case_id: casenote_protocol::CaseId::new_random(),
        owner_org: who.staff.org_id,
        teams: vec![team.team_id],
        created_ms: 0,
    };
    crate::store::write(store, |t| t.put_case(&case)).unwrap();
    (who, case)
}

/// A new plan of case `case`, written by `who` (a random actor, `who` as its author).
pub(crate) fn new_plan(who: &Principal, case: casenote_protocol::CaseId) -> automerge::AutoCommit {
    let mut plan = automerge::AutoCommit::new();
    plan.set_actor(automerge::ActorId::random());
    plan.set_author(Some(automerge::Author::from(
        who.staff_id().as_bytes().to_vec(),
    )));
    casenote_protocol::record::init_plan(&mut plan, case).unwrap();
    plan.commit();
    plan
}

/// The changes of `doc` since `heads`, as a push of a plan carries them.
pub(crate) fn plan_push(
    doc: &mut automerge::AutoCommit,
    heads: &[automerge::ChangeHash],
    (doc_id, case_id): (casenote_protocol::DocId, casenote_protocol::CaseId),
) -> casenote_protocol::wire::DocPush {
    casenote_protocol::wire::DocPush {
        doc_id,
        case_id,
        kind: casenote_protocol::DocKind::Plan,
        base: heads
            .iter()
            .map(|h| casenote_protocol::wire::Hash(h.0))
            .collect(),
        changes: doc
            .get_changes(heads)
            .into_iter()
            .map(|c| serde_bytes::ByteBuf::from(c.raw_bytes().to_vec()))
            .collect(),
    }
}

/// The record of note `doc` of case `case`, as stored before its first change: no heads, no
/// operations, not sealed, no grants.
pub(crate) fn note_record(
    doc: casenote_protocol::DocId,
    case: casenote_protocol::CaseId,
) -> crate::model::DocRecord {
    crate::model::DocRecord {
        header: crate::model::DocHeader {
            doc_id: doc,
            case_id: case,
            kind: casenote_protocol::DocKind::Note,
            owner_org: casenote_protocol::OrgId::new_random(),
            access_teams: None,
            created_by: casenote_protocol::StaffId::new_random(),
            created_ms: 0,
            sealed: false,
            grants: Vec::new(),
        },
        heads: Vec::new(),
        ops: 0,
        filed_ms: None,
    }
}
