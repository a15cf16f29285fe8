//! `CasenoteDevice`: one encrypted case record store on the device, as an object apps hold.
//!
//! A thin layer over [`casenote_client_core::Device`]: it parses ids, converts records and maps
//! errors, and adds nothing else, so the bindings behave exactly as the CLI does. `Device` is
//! `Sync` and its methods take `&self`, so one object may be shared by the app's threads (UniFFI
//! hands it out as an `Arc`). Every method blocks: call it off the UI thread.

use crate::error::CasenoteError;
use crate::types::{
    parse_case_id, parse_doc_id, Alert, AmendKind, CaseSummary, Conflict, DeviceStatus, Freshness,
    NewCase, NoteKind, SyncReport, WhoAmI,
};
use casenote_client_core::crypto::KEY_BYTES;
use casenote_client_core::lease::{self, Uptime, UptimeClock};
use casenote_client_core::store::Unlock;
use casenote_client_core::tls::{Endpoint, ServerOptions};
use casenote_client_core::{Clocks, Device, StoreKey};
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use zeroize::Zeroize;

/// A case record store on this device, encrypted under a key the app keeps in the platform's key
/// store, signed in as one member of staff.
#[derive(uniffi::Object)]
pub struct CasenoteDevice {
    inner: Device,
}

type Result<T> = std::result::Result<T, CasenoteError>;

/// The app's key bytes as a store key; the copy that crossed the boundary is zeroed (StoreKey
/// zeroes its own on drop). Not 32 bytes: `InvalidInput`.
fn store_key(mut key: Vec<u8>) -> Result<StoreKey> {
    let len = key.len();
    let parsed = StoreKey::from_slice(&key);
    key.zeroize();
    parsed.map_err(|_| {
        CasenoteError::invalid(format!(
            "a store key is {KEY_BYTES} bytes; this one is {len} bytes"
        ))
    })
}

/// The device's monotonic clock, which the offline lease counts with, so that a wrong date on
/// the device neither wipes it early nor keeps it alive. Android:
/// `SystemClock.elapsedRealtime()` and the boot count (`Settings.Global.BOOT_COUNT`) as the id;
/// iOS: `clock_gettime_nsec_np(CLOCK_MONOTONIC) / 1_000_000` (it counts sleep) and the
/// `kern.bootsessionuuid` sysctl. Without one the lease uses the kernel's clock on Android and
/// Linux, and the wall clock elsewhere.
#[uniffi::export(with_foreign)]
pub trait ElapsedClock: Send + Sync {
    /// Milliseconds since the device booted, sleep included.
    fn elapsed_realtime_ms(&self) -> i64;
    /// An id of this boot: it changes when the device restarts.
    fn boot_id(&self) -> String;
}

/// The server an app signs in to, checked before anything is sent: `ca_pem`, the PEM
/// certificate(s) of the organisation's own CA, trusted instead of the built-in public roots;
/// `allow_insecure_http`, plain `http://` to a host that is not this device's loopback (the token
/// and case notes then cross the network unencrypted). A malformed address, plain http not
/// allowed, or a CA that is not usable PEM is `InvalidInput`.
fn endpoint(server: &str, ca_pem: Option<String>, allow_insecure_http: bool) -> Result<Endpoint> {
    let options = ServerOptions {
        ca_pem: ca_pem.map(String::into_bytes),
        allow_insecure_http,
    };
    Ok(Endpoint::new(server, options)?)
}

/// The clocks a store is opened with: the app's monotonic clock if it passes one.
fn clocks(clock: Option<Arc<dyn ElapsedClock>>) -> Clocks {
    let uptime: UptimeClock = match clock {
        Some(c) => Arc::new(move || {
            Some(Uptime {
                boot_id: c.boot_id(),
                ms: c.elapsed_realtime_ms(),
            })
        }),
        None => lease::system_uptime(),
    };
    Clocks {
        uptime,
        ..Clocks::system()
    }
}

