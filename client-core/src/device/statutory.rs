//! The device API of the statutory record: assessments, discharge, referrals, safeguarding
//! enquiries, and the legal status and contacts inside the case document.
//!
//! Each edit goes through the record's tables (`casenote_protocol::record::statutory`), which
//! check vocabularies, dates and identifiers exactly as the server does, so an edit the server
//! would refuse is refused here first, with the reason, before it is stored. Fields are named by
//! path (`tests.understand.result`, `day_one_welfare_check.due`); a name written with dashes is
//! read as the schema's with underscores (an entry's id keeps its dashes).

use super::{case_doc, Device};
use crate::error::Error;
use crate::store::Header;
use automerge::AutoCommit;
use casenote_protocol::record::schema::{self, Table};
use casenote_protocol::record::statutory::{self, AssessmentAmends};
use casenote_protocol::record::{self, RecordError};
use casenote_protocol::{CaseId, DocId, DocKind};

/// A path as the schema spells it: `tests.use-or-weigh.result` is `tests.use_or_weigh.result`;
/// an entry id (a uuid) keeps its dashes.
fn path_of(path: &str) -> Vec<String> {
    path.split('.')
        .map(|seg| {
            if uuid::Uuid::parse_str(seg).is_ok() {
                seg.to_string()
            } else {
                seg.replace('-', "_")
            }
        })
        .collect()
}

fn table(doc: &AutoCommit, kind: DocKind) -> Result<Table, Error> {
    statutory::table_of(doc, kind)
        .ok_or_else(|| RecordError::Invalid(kind.as_str(), "it has no table".into()).into())
}

fn what(kind: DocKind) -> &'static str {
    kind.as_str()
}

impl Device {
    /// Creates a new document of a statutory `kind` on `case`, written by `init`.
    fn statutory_new(
        &self,
        case: CaseId,
        kind: DocKind,
        init: impl FnOnce(&mut AutoCommit) -> Result<(), RecordError>,
    ) -> Result<DocId, Error> {
        self.require_case(case)?;
        let id = DocId::new_random();
        let header = Header {
            case_id: case,
            kind,
        };
        self.edit(id, header, None, |d| Ok(init(d)?))?;
        Ok(id)
    }

    /// Sets the field at `path` of a statutory document of `kind` (a completed assessment
    /// refuses).
    fn statutory_set(
        &self,
        doc_id: DocId,
        kind: DocKind,
        path: &str,
        value: &str,
    ) -> Result<(), Error> {
        let now = self.now();
        let path = path_of(path);
        let path: Vec<&str> = path.iter().map(String::as_str).collect();
        self.edit_existing(doc_id, kind, what(kind), |d| {
            if kind == DocKind::Assessment {
                statutory::ensure_in_progress(d, doc_id)?;
            }
            let t = table(d, kind)?;
            Ok(statutory::set_field(d, &t, &path, value, now)?)
        })
    }

    /// Adds an entry to the entries map at `path` of a statutory document; returns its id.
    fn statutory_entry(
        &self,
        doc_id: DocId,
        kind: DocKind,
        path: &[&str],
        fields: &[(&str, &str)],
    ) -> Result<String, Error> {
        let now = self.now();
        self.edit_existing(doc_id, kind, what(kind), |d| {
            if kind == DocKind::Assessment {
                statutory::ensure_in_progress(d, doc_id)?;
            }
            let t = table(d, kind)?;
            Ok(statutory::add_entry(d, &t, path, fields, now)?)
        })
    }

    /// Starts an assessment of type `ty` (`mca`, `needs`, `carers`, `early_help`) on a case.
    pub fn assessment_new(&self, case: CaseId, ty: &str) -> Result<DocId, Error> {
        let now = self.now();
        let ty = ty.replace('-', "_");
        self.statutory_new(case, DocKind::Assessment, |d| {
            statutory::init_assessment(d, case, &ty, now, None)
        })
    }

    /// Sets one field of an assessment in progress (`outcome`, `tests.retain.result`,
    /// `best_interests.rationale`...).
    pub fn assessment_set(&self, id: DocId, path: &str, value: &str) -> Result<(), Error> {
        self.statutory_set(id, DocKind::Assessment, path, value)
    }

    /// Records one functional test of a capacity assessment: its result and evidence.
    pub fn assessment_test(
        &self,
        id: DocId,
        test: &str,
        result: &str,
        evidence: &str,
    ) -> Result<(), Error> {
        let test = test.replace('-', "_");
        self.assessment_set(id, &format!("tests.{test}.result"), result)?;
        self.assessment_set(id, &format!("tests.{test}.evidence"), evidence)
    }

    /// Adds someone consulted about a best-interests decision; returns the entry's id.
    pub fn assessment_consult(
        &self,
        id: DocId,
        name: &str,
        relationship: &str,
        view: &str,
    ) -> Result<String, Error> {
        self.statutory_entry(
            id,
            DocKind::Assessment,
            &["best_interests", "consulted"],
            &[
                ("name", name),
                ("relationship", relationship),
                ("view", view),
            ],
        )
    }

    /// Completes an assessment (its completion rules first); from then on it never changes.
    pub fn assessment_complete(&self, id: DocId) -> Result<(), Error> {
        let by = self.whoami()?.staff_id.to_string();
        let now = self.now();
        self.edit_existing(id, DocKind::Assessment, "assessment", |d| {
            Ok(statutory::complete_assessment(d, id, &by, now)?)
        })
    }

