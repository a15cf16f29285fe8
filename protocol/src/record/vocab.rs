//! The vocabularies of the statutory record and the checks of its identifiers and dates, shared
//! by the device's record API and the server's rules so that both refuse the same things.
//!
//! Each vocabulary is a `const` list of the exact strings stored in the document. Dates are
//! `YYYY-MM-DD` strings that name a real calendar day (no date crate: the check and the day of a
//! timestamp are a few lines of arithmetic, and the workspace carries none). A date of birth is
//! not before 1900 and not after "today", which the caller passes (the device its clock, the
//! server its receipt time): protocol never reads a clock.

/// Answers to a yes-or-no question (`impairment`, `unable_to_achieve`, `eligible`...).
pub const YES_NO: &[&str] = &["yes", "no"];
/// The kinds of assessment (`type` of an assessment document).
pub const ASSESSMENT_TYPES: &[&str] = &["mca", "needs", "carers", "early_help"];
/// An assessment's `status`: co-edited while `in_progress`, never changed once `completed`.
pub const ASSESSMENT_STATUSES: &[&str] = &["in_progress", "completed"];
/// What an amendment does to the record it amends (notes and assessments alike).
pub const AMEND_KINDS: &[&str] = &["addendum", "correction"];
/// The four functional tests of the Mental Capacity Act 2005, s3(1).
pub const MCA_TESTS: &[&str] = &["understand", "retain", "use_or_weigh", "communicate"];
/// The result of one functional test.
pub const MCA_TEST_RESULTS: &[&str] = &["can", "cannot"];
/// The outcome of a capacity assessment for its one decision.
pub const MCA_OUTCOMES: &[&str] = &["has_capacity", "lacks_capacity"];
/// The ten outcomes of the Care and Support (Eligibility Criteria) Regulations 2014, reg 2(2).
pub const NEEDS_OUTCOMES: &[&str] = &[
    "nutrition",
    "personal_hygiene",
    "toilet_needs",
    "clothing",
    "home_safety",
    "habitable_home",
    "relationships",
    "work_training_education",
    "community_services",
    "caring_for_a_child",
];
/// The carer's outcomes of the same Regulations, reg 3(3).
pub const CARERS_OUTCOMES: &[&str] = &[
    "caring_for_a_child",
    "other_caring",
    "home_safety",
    "nutrition",
    "habitable_home",
    "relationships",
    "work_training_education",
    "community_services",
    "recreation",
];
/// The impact on wellbeing the eligibility test weighs.
pub const WELLBEING_IMPACTS: &[&str] = &["significant", "not_significant"];
/// Discharge to Assess pathways (0: home, no new support; 1: home with support; 2: a
/// rehabilitation bed; 3: a care home bed). Nothing else is a pathway.
pub const PATHWAYS: &[&str] = &["0", "1", "2", "3"];
/// Where a piece of equipment for discharge stands.
pub const EQUIPMENT_STATUSES: &[&str] = &["needed", "ordered", "delivered", "not_needed"];
/// Where a referral came from.
pub const REFERRAL_SOURCES: &[&str] = &[
    "gp",
    "hospital",
    "self",
    "family_or_carer",
    "police",
    "school",
    "other",
];
/// How urgent a referral is.
pub const REFERRAL_URGENCIES: &[&str] = &["routine", "urgent", "emergency"];
/// What triage decided.
pub const TRIAGE_DECISIONS: &[&str] = &["accepted", "signposted", "no_further_action", "pending"];
/// The Care Act 2014 s42 decision.
pub const S42_DECISIONS: &[&str] = &["enquiry", "no_enquiry"];
/// Whether the adult's desired outcomes were met (the Safeguarding Adults Collection's answers).
pub const OUTCOMES_MET: &[&str] = &["fully", "partially", "not", "not_yet"];
/// The only value of `third_party` on an alleged source of harm: it is third-party data.
pub const THIRD_PARTY: &[&str] = &["yes"];
/// Kinds of legal status.
pub const LEGAL_KINDS: &[&str] = &["mha_section", "dols", "lps", "lpa", "court_order"];
/// The scope of a lasting power of attorney.
pub const LPA_SCOPES: &[&str] = &["property_and_financial_affairs", "health_and_welfare"];
/// Whether a legal status is in force.
pub const LEGAL_STATUSES: &[&str] = &["active", "ended"];
/// The roles of the people around the person.
pub const CONTACT_ROLES: &[&str] = &[
    "carer",
    "next_of_kin",
    "attorney",
    "deputy",
    "advocate",
    "nearest_relative",
];
/// What an attorney or deputy may decide.
pub const MAY_DECIDE: &[&str] = &[
    "property_and_financial_affairs",
    "health_and_welfare",
    "both",
];

/// The earliest date of birth the record takes.
pub const DOB_YEAR_MIN: i64 = 1900;

const MS_PER_DAY: i64 = 86_400_000;

/// Days since 1970-01-01 of a real calendar date written `YYYY-MM-DD`, or `None`.
pub fn date_days(date: &str) -> Option<i64> {
    let b = date.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        b[r.clone()]
            .iter()
            .all(u8::is_ascii_digit)
            .then(|| date[r].parse().ok())?
    };
    let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    if !(1..=12).contains(&m) || d < 1 || d > days_in_month(y, m) {
        return None;
    }
    Some(days_from_civil(y, m, d))
}

/// Whether `date` is a real calendar date written `YYYY-MM-DD`.
pub fn date_is_valid(date: &str) -> bool {
    date_days(date).is_some()
}

/// Why `dob` is not a date of birth the record takes on `today_ms` (ms since the epoch), if it
/// is not: a fixed sentence.
pub fn dob_problem(dob: &str, today_ms: i64) -> Option<&'static str> {
    let Some(days) = date_days(dob) else {
        return Some("a date of birth is a real calendar date written YYYY-MM-DD");
    };
    if days < days_from_civil(DOB_YEAR_MIN, 1, 1) {
        return Some("a date of birth is not before 1900");
    }
    if days > today_ms.div_euclid(MS_PER_DAY) {
        return Some("a date of birth is not in the future");
    }
    None
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if y % 4 == 0 && (y % 100 != 0 || y % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's `days_from_civil`).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Whether `text` holds nothing but whitespace (an empty note).
pub fn is_blank(text: &str) -> bool {
    text.trim().is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_real_calendar_days() {
        assert_eq!(date_days("1970-01-01"), Some(0));
        assert_eq!(date_days("2000-03-01"), Some(11_017));
        assert!(date_is_valid("2024-02-29"));
        assert!(date_is_valid("2000-02-29"));
        for bad in [
            "2023-02-29",
            "1900-02-29",
            "2026-13-01",
            "2026-04-31",
            "2026-00-10",
            "2026-1-1",
            "26-01-01",
            "2026/01/01",
            "2026-01-0a",
            "+026-01-01",
            "",
            "2026-01-01T00",
        ] {
            assert!(!date_is_valid(bad), "{bad:?} passed");
        }
    }

    #[test]
    fn a_date_of_birth_is_not_in_the_future_nor_before_1900() {
        let today = date_days("2026-12-02").unwrap() * MS_PER_DAY + 5;
        assert_eq!(dob_problem("1941-03-12", today), None);
        assert_eq!(dob_problem("2026-12-02", today), None);
        assert_eq!(dob_problem("1900-01-01", today), None);
        assert!(dob_problem("2026-12-03", today).unwrap().contains("future"));
        assert!(dob_problem("1899-12-31", today).unwrap().contains("1900"));
        assert!(dob_problem("1941-02-30", today)
            .unwrap()
            .contains("calendar"));
    }
}