#[uniffi::export]
impl CasenoteDevice {
    /// Opens (or creates) the store in `dir`, encrypted under `key` (32 bytes: keep them in
    /// Android Keystore or the iOS Keychain, never beside the store). A key that did not create
    /// the store is `WrongKey`, before anything is read; a key that is not 32 bytes is
    /// `InvalidInput`. A device past its offline lease's wipe time wipes itself here
    /// (`ExpiredAndWiped`); a locked one opens, and `login` unlocks it.
    /// `clock`: the device's monotonic clock ([`ElapsedClock`]), for the offline lease.
    #[uniffi::constructor(default(clock = None))]
    pub fn open(
        dir: String,
        key: Vec<u8>,
        clock: Option<Arc<dyn ElapsedClock>>,
    ) -> Result<Arc<Self>> {
        let store_key = store_key(key)?;
        let inner = Device::open_with(Path::new(&dir), Unlock::Key(&store_key), clocks(clock))?;
        Ok(Arc::new(Self { inner }))
    }

    /// Opens the store in `dir` and signs it in to `server` with `token`, bringing back a store
    /// that the offline lease wiped (`ExpiredAndWiped`), unsynced edits included: the server
    /// hands its key only to the same member of staff, and never for a revoked device
    /// (`Unrecoverable`). What to call when `open` says `ExpiredAndWiped`. `server` is
    /// `https://host[:port]`; `ca_pem` and `allow_insecure_http` as for `login`.
    #[uniffi::constructor(default(clock = None, ca_pem = None, allow_insecure_http = false))]
    pub fn sign_in(
        dir: String,
        key: Vec<u8>,
        server: String,
        token: String,
        clock: Option<Arc<dyn ElapsedClock>>,
        ca_pem: Option<String>,
        allow_insecure_http: bool,
    ) -> Result<Arc<Self>> {
        let server = endpoint(&server, ca_pem, allow_insecure_http)?;
        let store_key = store_key(key)?;
        let (inner, _) = Device::sign_in_to(
            Path::new(&dir),
            Unlock::Key(&store_key),
            clocks(clock),
            &server,
            &token,
        )?;
        Ok(Arc::new(Self { inner }))
    }

    /// Opens (or creates) the slot of one user on a shared device (a ward tablet): the store
    /// under `root` that `key` names and encrypts (`casenote_client_core::SharedDevice`). The
    /// directory's name is derived from the key, so it says nothing about whose it is, and no
    /// other user's key opens it. On a user switch the app releases the previous user's object
    /// (Kotlin `destroy()`, Swift: drop the last reference), which closes that store, then opens
    /// the next user's slot.
    #[uniffi::constructor(default(clock = None))]
    pub fn open_user_slot(
        root: String,
        key: Vec<u8>,
        clock: Option<Arc<dyn ElapsedClock>>,
    ) -> Result<Arc<Self>> {
        let store_key = store_key(key)?;
        let dir = casenote_client_core::SharedDevice::new(Path::new(&root)).slot_dir(&store_key);
        let inner = Device::open_with(&dir, Unlock::Key(&store_key), clocks(clock))?;
        Ok(Arc::new(Self { inner }))
    }

    /// [`CasenoteDevice::sign_in`] for one user's slot on a shared device.
    #[uniffi::constructor(default(clock = None, ca_pem = None, allow_insecure_http = false))]
    pub fn sign_in_user_slot(
        root: String,
        key: Vec<u8>,
        server: String,
        token: String,
        clock: Option<Arc<dyn ElapsedClock>>,
        ca_pem: Option<String>,
        allow_insecure_http: bool,
    ) -> Result<Arc<Self>> {
        let slot = casenote_client_core::SharedDevice::new(Path::new(&root));
        let dir = slot.slot_dir(&store_key(key.clone())?);
        Self::sign_in(
            dir.to_string_lossy().into_owned(),
            key,
            server,
            token,
            clock,
            ca_pem,
            allow_insecure_http,
        )
    }

    /// Signs the store in to `server` (`https://host[:port]`) with the device token an
    /// administrator issued, after checking it with the server. Signing in again unlocks a locked
    /// device. `ca_pem`: the PEM certificate(s) of the organisation's own CA, trusted instead of
    /// the built-in public roots; `allow_insecure_http`: plain `http://` to a host that is not
    /// this device's loopback (never needed for `http://127.0.0.1`). The store keeps both for
    /// later syncs. A server whose certificate is not trusted is `Untrusted`, and nothing is sent.
    #[uniffi::method(default(ca_pem = None, allow_insecure_http = false))]
    pub fn login(
        &self,
        server: String,
        token: String,
        ca_pem: Option<String>,
        allow_insecure_http: bool,
    ) -> Result<WhoAmI> {
        let server = endpoint(&server, ca_pem, allow_insecure_http)?;
        Ok(self.inner.login_to(&server, &token)?.into())
    }