    /// Amends a completed assessment with a new assessment of the same type that points at it
    /// (`kind`: `addendum` or `correction`), in progress; returns its id.
    pub fn assessment_amend(&self, id: DocId, kind: &str, reason: &str) -> Result<DocId, Error> {
        let (doc, _) = self.load_kind(id, DocKind::Assessment, "assessment")?;
        if !statutory::assessment_completed(&doc) {
            return Err(RecordError::AssessmentInProgress(id).into());
        }
        let ty = record::get_str(&doc, &automerge::ROOT, "type").unwrap_or_default();
        let case = self
            .store
            .header(id)?
            .map(|h| h.case_id)
            .ok_or_else(|| Error::NotFound("assessment", id.to_string()))?;
        let amends = AssessmentAmends {
            assessment_id: id,
            kind: kind.to_string(),
            reason: reason.to_string(),
        };
        let now = self.now();
        self.statutory_new(case, DocKind::Assessment, |d| {
            statutory::init_assessment(d, case, &ty, now, Some(&amends))
        })
    }

    /// Opens a discharge (one per hospital episode) on a case.
    pub fn discharge_new(&self, case: CaseId) -> Result<DocId, Error> {
        self.statutory_new(case, DocKind::Discharge, |d| {
            statutory::init_discharge(d, case)
        })
    }

    /// Sets a discharge field (`pathway`, `expected_discharge_date`,
    /// `day_one_welfare_check.due`...).
    pub fn discharge_set(&self, id: DocId, path: &str, value: &str) -> Result<(), Error> {
        self.statutory_set(id, DocKind::Discharge, path, value)
    }

    /// Adds a piece of equipment to a discharge; returns the entry's id.
    pub fn discharge_equipment(
        &self,
        id: DocId,
        item: &str,
        status: &str,
    ) -> Result<String, Error> {
        self.statutory_entry(
            id,
            DocKind::Discharge,
            &["equipment"],
            &[("item", item), ("status", status)],
        )
    }

    /// Records a referral on a case, pending triage.
    pub fn referral_new(
        &self,
        case: CaseId,
        source: &str,
        urgency: &str,
        reason: &str,
    ) -> Result<DocId, Error> {
        let (source, urgency) = (source.replace('-', "_"), urgency.replace('-', "_"));
        self.statutory_new(case, DocKind::Referral, |d| {
            statutory::init_referral(d, case, &source, &urgency, reason)
        })
    }

    /// Sets a referral field (`urgency`, `reason`...).
    pub fn referral_set(&self, id: DocId, path: &str, value: &str) -> Result<(), Error> {
        self.statutory_set(id, DocKind::Referral, path, value)
    }

    /// Records the triage decision, by this member of staff, now.
    pub fn referral_triage(&self, id: DocId, decision: &str) -> Result<(), Error> {
        let by = self.whoami()?.staff_id.to_string();
        let now = self.now();
        let decision = decision.replace('-', "_");
        self.edit_existing(id, DocKind::Referral, "referral", |d| {
            let t = table(d, DocKind::Referral)?;
            statutory::set_field(d, &t, &["triage_decision"], &decision, now)?;
            statutory::set_field(d, &t, &["triaged_by"], &by, now)?;
            use automerge::transaction::Transactable;
            d.put(automerge::ROOT, "triaged_at_ms", now)
                .map_err(RecordError::from)?;
            Ok(())
        })
    }

    /// Opens a safeguarding enquiry on a case with its concern; it is restricted to the teams of
    /// the member of staff who opens it (the server fixes the list).
    pub fn safeguarding_new(&self, case: CaseId, concern: &str) -> Result<DocId, Error> {
        self.statutory_new(case, DocKind::Safeguarding, |d| {
            statutory::init_safeguarding(d, case, concern)
        })
    }

    /// Sets a safeguarding field (`s42_decision`, `outcomes_met`,
    /// `alleged_source_of_harm.description`...).
    pub fn safeguarding_set(&self, id: DocId, path: &str, value: &str) -> Result<(), Error> {
        self.statutory_set(id, DocKind::Safeguarding, path, value)
    }

    /// Adds a legal status to a case (`kind`: `mha_section`, `dols`, `lps`, `lpa`,
    /// `court_order`; the other fields as the schema names them); returns its id.
    pub fn legal_add(&self, case: CaseId, fields: &[(&str, &str)]) -> Result<String, Error> {
        self.require_case(case)?;
        let mut all: Vec<(&str, &str)> = fields.to_vec();
        if !all.iter().any(|(k, _)| *k == "status") {
            all.push(("status", "active"));
        }
        self.statutory_entry(case_doc(case), DocKind::Case, &["legal_status"], &all)
    }

    /// Ends a legal status on `date` (`YYYY-MM-DD`).
    pub fn legal_end(&self, case: CaseId, id: &str, date: &str) -> Result<(), Error> {
        self.require_case(case)?;
        let now = self.now();
        self.edit_existing(case_doc(case), DocKind::Case, "case", |d| {
            let t = schema::CASE_TABLE;
            statutory::set_field(d, &t, &["legal_status", id, "end"], date, now)?;
            Ok(statutory::set_field(
                d,
                &t,
                &["legal_status", id, "status"],
                "ended",
                now,
            )?)
        })
    }

    /// Adds a contact to a case (`role`: `carer`, `next_of_kin`, `attorney`, `deputy`,
    /// `advocate`, `nearest_relative`); returns its id.
    pub fn contact_add(&self, case: CaseId, fields: &[(&str, &str)]) -> Result<String, Error> {
        self.require_case(case)?;
        self.statutory_entry(case_doc(case), DocKind::Case, &["contacts"], fields)
    }
}
