//! Device tokens: issuing, revoking and checking them.
//!
//! A token is `cn_` followed by 32 random bytes in hex. The server keeps only its sha256, mapped to
//! the device and staff member it was issued for, so a copy of the store does not let anyone sign
//! in. Each token enrols one device; revoking the device (a lost tablet) ends the token, and
//! revoking a member of staff (a leaver) ends every token of theirs. A revoked token is told so
//! ([`Authenticated::Revoked`], answered `device_revoked` so that the device wipes itself); an
//! unknown one is not. Enrolments and revocations are audited here, in the caller's transaction,
//! with who did them ([`By`]); [`crate::admin`] decides whether they may happen.
//!
//! Admin tokens ([`AdminToken`]) are a second kind: `cna_` and 32 random bytes, kept only as
//! their sha256, in one meta value ([`ADMIN_TOKENS_KEY`], a JSON list: a handful of operators,
//! read whole on each admin request, written in the issuing transaction). They open the admin API
//! and nothing else; a device token never opens it, and an admin token is never a device's.
//!
//! It may read and write the store through a transaction and use the model.

use crate::model::{AdminToken, AuditKind, AuditRecord, By, Device, Staff, TokenRecord};
use crate::store::{read, Credentials, Store, StoreError, Txn};
use casenote_protocol::{DeviceId, OrgId, StaffId, TeamId};
use rand::RngCore;
use serde_json::json;
use sha2::{Digest, Sha256};

/// Every token starts with this, so a leaked one is easy to recognise in logs and scanners.
pub const TOKEN_PREFIX: &str = "cn_";

/// The sha256 of a token, the only form in which the server keeps it.
pub fn token_hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Every admin token starts with this (not with [`TOKEN_PREFIX`]: the two kinds never meet).
pub const ADMIN_TOKEN_PREFIX: &str = "cna_";

pub use crate::model::directory::ADMIN_TOKENS_KEY;

/// A fresh random token.
pub fn new_token() -> String {
    random_token(TOKEN_PREFIX)
}

fn random_token(prefix: &str) -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    format!("{prefix}{}", hex::encode(bytes))
}

/// Every admin token, revoked ones included.
pub fn admin_tokens(txn: &mut dyn Txn) -> Result<Vec<AdminToken>, StoreError> {
    match txn.meta(ADMIN_TOKENS_KEY)? {
        None => Ok(Vec::new()),
        Some(bytes) => serde_json::from_slice(&bytes)
            .map_err(|e| StoreError::Corrupt(format!("the admin tokens do not parse: {e}"))),
    }
}

fn put_admin_tokens(txn: &mut dyn Txn, tokens: &[AdminToken]) -> Result<(), StoreError> {
    let bytes = serde_json::to_vec(tokens)
        .map_err(|e| StoreError::Task(format!("could not encode the admin tokens: {e}")))?;
    txn.put_meta(ADMIN_TOKENS_KEY, &bytes)
}

/// A freshly issued admin token; the token is shown once and never stored.
#[derive(Clone, Debug)]
pub struct IssuedAdmin {
    pub admin: AdminToken,
    pub token: String,
}

/// Issues an admin token labelled `name` (audited `admin`, action `admin_token_issue`, with its
/// id and never its name), in the caller's transaction.
pub fn issue_admin(
    txn: &mut dyn Txn,
    name: &str,
    now_ms: i64,
    by: By,
) -> Result<IssuedAdmin, StoreError> {
    let token = random_token(ADMIN_TOKEN_PREFIX);
    let admin = AdminToken {
        admin_id: uuid::Uuid::new_v4(),
        name: name.to_string(),
        created_ms: now_ms,
        revoked: false,
        token_sha256: hex::encode(token_hash(&token)),
    };
    let mut all = admin_tokens(txn)?;
    all.push(admin.clone());
    put_admin_tokens(txn, &all)?;
    let details = json!({"action": "admin_token_issue", "admin_id": admin.admin_id});
    txn.audit_append(AuditRecord::new(AuditKind::Admin, now_ms, details).by(by))?;
    Ok(IssuedAdmin { admin, token })
}

/// Revokes the admin token `admin_id` (audited `admin`, action `admin_token_revoke`); `None`
/// when there is none. Revoking twice is harmless.
pub fn revoke_admin(
    txn: &mut dyn Txn,
    admin_id: uuid::Uuid,
    now_ms: i64,
    by: By,
) -> Result<Option<AdminToken>, StoreError> {
    let mut all = admin_tokens(txn)?;
    let Some(found) = all.iter_mut().find(|a| a.admin_id == admin_id) else {
        return Ok(None);
    };
    found.revoked = true;
    let revoked = found.clone();
    put_admin_tokens(txn, &all)?;
    let details = json!({"action": "admin_token_revoke", "admin_id": admin_id});
    txn.audit_append(AuditRecord::new(AuditKind::Admin, now_ms, details).by(by))?;
    Ok(Some(revoked))
}

