//! Rows to model values: one function per table, each reading the columns of `schema/v1.sql`
//! by name. A value the model cannot hold (a hash of the wrong length, an unknown kind) is
//! [`StoreError::Corrupt`], never a panic.

use super::super::{PushFacts, StoreError, SyncBasis};
use crate::model::{
    ActorBinding, CaseRecord, Device, DeviceSync, DocHeader, DocRecord, Org, QuarantineEntry,
    Staff, Team, TokenRecord,
};
use casenote_protocol::wire::Hash;
use casenote_protocol::{CaseId, DeviceId, DocId, OrgId, Seq, StaffId, TeamId};
use postgres::types::FromSql;
use postgres::Row;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::collections::HashSet;
use uuid::Uuid;

/// Column `name` of `row`.
pub(super) fn col<'a, T: FromSql<'a>>(row: &'a Row, name: &str) -> Result<T, StoreError> {
    row.try_get(name)
        .map_err(|e| StoreError::Corrupt(format!("column {name}: {e}")))
}

/// A serde enum that serialises as a plain string (DocKind, Role, AuditKind), as its text.
pub(super) fn enum_text<T: Serialize>(value: &T) -> Result<String, StoreError> {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(s)) => Ok(s),
        _ => Err(StoreError::Corrupt("a value that is not a name".into())),
    }
}

/// The enum named `text`.
pub(super) fn text_enum<T: DeserializeOwned>(text: String) -> Result<T, StoreError> {
    serde_json::from_value(serde_json::Value::String(text))
        .map_err(|e| StoreError::Corrupt(format!("an unknown name: {e}")))
}

pub(super) fn hash(bytes: &[u8]) -> Result<Hash, StoreError> {
    <[u8; 32]>::try_from(bytes)
        .map(Hash)
        .map_err(|_| StoreError::Corrupt("a hash is not 32 bytes".into()))
}

pub(super) fn seq(value: i64) -> Result<u64, StoreError> {
    u64::try_from(value).map_err(|_| StoreError::Corrupt("a negative sequence".into()))
}

/// A u64 the application counts (sequences, epochs) as the bigint that stores it.
pub(super) fn big(value: u64) -> Result<i64, StoreError> {
    i64::try_from(value)
        .map_err(|_| StoreError::Backend("a sequence beyond the range of bigint".into()))
}

pub(super) fn uuids<T>(values: &[T], id: fn(&T) -> Uuid) -> Vec<Uuid> {
    values.iter().map(id).collect()
}

pub(super) fn org(row: &Row) -> Result<Org, StoreError> {
    Ok(Org {
        org_id: OrgId(col(row, "org_id")?),
        name: col(row, "name")?,
    })
}

pub(super) fn team(row: &Row) -> Result<Team, StoreError> {
    Ok(Team {
        team_id: TeamId(col(row, "team_id")?),
        org_id: OrgId(col(row, "org_id")?),
        name: col(row, "name")?,
    })
}

/// `Txn::org_and_teams`'s rows: the organisation's columns prefixed `o_` on each, a team's
/// unprefixed (NULL on the one row of no team).
pub(super) fn org_and_teams(found: &[Row]) -> Result<(Option<Org>, Vec<Team>), StoreError> {
    let org = match found.first() {
        Some(row) => match col::<Option<Uuid>>(row, "o_org_id")? {
            Some(id) => Some(Org {
                org_id: OrgId(id),
                name: col(row, "o_name")?,
            }),
            None => None,
        },
        None => None,
    };
    let mut teams = Vec::new();
    for row in found {
        if col::<Option<Uuid>>(row, "team_id")?.is_some() {
            teams.push(team(row)?);
        }
    }
    Ok((org, teams))
}

pub(super) fn staff(row: &Row) -> Result<Staff, StoreError> {
    staff_at(row, "")
}