    /// Who the store is signed in as (no network).
    pub fn whoami(&self) -> Result<WhoAmI> {
        Ok(self.inner.whoami()?.into())
    }

    /// Opens a new case (its record and its plan); returns the case id.
    pub fn case_new(&self, person: NewCase) -> Result<String> {
        Ok(self.inner.case_new(&person.into())?.to_string())
    }

    /// Every case on the device, by name.
    pub fn cases(&self) -> Result<Vec<CaseSummary>> {
        Ok(self
            .inner
            .cases()?
            .into_iter()
            .map(CaseSummary::from)
            .collect())
    }

    /// Adds a draft note to a case; returns the note id. `occurred_at_ms` defaults to now.
    #[uniffi::method(default(occurred_at_ms = None))]
    pub fn note_add(
        &self,
        case_id: String,
        kind: NoteKind,
        text: String,
        occurred_at_ms: Option<i64>,
    ) -> Result<String> {
        let case = parse_case_id(&case_id)?;
        Ok(self
            .inner
            .note_add(case, kind.into(), &text, occurred_at_ms)?
            .to_string())
    }

    /// Replaces a draft note's text. A filed note is `Refused`: amend it instead.
    pub fn note_edit(&self, note_id: String, text: String) -> Result<()> {
        Ok(self
            .inner
            .note_edit(parse_doc_id(&note_id, "note")?, &text)?)
    }

    /// Files a draft note: from now on it never changes. A note filed more than a day after it
    /// happened needs a `late_entry_reason`.
    #[uniffi::method(default(late_entry_reason = None))]
    pub fn note_file(&self, note_id: String, late_entry_reason: Option<String>) -> Result<()> {
        Ok(self.inner.note_file_with(
            parse_doc_id(&note_id, "note")?,
            late_entry_reason.as_deref(),
        )?)
    }

    /// Amends a filed note with a new note that points at it (filed at once); returns its id.
    pub fn note_amend(
        &self,
        note_id: String,
        kind: AmendKind,
        reason: String,
        text: String,
    ) -> Result<String> {
        Ok(self
            .inner
            .note_amend(
                parse_doc_id(&note_id, "note")?,
                kind.as_str(),
                &reason,
                &text,
            )?
            .to_string())
    }

    /// Appends to the plan's narrative.
    pub fn plan_append(&self, case_id: String, text: String) -> Result<()> {
        Ok(self.inner.plan_append(parse_case_id(&case_id)?, &text)?)
    }

    /// Adds a goal to the plan; returns its id.
    pub fn goal_add(&self, case_id: String, text: String) -> Result<String> {
        Ok(self.inner.goal_add(parse_case_id(&case_id)?, &text)?)
    }

    /// Adds an action to the plan (what, who, by when); returns its id.
    pub fn action_add(
        &self,
        case_id: String,
        what: String,
        who: String,
        by_when: String,
    ) -> Result<String> {
        Ok(self
            .inner
            .action_add(parse_case_id(&case_id)?, &what, &who, &by_when)?)
    }

    /// Sets the status of a plan action, or of a goal when `goal` is true.
    pub fn action_status(
        &self,
        case_id: String,
        id: String,
        status: String,
        goal: bool,
    ) -> Result<()> {
        Ok(self
            .inner
            .action_status(parse_case_id(&case_id)?, &id, &status, goal)?)
    }

    /// Appends to the person's About Me.
    pub fn about_me_append(&self, case_id: String, text: String) -> Result<()> {
        Ok(self
            .inner
            .about_me_append(parse_case_id(&case_id)?, &text)?)
    }

    /// Raises an alert on a case; returns its id.
    pub fn alert_add(&self, case_id: String, text: String) -> Result<String> {
        Ok(self.inner.alert_add(parse_case_id(&case_id)?, &text)?)
    }

    /// The whole case as JSON text: record, plan, notes (with what amends what), restricted
    /// sections and conflicts. Content only, so it is identical on every device that holds the
    /// same changes. The view is audited: recorded on the device before it returns, and sent to
    /// the server's audit chain at the next sync.
    pub fn show(&self, case_id: String) -> Result<String> {
        Ok(self.inner.show(parse_case_id(&case_id)?)?.to_string())
    }

    /// `show`, for a copy the app gives out whole (a file, a share): audited as an export.
    pub fn export(&self, case_id: String) -> Result<String> {
        Ok(self.inner.export(parse_case_id(&case_id)?)?.to_string())
    }