/// The live admin token `token` is, if it is one (an unknown, revoked or device token is not).
pub fn authenticate_admin(
    store: &dyn Store,
    token: &str,
) -> Result<Option<AdminToken>, StoreError> {
    if !token.starts_with(ADMIN_TOKEN_PREFIX) {
        return Ok(None);
    }
    let hash = hex::encode(token_hash(token));
    let all = read(store, admin_tokens)?;
    Ok(all
        .into_iter()
        .find(|a| !a.revoked && a.token_sha256 == hash))
}

/// Who is making a request: the device, its staff member and what they belong to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    pub device_id: DeviceId,
    pub staff: Staff,
    /// What their organisation may read of other controllers' documents, as of this request
    /// ([`crate::controllers`]).
    pub shares: std::sync::Arc<crate::controllers::Shares>,
}

impl Principal {
    pub fn staff_id(&self) -> StaffId {
        self.staff.staff_id
    }
    pub fn teams(&self) -> &[TeamId] {
        &self.staff.teams
    }
}

/// A freshly issued token and the device it enrols. The token is shown once and never stored.
#[derive(Clone, Debug)]
pub struct Issued {
    pub device: Device,
    pub token: String,
}

/// Enrols a new device for `staff` and returns its token: the device, its token's hash and the
/// audit entry, in the caller's transaction. Whether `staff` may have a device is the caller's
/// to decide ([`crate::admin::issue_token`]).
pub fn issue(
    txn: &mut dyn Txn,
    staff: &Staff,
    device_name: &str,
    now_ms: i64,
    by: By,
) -> Result<Issued, StoreError> {
    let token = new_token();
    let hash = token_hash(&token);
    let device = Device {
        device_id: DeviceId::new_random(),
        staff_id: staff.staff_id,
        name: device_name.to_string(),
        created_ms: now_ms,
        revoked: false,
        token_sha256: hex::encode(hash),
    };
    txn.put_device(&device)?;
    txn.put_token(
        &hash,
        &TokenRecord {
            device_id: device.device_id,
            staff_id: staff.staff_id,
            revoked: false,
        },
    )?;
    txn.audit_append(
        AuditRecord::new(AuditKind::Enrol, now_ms, json!({}))
            .by(by)
            .staff(staff.staff_id)
            .device(device.device_id),
    )?;
    Ok(Issued { device, token })
}

/// Revokes a device and its token (audited `token_revoke`); `None` when there is no such device.
/// Revoking twice is harmless.
pub fn revoke(
    txn: &mut dyn Txn,
    id: DeviceId,
    now_ms: i64,
    by: By,
) -> Result<Option<Device>, StoreError> {
    let Some(device) = revoke_device(txn, id)? else {
        return Ok(None);
    };
    txn.audit_append(
        AuditRecord::new(AuditKind::TokenRevoke, now_ms, json!({}))
            .by(by)
            .staff(device.staff_id)
            .device(device.device_id),
    )?;
    Ok(Some(device))
}

/// Revokes a member of staff and every device of theirs (audited `staff_revoke`); returns the
/// devices, or `None` when there is no such member of staff. Revoking twice is harmless.
pub fn revoke_staff(
    txn: &mut dyn Txn,
    staff_id: StaffId,
    now_ms: i64,
    by: By,
) -> Result<Option<Vec<DeviceId>>, StoreError> {
    let Some(mut staff) = txn.staff(staff_id)? else {
        return Ok(None);
    };
    staff.revoked = true;
    txn.put_staff(&staff)?;
    let mut devices = Vec::new();
    for d in txn.devices()? {
        if d.staff_id == staff_id {
            revoke_device(txn, d.device_id)?;
            devices.push(d.device_id);
        }
    }
    txn.audit_append(
        AuditRecord::new(
            AuditKind::StaffRevoke,
            now_ms,
            json!({ "devices": devices }),
        )
        .by(by)
        .staff(staff_id),
    )?;
    Ok(Some(devices))
}

