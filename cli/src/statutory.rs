//! The commands of the statutory record: `assessment`, `discharge`, `referral`,
//! `safeguarding`, `legal` and `contact`. Each is a thin call into client-core, which checks
//! every value as the server does; new records print their id.

use crate::args::{
    AssessmentCmd, ContactCmd, DischargeCmd, LegalCmd, ReferralCmd, SafeguardingCmd, SetArgs,
};
use anyhow::Result;
use casenote_client_core::Device;

/// The fields given, as (schema name, value) pairs.
fn given<'a>(pairs: &[(&'a str, &'a Option<String>)]) -> Vec<(&'a str, &'a str)> {
    pairs
        .iter()
        .filter_map(|(k, v)| v.as_deref().map(|v| (*k, v)))
        .collect()
}

pub fn assessment(device: &Device, cmd: AssessmentCmd) -> Result<()> {
    match cmd {
        AssessmentCmd::New { case_id, ty } => out!("{}", device.assessment_new(case_id, &ty)?),
        AssessmentCmd::Set(SetArgs { id, field, value }) => {
            device.assessment_set(id, &field, &value)?
        }
        AssessmentCmd::Test {
            id,
            test,
            result,
            evidence,
        } => device.assessment_test(id, &test, &result, &evidence)?,
        AssessmentCmd::Consult {
            id,
            name,
            relationship,
            view,
        } => out!(
            "{}",
            device.assessment_consult(id, &name, &relationship, &view)?
        ),
        AssessmentCmd::Complete { id } => device.assessment_complete(id)?,
        AssessmentCmd::Amend {
            id,
            reason,
            correction,
        } => {
            let kind = if correction { "correction" } else { "addendum" };
            out!("{}", device.assessment_amend(id, kind, &reason)?)
        }
    }
    Ok(())
}

pub fn discharge(device: &Device, cmd: DischargeCmd) -> Result<()> {
    match cmd {
        DischargeCmd::New { case_id } => out!("{}", device.discharge_new(case_id)?),
        DischargeCmd::Set(SetArgs { id, field, value }) => {
            device.discharge_set(id, &field, &value)?
        }
        DischargeCmd::Equipment { id, item, status } => {
            out!("{}", device.discharge_equipment(id, &item, &status)?)
        }
    }
    Ok(())
}

pub fn referral(device: &Device, cmd: ReferralCmd) -> Result<()> {
    match cmd {
        ReferralCmd::New {
            case_id,
            source,
            urgency,
            reason,
        } => out!(
            "{}",
            device.referral_new(case_id, &source, &urgency, &reason)?
        ),
        ReferralCmd::Set(SetArgs { id, field, value }) => {
            device.referral_set(id, &field, &value)?
        }
        ReferralCmd::Triage { id, decision } => device.referral_triage(id, &decision)?,
    }
    Ok(())
}

pub fn safeguarding(device: &Device, cmd: SafeguardingCmd) -> Result<()> {
    match cmd {
        SafeguardingCmd::New {
            case_id,
            concern,
            access,
        } => {
            let access = crate::sealed::access_list(device, &access)?;
            out!(
                "{}",
                device.safeguarding_new_with(case_id, &concern, access.as_ref())?
            )
        }
        SafeguardingCmd::Set(SetArgs { id, field, value }) => {
            device.safeguarding_set(id, &field, &value)?
        }
    }
    Ok(())
}

pub fn legal(device: &Device, cmd: LegalCmd) -> Result<()> {
    match cmd {
        LegalCmd::Add {
            case_id,
            kind,
            detail,
            scope,
            start,
            end,
        } => {
            let kind = Some(kind.replace('-', "_"));
            let scope = scope.map(|s| s.replace('-', "_"));
            let fields = given(&[
                ("kind", &kind),
                ("detail", &detail),
                ("scope", &scope),
                ("start", &start),
                ("end", &end),
            ]);
            out!("{}", device.legal_add(case_id, &fields)?)
        }
        LegalCmd::End { case_id, id, date } => device.legal_end(case_id, &id, &date)?,
    }
    Ok(())
}

pub fn contact(device: &Device, cmd: ContactCmd) -> Result<()> {
    match cmd {
        ContactCmd::Add {
            case_id,
            role,
            name,
            relationship,
            phone,
            may_decide,
            notes,
        } => {
            let role = Some(role.replace('-', "_"));
            let name = Some(name);
            let may_decide = may_decide.map(|s| s.replace('-', "_"));
            let fields = given(&[
                ("role", &role),
                ("name", &name),
                ("relationship", &relationship),
                ("phone", &phone),
                ("may_decide", &may_decide),
                ("notes", &notes),
            ]);
            out!("{}", device.contact_add(case_id, &fields)?)
        }
    }
    Ok(())
}
