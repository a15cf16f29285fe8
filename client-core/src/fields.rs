//! The one spelling of every field a person names: the record schema's own
//! (`casenote_protocol::record::field`), as `conflicts` prints paths and `show --json` shows keys.
//!
//! People type `discharge-date` as readily as `discharge_date`; a field name written with dashes
//! is read as the schema's name with underscores (never an id: ids keep their dashes), and the
//! caller can tell the user which name was used. A name that is not in the schema is
//! [`Error::UnknownField`], naming the valid ones, rather than an edit of a field nobody reads or
//! a "nothing to resolve" that hides the typo.

use crate::error::Error;
use casenote_protocol::record::field;

/// Plan fields set with a single value (`Device::plan_set`).
pub const PLAN_SETTABLE: &[&str] = &[field::DISCHARGE_DATE, field::PATHWAY];

/// Scalar fields at the root of a document that two people can write at once.
const ROOT_SCALARS: &[&str] = &[
    field::NAME,
    field::NHS_NUMBER,
    field::DOB,
    field::ADDRESS,
    field::DISCHARGE_DATE,
    field::PATHWAY,
    "title",
];

/// Maps of entries keyed by id, and the scalar fields of their entries.
const ENTRY_MAPS: &[(&str, &[&str])] = &[
    (
        field::ALERTS,
        &["text", field::STATUS, field::RAISED_BY, field::RAISED_AT],
    ),
    (
        field::TEAM,
        &[
            field::ORG,
            field::TEAM,
            field::ROLE,
            field::WORKER,
            field::STAFF_ID,
        ],
    ),
    (field::GOALS, &["text", field::STATUS]),
    (
        field::ACTIONS,
        &[field::WHAT, field::WHO, field::BY, field::STATUS],
    ),
];

/// `name` in the schema's spelling, if it is `one` of `names` written either way.
fn spelled<'a>(name: &str, names: &[&'a str]) -> Option<&'a str> {
    let underscored = name.replace('-', "_");
    names.iter().copied().find(|n| *n == underscored)
}

/// The plan field `name` names (`discharge-date` is `discharge_date`).
pub fn plan_field(name: &str) -> Result<&'static str, Error> {
    spelled(name, PLAN_SETTABLE).ok_or_else(|| Error::UnknownField {
        given: name.to_string(),
        valid: PLAN_SETTABLE.join(" or "),
    })
}

/// A scalar field of a statutory table (`expected_discharge_date`, `tests.retain.result`,
/// `legal_status.ID.end`), in the schema's spelling (an entry's id keeps its dashes).
fn statutory_path(path: &[String]) -> Option<Vec<String>> {
    use casenote_protocol::record::schema::{self, Node, Val};
    let spelled: Vec<String> = path
        .iter()
        .map(|seg| {
            if uuid::Uuid::parse_str(seg).is_ok() {
                seg.clone()
            } else {
                seg.replace('-', "_")
            }
        })
        .collect();
    let segs: Vec<&str> = spelled.iter().map(String::as_str).collect();
    let mut tables = vec![
        schema::CASE_TABLE,
        schema::table("discharge", schema::DISCHARGE),
        schema::table("referral", schema::REFERRAL),
        schema::table("safeguarding", schema::SAFEGUARDING),
    ];
    for ty in casenote_protocol::record::vocab::ASSESSMENT_TYPES {
        tables.push(schema::assessment_table(Some(ty)));
    }
    tables.iter().find_map(|t| match t.resolve(&segs) {
        Some((Node::V(v), _)) if v != Val::Text => Some(spelled.clone()),
        _ => None,
    })
}

/// What `resolve` accepts, for the message that names it.
fn resolvable() -> String {
    let mut valid: Vec<String> = ROOT_SCALARS.iter().map(|f| f.to_string()).collect();
    for (map, fields) in ENTRY_MAPS {
        valid.push(format!("{map}.ID.{}", fields.join("|")));
    }
    valid.push(format!("{}.KEY", field::LEGAL_STATUS));
    valid.push(
        "a field of an assessment, discharge, referral or safeguarding document \
         (expected_discharge_date, tests.retain.result...), legal_status.ID.FIELD, contacts.ID.FIELD"
            .into(),
    );
    valid.join(", ")
}

/// The path of a field a person settles, in the schema's spelling: a root scalar, an entry's
/// field (`alerts.ID.status`), or a legal status (`legal_status.KEY`).
pub fn resolvable_path(path: &[String]) -> Result<Vec<String>, Error> {
    let unknown = || Error::UnknownField {
        given: path.join("."),
        valid: resolvable(),
    };
    if let Some(found) = statutory_path(path) {
        return Ok(found);
    }
    match path {
        [one] => Ok(vec![spelled(one, ROOT_SCALARS).ok_or_else(unknown)?.into()]),
        [map, key] if spelled(map, &[field::LEGAL_STATUS]).is_some() => {
            Ok(vec![field::LEGAL_STATUS.into(), key.clone()])
        }
        [map, id, name] => {
            let (map, fields) = ENTRY_MAPS
                .iter()
                .find(|(m, _)| spelled(map, &[m]).is_some())
                .ok_or_else(unknown)?;
            let name = spelled(name, fields).ok_or_else(unknown)?;
            Ok(vec![map.to_string(), id.clone(), name.into()])
        }
        _ => Err(unknown()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(s: &str) -> Vec<String> {
        s.split('.').map(str::to_string).collect()
    }

    #[test]
    fn a_field_is_read_in_either_spelling_and_an_unknown_one_names_the_valid_ones() {
        assert_eq!(plan_field("discharge-date").unwrap(), "discharge_date");
        assert_eq!(plan_field("discharge_date").unwrap(), "discharge_date");
        assert_eq!(plan_field("pathway").unwrap(), "pathway");
        let err = plan_field("discharge").unwrap_err().to_string();
        assert!(
            err.contains("discharge_date") && err.contains("pathway"),
            "{err}"
        );

        let id = "0b7c3a4e-1f2d-4e5f-8a9b-0c1d2e3f4a5b";
        assert_eq!(
            resolvable_path(&path("discharge-date")).unwrap(),
            path("discharge_date")
        );
        assert_eq!(
            resolvable_path(&path(&format!("alerts.{id}.status"))).unwrap(),
            path(&format!("alerts.{id}.status")),
            "an id keeps its dashes"
        );
        assert_eq!(
            resolvable_path(&path(&format!("team.{id}.worker"))).unwrap(),
            path(&format!("team.{id}.worker"))
        );
        assert_eq!(
            resolvable_path(&path("legal-status.mca")).unwrap(),
            path("legal_status.mca")
        );
        for bad in [
            "dischargedate",
            "alerts.x",
            "alerts.x.colour",
            "narrative",
            "a.b.c.d",
            "",
        ] {
            let err = resolvable_path(&path(bad)).unwrap_err().to_string();
            assert!(
                err.contains("unknown field") && err.contains("discharge_date"),
                "{err}"
            );
        }
    }
}