    /// A case's alerts, active first, each with when it was raised and its age. Audited as a
    /// view.
    pub fn alerts(&self, case_id: String) -> Result<Vec<Alert>> {
        Ok(self
            .inner
            .alerts(parse_case_id(&case_id)?)?
            .into_iter()
            .map(Alert::from)
            .collect())
    }

    /// How old this device's records are: show a warning when `stale` (more than 12 hours since
    /// the last finished sync, or never synced).
    pub fn freshness(&self) -> Result<Freshness> {
        Ok(self.inner.freshness()?.into())
    }

    /// Every field of a case's documents that holds concurrent values.
    pub fn conflicts(&self, case_id: String) -> Result<Vec<Conflict>> {
        Ok(self
            .inner
            .conflicts(parse_case_id(&case_id)?)?
            .into_iter()
            .map(Conflict::from)
            .collect())
    }

    /// Settles a conflicted field with `value`; the resolution is recorded in the document.
    /// `doc_id` may be left out when only one document of the case has a conflict at `path`.
    /// Returns the id of the document it settled.
    #[uniffi::method(default(doc_id = None))]
    pub fn resolve(
        &self,
        case_id: String,
        path: Vec<String>,
        value: String,
        doc_id: Option<String>,
    ) -> Result<String> {
        let doc = doc_id
            .as_deref()
            .map(|d| parse_doc_id(d, "document"))
            .transpose()?;
        Ok(self
            .inner
            .resolve(parse_case_id(&case_id)?, doc, &path, &value)?
            .to_string())
    }

    /// Sends local edits and fetches colleagues' until there is nothing more to exchange. With
    /// no network this is `Unreachable` and nothing is lost: call it again when online.
    pub fn sync(&self) -> Result<SyncReport> {
        Ok(self.inner.sync()?.into())
    }

    /// Unsynced work, refusals, payload sizes, the last sync and the offline lease (no network;
    /// works on a locked device too).
    pub fn status(&self) -> Result<DeviceStatus> {
        Ok(self.inner.status()?.into())
    }

    /// Deletes every record, the token and the sign-in, files included.
    pub fn wipe(&self) -> Result<()> {
        Ok(self.inner.wipe()?)
    }

    /// Lets go of the store's files until the next call, which opens them again (waiting for
    /// another process that holds them, then `Busy`). For an app whose background sync runs in
    /// another process: each side releases when it is done, so the other can open the store.
    pub fn release(&self) {
        self.inner.release()
    }

    /// Sets a plan field: `discharge_date` or `pathway` (written with dashes, the same); any
    /// other name is `InvalidInput`, naming the valid ones.
    pub fn plan_set(&self, case_id: String, field: String, value: String) -> Result<()> {
        Ok(self
            .inner
            .plan_set(parse_case_id(&case_id)?, &field, &value)?)
    }

    /// Starts an assessment (`mca`, `needs`, `carers`, `early_help`) on a case; returns its id.
    pub fn assessment_new(&self, case_id: String, assessment_type: String) -> Result<String> {
        Ok(self
            .inner
            .assessment_new(parse_case_id(&case_id)?, &assessment_type)?
            .to_string())
    }

    /// Sets one field of an assessment in progress by its path (`outcome`,
    /// `tests.retain.result`, `best_interests.rationale`...); a completed one is `Refused`.
    pub fn assessment_set(&self, id: String, field: String, value: String) -> Result<()> {
        Ok(self
            .inner
            .assessment_set(parse_doc_id(&id, "assessment")?, &field, &value)?)
    }

    /// Adds someone consulted about a best-interests decision; returns the entry's id.
    pub fn assessment_consult(
        &self,
        id: String,
        name: String,
        relationship: String,
        view: String,
    ) -> Result<String> {
        Ok(self.inner.assessment_consult(
            parse_doc_id(&id, "assessment")?,
            &name,
            &relationship,
            &view,
        )?)
    }

    /// Completes an assessment (its completion rules first: `Refused` with the reason).
    pub fn assessment_complete(&self, id: String) -> Result<()> {
        Ok(self
            .inner
            .assessment_complete(parse_doc_id(&id, "assessment")?)?)
    }