fn revoke_device(txn: &mut dyn Txn, id: DeviceId) -> Result<Option<Device>, StoreError> {
    let Some(mut device) = txn.device(id)? else {
        return Ok(None);
    };
    if let Ok(bytes) = hex::decode(&device.token_sha256) {
        if let Ok(hash) = <[u8; 32]>::try_from(bytes.as_slice()) {
            if let Some(mut rec) = txn.token(&hash)? {
                rec.revoked = true;
                txn.put_token(&hash, &rec)?;
            }
        }
    }
    device.revoked = true;
    txn.put_device(&device)?;
    // Its store's escrowed key goes too: a wipe of a revoked device can never be undone
    // (`crate::escrow`).
    txn.escrow_remove(id)?;
    Ok(Some(device))
}

/// What a bearer token turned out to be.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Authenticated {
    /// A live token.
    Ok(Principal),
    /// A token the server issued and then revoked (its device, or its staff member): the device
    /// must wipe itself. Only the holder of the token can get this answer.
    Revoked {
        device_id: DeviceId,
        staff_id: StaffId,
    },
    /// No such token.
    Unknown,
}

/// Looks a token up.
///
/// One read of the store on the way ([`Store::credentials`]: one statement on PostgreSQL); a
/// store without the organisations' sharing value (from before agreements) is read as it always
/// was, in a transaction.
pub fn authenticate(store: &dyn Store, token: &str) -> Result<Authenticated, StoreError> {
    if !token.starts_with(TOKEN_PREFIX) {
        return Ok(Authenticated::Unknown);
    }
    let Some(mut c) = store.credentials(&token_hash(token), crate::controllers::META_KEY)? else {
        return Ok(Authenticated::Unknown);
    };
    match c.meta.take() {
        Some(sharing) => answer(c, |org| shares_in(&sharing, org)),
        None => read(store, |txn| authenticate_in(txn, token)),
    }
}

/// [`authenticate`] without reading the store: the principal of `token` when the store holds its
/// credentials in memory ([`Store::credentials_cached`]) and they let it in; `None` otherwise
/// (unknown here, or refused: the caller then authenticates on the blocking pool, which reads,
/// and audits a refusal). Never blocks, so it runs on the request's async thread.
pub fn authenticate_cached(store: &dyn Store, token: &str) -> Option<Principal> {
    if !token.starts_with(TOKEN_PREFIX) {
        return None;
    }
    let mut c = store.credentials_cached(&token_hash(token), crate::controllers::META_KEY)?;
    let sharing = c.meta.take()?;
    match answer(c, |org| shares_in(&sharing, org)) {
        Ok(Authenticated::Ok(p)) => Some(p),
        _ => None,
    }
}

/// Looks a token up in `txn`.
pub fn authenticate_in(txn: &mut dyn Txn, token: &str) -> Result<Authenticated, StoreError> {
    if !token.starts_with(TOKEN_PREFIX) {
        return Ok(Authenticated::Unknown);
    }
    let found =
        crate::store::credentials_in(txn, &token_hash(token), crate::controllers::META_KEY)?;
    let Some(mut c) = found else {
        return Ok(Authenticated::Unknown);
    };
    match c.meta.take() {
        Some(sharing) => answer(c, |org| shares_in(&sharing, org)),
        // A store from before agreements: its sharing is derived from its organisations.
        None => answer(c, |org| crate::controllers::shares_of(txn, org)),
    }
}

/// What an organisation's stored sharing value lets it read of other controllers' documents.
fn shares_in(
    sharing: &[u8],
    org: OrgId,
) -> Result<std::sync::Arc<crate::controllers::Shares>, StoreError> {
    Ok(crate::controllers::shares_in(
        &crate::controllers::decode(sharing)?,
        org,
    ))
}

/// What the records `c` of a token say: its principal, with what `shares` gives its member of
/// staff's organisation, or the refusal ([`judge`]).
fn answer(
    c: Credentials,
    shares: impl FnOnce(OrgId) -> Result<std::sync::Arc<crate::controllers::Shares>, StoreError>,
) -> Result<Authenticated, StoreError> {
    match judge(&c.token, c.device.as_ref(), c.staff) {
        Ok(staff) => Ok(Authenticated::Ok(Principal {
            device_id: c.token.device_id,
            shares: shares(staff.org_id)?,
            staff,
        })),
        Err(refused) => Ok(refused),
    }
}