/// Column `name` under `prefix` (a join's alias for one table's columns; none for the table's
/// own rows, which then cost no allocation).
fn prefixed(prefix: &str, name: &'static str) -> std::borrow::Cow<'static, str> {
    if prefix.is_empty() {
        name.into()
    } else {
        format!("{prefix}{name}").into()
    }
}

/// A member of staff from the columns named `prefix` + the table's column names.
fn staff_at(row: &Row, prefix: &str) -> Result<Staff, StoreError> {
    let c = |name: &'static str| prefixed(prefix, name);
    let teams: Vec<Uuid> = col(row, &c("teams"))?;
    Ok(Staff {
        staff_id: StaffId(col(row, &c("staff_id"))?),
        name: col(row, &c("name"))?,
        role: text_enum(col(row, &c("role"))?)?,
        org_id: OrgId(col(row, &c("org_id"))?),
        teams: teams.into_iter().map(TeamId).collect(),
        revoked: col(row, &c("revoked"))?,
    })
}

pub(super) fn device(row: &Row) -> Result<Device, StoreError> {
    device_at(row, "")
}

/// A device from the columns named `prefix` + the table's column names.
fn device_at(row: &Row, prefix: &str) -> Result<Device, StoreError> {
    let c = |name: &'static str| prefixed(prefix, name);
    Ok(Device {
        device_id: DeviceId(col(row, &c("device_id"))?),
        staff_id: StaffId(col(row, &c("staff_id"))?),
        name: col(row, &c("name"))?,
        created_ms: col(row, &c("created_ms"))?,
        revoked: col(row, &c("revoked"))?,
        token_sha256: col(row, &c("token_sha256"))?,
    })
}

pub(super) fn token(row: &Row) -> Result<TokenRecord, StoreError> {
    Ok(TokenRecord {
        device_id: DeviceId(col(row, "device_id")?),
        staff_id: StaffId(col(row, "staff_id")?),
        revoked: col(row, "revoked")?,
    })
}

/// A token's row joined with its device's and its member of staff's (columns prefixed `d_` and
/// `s_`, all NULL where the join found none) and a meta value.
pub(super) fn credentials(row: &Row) -> Result<crate::store::Credentials, StoreError> {
    let joined = |prefix: &str| col::<Option<Uuid>>(row, &format!("{prefix}_id"));
    Ok(crate::store::Credentials {
        token: token(row)?,
        device: match joined("d_device")? {
            Some(_) => Some(device_at(row, "d_")?),
            None => None,
        },
        staff: match joined("s_staff")? {
            Some(_) => Some(staff_at(row, "s_")?),
            None => None,
        },
        meta: col(row, "meta")?,
    })
}

/// `Txn::sync_basis`'s row: the device's state unprefixed (`d_device_id` NULL for none), the
/// member of staff's columns prefixed `s_`.
pub(super) fn sync_basis(row: &Row) -> Result<SyncBasis, StoreError> {
    Ok(SyncBasis {
        last_seq: Seq(seq(col(row, "last_seq")?)?),
        state: match col::<Option<Uuid>>(row, "d_device_id")? {
            Some(_) => Some(device_sync(row)?),
            None => None,
        },
        access_epoch: seq(col(row, "access_epoch")?)?,
        staff: match col::<Option<Uuid>>(row, "s_staff_id")? {
            Some(_) => Some(staff_at(row, "s_")?),
            None => None,
        },
        meta: col(row, "meta")?,
    })
}

pub(super) fn case(row: &Row) -> Result<CaseRecord, StoreError> {
    case_at(row, "")
}

/// A case from the columns named `prefix` + the table's column names.
fn case_at(row: &Row, prefix: &str) -> Result<CaseRecord, StoreError> {
    let c = |name: &'static str| prefixed(prefix, name);
    let teams: Vec<Uuid> = col(row, &c("teams"))?;
    Ok(CaseRecord {
        case_id: CaseId(col(row, &c("case_id"))?),
        owner_org: OrgId(col(row, &c("owner_org"))?),
        teams: teams.into_iter().map(TeamId).collect(),
        created_ms: col(row, &c("created_ms"))?,
    })
}

/// A document's row joined with its case's (columns prefixed `c_`, all NULL where the join
/// found none).
pub(super) fn doc_and_case(row: &Row) -> Result<(DocRecord, Option<CaseRecord>), StoreError> {
    let case = match col::<Option<Uuid>>(row, "c_case_id")? {
        Some(_) => Some(case_at(row, "c_")?),
        None => None,
    };
    Ok((doc(row)?, case))
}

pub(super) fn doc(row: &Row) -> Result<DocRecord, StoreError> {
    let access: Option<Vec<Uuid>> = col(row, "access_teams")?;
    let heads: Vec<Vec<u8>> = col(row, "heads")?;
    let ops: i64 = col(row, "ops")?;
    Ok(DocRecord {
        header: DocHeader {
            doc_id: DocId(col(row, "doc_id")?),
            case_id: CaseId(col(row, "case_id")?),
            kind: text_enum(col(row, "kind")?)?,
            owner_org: OrgId(col(row, "owner_org")?),
            access_teams: access.map(|t| t.into_iter().map(TeamId).collect()),
            created_by: StaffId(col(row, "created_by")?),
            created_ms: col(row, "created_ms")?,
            sealed: col(row, "sealed")?,
            grants: grants(col(row, "grants")?)?,
        },
        heads: heads.iter().map(|h| hash(h)).collect::<Result<_, _>>()?,
        ops: seq(ops)?,
        filed_ms: col(row, "filed_ms")?,
    })
}

/// A document's break-glass grants, kept as JSON text (NULL for none).
fn grants(text: Option<String>) -> Result<Vec<crate::model::Grant>, StoreError> {
    match text {
        None => Ok(Vec::new()),
        Some(t) => serde_json::from_str(&t)
            .map_err(|e| StoreError::Corrupt(format!("a document's grants do not decode: {e}"))),
    }
}

/// `Txn::push_facts`'s one row; `held` are the asked hashes this transaction appended.
pub(super) fn push_facts(row: &Row, mut held: HashSet<Hash>) -> Result<PushFacts, StoreError> {
    let record = match col::<Option<Uuid>>(row, "doc_id")? {
        Some(_) => Some(doc_and_case(row)?),
        None => None,
    };
    let hashes = |name| -> Result<HashSet<Hash>, StoreError> {
        col::<Vec<Vec<u8>>>(row, name)?
            .iter()
            .map(|h| hash(h))
            .collect()
    };
    held.extend(hashes("f_held")?);
    let mut refused = hashes("f_refused")?;
    refused.retain(|h| !held.contains(h));
    let actor: Vec<Vec<u8>> = col::<Option<_>>(row, "a_actor")?.unwrap_or_default();
    let staff: Vec<Uuid> = col::<Option<_>>(row, "a_staff")?.unwrap_or_default();
    let device: Vec<Uuid> = col::<Option<_>>(row, "a_device")?.unwrap_or_default();
    let first: Vec<i64> = col::<Option<_>>(row, "a_first_seen")?.unwrap_or_default();
    let actors = (actor.into_iter().zip(staff).zip(device).zip(first))
        .map(|(((a, s), d), f)| {
            let binding = ActorBinding {
                staff_id: StaffId(s),
                device_id: DeviceId(d),
                first_seen_ms: f,
            };
            (a, binding)
        })
        .collect();
    Ok(PushFacts {
        record,
        held,
        refused,
        actors,
        access_epoch: Some(seq(col(row, "f_epoch")?)?),
    })
}

pub(super) fn actor(row: &Row) -> Result<ActorBinding, StoreError> {
    Ok(ActorBinding {
        staff_id: StaffId(col(row, "staff_id")?),
        device_id: DeviceId(col(row, "device_id")?),
        first_seen_ms: col(row, "first_seen_ms")?,
    })
}

pub(super) fn device_sync(row: &Row) -> Result<DeviceSync, StoreError> {
    let epoch: Option<i64> = col(row, "reconciled_epoch")?;
    let pending: Option<serde_json::Value> = col(row, "pending")?;
    Ok(DeviceSync {
        reconciled_epoch: epoch.map(seq).transpose()?,
        pending: pending
            .map(serde_json::from_value)
            .transpose()
            .map_err(|e| StoreError::Corrupt(format!("a pending reconciliation: {e}")))?,
    })
}

pub(super) fn quarantine(row: &Row) -> Result<QuarantineEntry, StoreError> {
    let h: Vec<u8> = col(row, "hash")?;
    Ok(QuarantineEntry {
        doc_id: DocId(col(row, "doc_id")?),
        hash: hash(&h)?,
        bytes: col(row, "bytes")?,
        reason: col(row, "reason")?,
        staff_id: StaffId(col(row, "staff_id")?),
        device_id: DeviceId(col(row, "device_id")?),
        at_ms: col(row, "at_ms")?,
    })
}