    /// Amends a completed assessment with a new one that points at it; returns its id.
    pub fn assessment_amend(&self, id: String, kind: AmendKind, reason: String) -> Result<String> {
        Ok(self
            .inner
            .assessment_amend(parse_doc_id(&id, "assessment")?, kind.as_str(), &reason)?
            .to_string())
    }

    /// Opens a discharge (one per hospital episode); returns its id.
    pub fn discharge_new(&self, case_id: String) -> Result<String> {
        Ok(self
            .inner
            .discharge_new(parse_case_id(&case_id)?)?
            .to_string())
    }

    /// Sets a discharge field by its path (`pathway`, `expected_discharge_date`...).
    pub fn discharge_set(&self, id: String, field: String, value: String) -> Result<()> {
        Ok(self
            .inner
            .discharge_set(parse_doc_id(&id, "discharge")?, &field, &value)?)
    }

    /// Adds a piece of equipment to a discharge; returns the entry's id.
    pub fn discharge_equipment(&self, id: String, item: String, status: String) -> Result<String> {
        Ok(self
            .inner
            .discharge_equipment(parse_doc_id(&id, "discharge")?, &item, &status)?)
    }

    /// Records a referral, pending triage; returns its id.
    pub fn referral_new(
        &self,
        case_id: String,
        source: String,
        urgency: String,
        reason: String,
    ) -> Result<String> {
        Ok(self
            .inner
            .referral_new(parse_case_id(&case_id)?, &source, &urgency, &reason)?
            .to_string())
    }

    /// Records the triage decision, by this member of staff, now.
    pub fn referral_triage(&self, id: String, decision: String) -> Result<()> {
        Ok(self
            .inner
            .referral_triage(parse_doc_id(&id, "referral")?, &decision)?)
    }

    /// Opens a safeguarding enquiry with its concern (restricted to the opener's teams).
    pub fn safeguarding_new(&self, case_id: String, concern: String) -> Result<String> {
        Ok(self
            .inner
            .safeguarding_new(parse_case_id(&case_id)?, &concern)?
            .to_string())
    }

    /// Opens a safeguarding enquiry with its concern, readable only by `teams` (team ids, each
    /// on the case, one of the opener's among them); `sealed`: staff on the case who are not on
    /// the list are told it exists and whom to ask, else it is hidden from them.
    pub fn safeguarding_new_restricted(
        &self,
        case_id: String,
        concern: String,
        teams: Vec<String>,
        sealed: bool,
    ) -> Result<String> {
        let access = access_list(&teams, sealed)?;
        Ok(self
            .inner
            .safeguarding_new_with(parse_case_id(&case_id)?, &concern, Some(&access))?
            .to_string())
    }

    /// Creates a restricted section (a title and its text) readable only by `teams`, sealed or
    /// hidden as [`Self::safeguarding_new_restricted`]; returns its id.
    pub fn restricted_new(
        &self,
        case_id: String,
        title: String,
        text: String,
        teams: Vec<String>,
        sealed: bool,
    ) -> Result<String> {
        let access = access_list(&teams, sealed)?;
        Ok(self
            .inner
            .restricted_new(parse_case_id(&case_id)?, &title, &text, Some(&access))?
            .to_string())
    }

    /// Asks the server, now, for urgent access to a sealed section (`category`: risk_to_life,
    /// safeguarding_emergency, urgent_care or out_of_hours; `reason`: why it cannot wait).
    /// Offline it is refused (`Unreachable`), never queued. Returns when the access ends (server
    /// time, ms since the epoch); the section arrives at the next sync.
    pub fn break_glass(&self, doc_id: String, category: String, reason: String) -> Result<i64> {
        let category = category
            .parse::<casenote_protocol::wire::BreakGlassCategory>()
            .map_err(CasenoteError::invalid)?;
        Ok(self
            .inner
            .break_glass(parse_doc_id(&doc_id, "sealed section")?, category, &reason)?
            .expires_ms)
    }

    /// Sets a safeguarding field by its path.
    pub fn safeguarding_set(&self, id: String, field: String, value: String) -> Result<()> {
        Ok(self
            .inner
            .safeguarding_set(parse_doc_id(&id, "safeguarding")?, &field, &value)?)
    }

    /// Adds a legal status (`kind`, and as given `detail`, `scope`, `start`, `end`); returns its id.
    pub fn legal_add(&self, case_id: String, fields: HashMap<String, String>) -> Result<String> {
        let pairs: Vec<(&str, &str)> = fields
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        Ok(self.inner.legal_add(parse_case_id(&case_id)?, &pairs)?)
    }