/// The member of staff a token of record `rec` speaks for, given its device's and its staff's
/// records; else the answer: revoked (the token, the device or the member of staff), or unknown
/// (a device or member of staff gone from the store).
fn judge(
    rec: &TokenRecord,
    device: Option<&Device>,
    staff: Option<Staff>,
) -> Result<Staff, Authenticated> {
    let revoked = Authenticated::Revoked {
        device_id: rec.device_id,
        staff_id: rec.staff_id,
    };
    if rec.revoked {
        return Err(revoked);
    }
    match device {
        Some(d) if !d.revoked => {}
        Some(_) => return Err(revoked),
        None => return Err(Authenticated::Unknown),
    }
    match staff {
        Some(staff) if staff.revoked => Err(revoked),
        Some(staff) => Ok(staff),
        None => Err(Authenticated::Unknown),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::{self, add_org, add_staff, add_team};

    #[test]
    fn a_token_works_until_its_device_is_revoked() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::sled::open(dir.path()).unwrap();
        add_org(&*store, "O").unwrap();
        add_team(&*store, "O", "T").unwrap();
        let staff = add_staff(&*store, "S", "gp", "O", &["T".into()]).unwrap();
        let issued = testkit::issue(&*store, &staff, "laptop", 0).unwrap();
        assert!(issued.token.starts_with("cn_"));
        assert_eq!(issued.token.len(), 3 + 64);
        let Authenticated::Ok(who) = authenticate(&*store, &issued.token).unwrap() else {
            panic!("a fresh token must work");
        };
        assert_eq!(who.staff_id(), staff.staff_id);
        assert_eq!(
            authenticate(&*store, "cn_nope").unwrap(),
            Authenticated::Unknown
        );
        testkit::revoke(&*store, issued.device.device_id, 0);
        assert!(matches!(
            authenticate(&*store, &issued.token).unwrap(),
            Authenticated::Revoked { device_id, .. } if device_id == issued.device.device_id
        ));
    }

    #[test]
    fn a_token_is_let_in_from_memory_until_what_it_stands_for_changes() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::sled::open(dir.path()).unwrap();
        add_org(&*store, "O").unwrap();
        add_team(&*store, "O", "T").unwrap();
        let other = add_team(&*store, "O", "U").unwrap();
        let staff = add_staff(&*store, "S", "gp", "O", &["T".into()]).unwrap();
        let issued = testkit::issue(&*store, &staff, "laptop", 0).unwrap();
        let cached = || authenticate_cached(&*store, &issued.token);
        assert_eq!(cached(), None, "nothing read yet");
        let who = testkit::principal(&*store, &issued.token);
        assert_eq!(cached(), Some(who.clone()));
        let entry = AuditRecord::new(AuditKind::Sync, 1, json!({}));
        crate::store::write(&*store, |t| t.audit_append(entry.clone())).unwrap();
        assert_eq!(cached(), Some(who), "a write of other records keeps it");

        crate::admin::staff_add_team(&*store, By::Cli, staff.staff_id, other.team_id, 2).unwrap();
        assert_eq!(cached(), None, "the member of staff changed");
        let moved = testkit::principal(&*store, &issued.token);
        assert!(moved.teams().contains(&other.team_id));
        assert_eq!(cached(), Some(moved));

        let sharing = crate::controllers::Sharing::default();
        crate::store::write(&*store, |t| crate::controllers::put(t, &sharing)).unwrap();
        assert_eq!(cached(), None, "the organisations' sharing changed");
        testkit::principal(&*store, &issued.token);
        assert!(cached().is_some());

        testkit::revoke(&*store, issued.device.device_id, 3);
        assert_eq!(cached(), None, "the device was revoked");
        assert!(matches!(
            authenticate(&*store, &issued.token).unwrap(),
            Authenticated::Revoked { .. }
        ));
        assert_eq!(cached(), None, "a refusal is never answered from memory");
    }

    #[test]
    fn revoking_a_member_of_staff_revokes_every_device_of_theirs_and_no_new_one_is_enrolled() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::sled::open(dir.path()).unwrap();
        add_org(&*store, "O").unwrap();
        add_team(&*store, "O", "T").unwrap();
        let staff = add_staff(&*store, "S", "gp", "O", &["T".into()]).unwrap();
        let other = add_staff(&*store, "U", "gp", "O", &["T".into()]).unwrap();
        let a = testkit::issue(&*store, &staff, "phone", 0).unwrap();
        let b = testkit::issue(&*store, &staff, "laptop", 0).unwrap();
        let c = testkit::issue(&*store, &other, "laptop", 0).unwrap();
        let devices = crate::admin::revoke_staff(&*store, By::Cli, staff.staff_id, 1).unwrap();
        assert_eq!(devices.len(), 2);
        for t in [&a.token, &b.token] {
            assert!(matches!(
                authenticate(&*store, t).unwrap(),
                Authenticated::Revoked { .. }
            ));
        }
        assert!(matches!(
            authenticate(&*store, &c.token).unwrap(),
            Authenticated::Ok(_)
        ));
        assert!(matches!(
            testkit::issue(&*store, &staff, "new", 2),
            Err(crate::admin::AdminError::StaffRevoked(_))
        ));
    }
}
