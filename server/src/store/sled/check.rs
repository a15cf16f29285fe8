//! The check at open: does what sled recovered reach what the store acknowledged?
//!
//! Every check is O(1) (a handful of point reads at the tail of the log and the audit log, and
//! two meta values), so opening a store of a million documents costs the same as a small one.
//! The whole store is checked end to end only by `verify` ([`super::verify`]).

use super::codec::{seq_from, LOG_ID_KEY, MARKED_KEY};
use super::mark::{Found, Mark};
use super::trees::{parse_log, Sled, Tip};
use crate::model::AuditEntry;
use crate::store::StoreError;

/// What sled recovered that falls short of the mark, one plain sentence per finding (sequences
/// and counts only). Empty when nothing acknowledged is missing.
pub(super) fn compare(
    s: &Sled,
    tip: Tip,
    flush_gen: u64,
    found: Found,
) -> Result<Vec<String>, StoreError> {
    let mark = match found {
        Found::Valid { mark, .. } => mark,
        Found::Missing if s.meta.contains_key(MARKED_KEY)? => {
            return Ok(vec![
                "the acknowledged high-water mark file is missing, so what the store had \
                 acknowledged is unknown"
                    .into(),
            ])
        }
        Found::Missing => return Ok(Vec::new()),
        Found::Unreadable => {
            return Ok(vec![
                "the acknowledged high-water mark file is unreadable (both its copies fail \
                 their checksum), so what the store had acknowledged is unknown"
                    .into(),
            ])
        }
    };
    let mut findings = Vec::new();
    let log_id = s.meta.get(LOG_ID_KEY)?;
    if log_id.as_deref() != Some(mark.log_id.as_bytes().as_slice()) {
        findings.push(format!(
            "the store's log id is not the acknowledged one ({}): these files are not the \
             ones the mark describes",
            mark.log_id
        ));
    }
    findings.extend(log_finding(s, tip, &mark)?);
    findings.extend(audit_finding(s, &mark)?);
    if flush_gen < mark.flush_gen {
        findings.push(format!(
            "flush {} was acknowledged but the store recovered only up to flush {flush_gen}: \
             writes after it were lost",
            mark.flush_gen
        ));
    }
    Ok(findings)
}

fn log_finding(s: &Sled, tip: Tip, mark: &Mark) -> Result<Option<String>, StoreError> {
    if tip.seq < mark.log_seq {
        return Ok(Some(format!(
            "the change log ends at seq {}, but changes up to seq {} were acknowledged \
             ({} lost)",
            tip.seq,
            mark.log_seq,
            mark.log_seq - tip.seq
        )));
    }
    if mark.log_seq == 0 {
        return Ok(None);
    }
    let same = match s.log.get(mark.log_seq.to_be_bytes())? {
        Some(v) => parse_log(&v)
            .map(|e| e.chain == mark.chain)
            .unwrap_or(false),
        None => false,
    };
    Ok((!same).then(|| {
        format!(
            "the change log at seq {} is not what was acknowledged (its hash chain differs)",
            mark.log_seq
        )
    }))
}

fn audit_finding(s: &Sled, mark: &Mark) -> Result<Option<String>, StoreError> {
    let last = match s.audit.last()? {
        Some((k, _)) => seq_from(&k)?,
        None => 0,
    };
    if last < mark.audit_seq {
        return Ok(Some(format!(
            "the audit log ends at entry {last}, but entries up to {} were acknowledged",
            mark.audit_seq
        )));
    }
    if mark.audit_seq == 0 {
        return Ok(None);
    }
    let same = match s.audit.get(mark.audit_seq.to_be_bytes())? {
        Some(v) => serde_json::from_slice::<AuditEntry>(&v)
            .map(|e| e.hash == hex::encode(mark.audit_hash))
            .unwrap_or(false),
        None => false,
    };
    Ok((!same).then(|| {
        format!(
            "audit entry {} is not the one acknowledged (its hash differs)",
            mark.audit_seq
        )
    }))
}