    /// Ends a legal status on a date (`YYYY-MM-DD`).
    pub fn legal_end(&self, case_id: String, id: String, date: String) -> Result<()> {
        Ok(self.inner.legal_end(parse_case_id(&case_id)?, &id, &date)?)
    }

    /// Adds a contact (`role`, `name`, and as given `relationship`, `phone`, `may_decide`,
    /// `notes`); returns its id.
    pub fn contact_add(&self, case_id: String, fields: HashMap<String, String>) -> Result<String> {
        let pairs: Vec<(&str, &str)> = fields
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        Ok(self.inner.contact_add(parse_case_id(&case_id)?, &pairs)?)
    }
}

/// An access list from team ids as the app holds them (strings).
fn access_list(teams: &[String], sealed: bool) -> Result<casenote_client_core::device::AccessList> {
    let teams = teams
        .iter()
        .map(|t| {
            t.parse::<casenote_protocol::TeamId>()
                .map_err(|_| CasenoteError::invalid(format!("not a team id: {t:?}")))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(casenote_client_core::device::AccessList { teams, sealed })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(dir: &Path, key: Vec<u8>) -> Result<Arc<CasenoteDevice>> {
        CasenoteDevice::open(dir.to_str().unwrap().to_string(), key, None)
    }

    #[test]
    fn a_key_of_the_wrong_length_is_invalid_input() {
        let tmp = tempfile::tempdir().unwrap();
        for len in [0, 16, 31, 33, 64] {
            let err = open(tmp.path(), vec![7; len]).err().unwrap();
            assert_eq!(err.kind(), "invalid_input", "{len} bytes: {err}");
        }
    }

    #[test]
    fn plain_http_off_loopback_and_an_unusable_ca_are_invalid_input_before_any_connection() {
        let tmp = tempfile::tempdir().unwrap();
        let device = open(tmp.path(), vec![1; 32]).unwrap();
        // Nothing listens at 10.255.255.1: an attempt to connect would be `Unreachable`.
        let err = device
            .login("http://10.255.255.1:9".into(), "cn_x".into(), None, false)
            .unwrap_err();
        assert_eq!(err.kind(), "invalid_input", "{err}");
        assert!(err.message().contains("unencrypted"), "{err}");
        for pem in [
            "",
            "not pem",
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        ] {
            let err = device
                .login(
                    "https://10.255.255.1:9".into(),
                    "cn_x".into(),
                    Some(pem.into()),
                    false,
                )
                .unwrap_err();
            assert_eq!(err.kind(), "invalid_input", "{pem:?}: {err}");
        }
        assert_eq!(device.whoami().unwrap_err().kind(), "not_logged_in");
    }

    #[test]
    fn another_key_is_wrong_key_and_bad_ids_are_invalid_input() {
        let tmp = tempfile::tempdir().unwrap();
        drop(open(tmp.path(), vec![1; 32]).unwrap());
        let err = open(tmp.path(), vec![2; 32]).err().unwrap();
        assert_eq!(err.kind(), "wrong_key", "{err}");

        let device = open(tmp.path(), vec![1; 32]).unwrap();
        assert_eq!(device.whoami().unwrap_err().kind(), "not_logged_in");
        for result in [
            device.show("nope".into()).map(|_| ()),
            device.plan_append("".into(), "x".into()),
            device.note_edit("12345".into(), "x".into()),
            device.note_file("{}".into(), None),
        ] {
            assert_eq!(result.unwrap_err().kind(), "invalid_input");
        }
        let missing = casenote_protocol::CaseId::new_random().to_string();
        assert_eq!(device.show(missing).unwrap_err().kind(), "not_found");
        assert_eq!(device.status().unwrap().unsynced_bytes, 0);
    }

    #[test]
    fn a_released_store_can_be_opened_by_another_holder_and_is_opened_again_on_the_next_call() {
        let tmp = tempfile::tempdir().unwrap();
        let app = open(tmp.path(), vec![1; 32]).unwrap();
        app.release();
        // A background sync (another process, in an app) opens the same store meanwhile.
        let worker = open(tmp.path(), vec![1; 32]).expect("the store was let go of");
        assert_eq!(worker.status().unwrap().unsynced_bytes, 0);
        drop(worker);
        assert_eq!(
            app.whoami().unwrap_err().kind(),
            "not_logged_in",
            "opened again"
        );
    }
}
