//! [`PgTxn`]: the store contract's transaction on one PostgreSQL connection, and the reads of
//! committed, append-only data that run outside transactions.
//!
//! Each method is one statement (prepared once per connection), except the change log: the
//! changes a write transaction appends are kept in memory (read back by `has_change`, so the
//! transaction reads its own writes) and inserted at the end in ONE statement, under the write
//! lock, with the sequences and chain links computed from the log's tip as read under that
//! lock. A sync that stores fifty changes pays one round trip for them, not fifty, and the
//! lock every node waits on is held that much shorter.

use super::super::{PushAsk, PushFacts, StoreError, SyncBasis, Txn};
use super::rows::{self, big, col, enum_text, seq};
use super::session::{Param, Session};

/// The parameters of a statement held back ([`Session::defer`]), each owned.
macro_rules! params {
    ($($p:expr),* $(,)?) => {
        vec![$(Box::new($p) as Param),*]
    };
}
use crate::model::audit::{self as audit_model, AuditEntry, AuditRecord};
use crate::model::{chain_next, CHAIN_GENESIS};
use crate::model::{
    ActorBinding, CaseRecord, Device, DeviceSync, DocRecord, LogEntry, LoggedChange, NewChange,
    Org, QuarantineEntry, Staff, Team, TokenRecord,
};
use casenote_protocol::wire::Hash;
use casenote_protocol::{limits, CaseId, DeviceId, DocId, OrgId, Seq, StaffId, TeamId};
use std::collections::{HashMap, HashSet};
use uuid::Uuid;

/// One transaction of the PostgreSQL store.
pub(super) struct PgTxn<'s> {
    s: &'s mut Session,
    write: bool,
    /// The log's tip (sequence, chain) as of this transaction's last append, read on the first.
    tip: Option<(u64, [u8; 32])>,
    /// Changes appended and not yet inserted (see the module docs).
    appended: Vec<Appended>,
    /// (doc, hash) of every change appended, for `has_change`.
    appended_keys: HashSet<(DocId, [u8; 32])>,
    /// Bytes of the changes in `appended`.
    appended_bytes: usize,
    /// The first and last sequence this transaction appended.
    range: Option<(Seq, Seq)>,
    /// The audit log's head (seq, hash) as of this transaction's last append, read on the first.
    audit_head: Option<(u64, String)>,
}

struct Appended {
    seq: u64,
    chain: [u8; 32],
    change: NewChange,
}

/// The tips of the change log and of the audit log as a transaction last saw them, handed from
/// one writer of a shared transaction to the next ([`super::writers`]): under the write lock
/// nothing else appends to either, so the next writer need not read them again (two statements
/// a writer, inside the lock every node waits on). Only a writer whose part was kept hands its
/// tips on; an undone part leaves the tips of the writer before it, which are again true.
#[derive(Clone, Debug, Default)]
pub(super) struct Tips {
    log: Option<(u64, [u8; 32])>,
    audit: Option<(u64, String)>,
}

impl<'s> PgTxn<'s> {
    pub(super) fn new(s: &'s mut Session, write: bool) -> PgTxn<'s> {
        PgTxn::resume(s, write, Tips::default())
    }

    /// A transaction that goes on from `tips` (the last writer's of a shared transaction).
    pub(super) fn resume(s: &'s mut Session, write: bool, tips: Tips) -> PgTxn<'s> {
        PgTxn {
            s,
            write,
            tip: tips.log,
            appended: Vec::new(),
            appended_keys: HashSet::new(),
            appended_bytes: 0,
            range: None,
            audit_head: tips.audit,
        }
    }

    /// The tips this transaction knows, for the next writer (call after [`PgTxn::finish`]).
    pub(super) fn tips(&self) -> Tips {
        Tips {
            log: self.tip,
            audit: self.audit_head.clone(),
        }
    }

    /// Inserts what is still in memory (held back, for the writer's last round trip); returns
    /// the first and last sequence appended.
    pub(super) fn finish(&mut self) -> Result<Option<(Seq, Seq)>, StoreError> {
        self.insert_appended()?;
        Ok(self.range)
    }

    /// Inserts the appended changes held in memory, in one statement held back for the next
    /// round trip (the read that needs them, or the end of the writer's part).
    fn insert_appended(&mut self) -> Result<(), StoreError> {
        if self.appended.is_empty() {
            return Ok(());
        }
        let (sql, params) = self.take_appended()?;
        self.s.defer(sql, params)
    }

    /// The statement that inserts the appended changes held in memory, which it takes.
    fn take_appended(&mut self) -> Result<(&'static str, Vec<Param>), StoreError> {
        let n = self.appended.len();
        let mut seqs = Vec::with_capacity(n);
        let (mut docs, mut hashes, mut chains) = (Vec::new(), Vec::new(), Vec::new());
        let (mut received, mut bytes) = (Vec::new(), Vec::new());
        for a in std::mem::take(&mut self.appended) {
            seqs.push(big(a.seq)?);
            docs.push(a.change.doc_id.0);
            hashes.push(a.change.hash.0.to_vec());
            chains.push(a.chain.to_vec());
            received.push(a.change.received_at_ms);
            bytes.push(a.change.bytes);
        }
        self.appended_bytes = 0;
        Ok((
            "INSERT INTO change_log (seq, doc_id, hash, chain, received_ms, bytes)
             SELECT * FROM unnest($1::bigint[], $2::uuid[], $3::bytea[], $4::bytea[],
                                  $5::bigint[], $6::bytea[])",
            params![seqs, docs, hashes, chains, received, bytes],
        ))
    }

    pub(super) fn into_session(self) -> &'s mut Session {
        self.s
    }

    fn writing(&self) -> Result<(), StoreError> {
        if self.write {
            Ok(())
        } else {
            Err(StoreError::Backend(
                "a read transaction cannot write".into(),
            ))
        }
    }

    /// Those of `hashes` this transaction appended and still holds in memory (held), and the
    /// rest, to ask the database.
    fn held_in_memory<'h>(&self, doc: DocId, hashes: &'h [Hash]) -> (HashSet<Hash>, Vec<&'h [u8]>) {
        let mut held = HashSet::new();
        let mut asked = Vec::new();
        for h in hashes {
            if self.appended_keys.contains(&(doc, h.0)) {
                held.insert(*h);
            } else {
                asked.push(&h.0[..]);
            }
        }
        (held, asked)
    }

    fn tip(&mut self) -> Result<(u64, [u8; 32]), StoreError> {
        if let Some(tip) = self.tip {
            return Ok(tip);
        }
        let tip = match self.s.query_opt(
            "SELECT seq, chain FROM change_log ORDER BY seq DESC LIMIT 1",
            &[],
        )? {
            Some(row) => {
                let chain: Vec<u8> = col(&row, "chain")?;
                (seq(col(&row, "seq")?)?, rows::hash(&chain)?.0)
            }
            None => (0, CHAIN_GENESIS),
        };
        self.tip = Some(tip);
        Ok(tip)
    }

    fn head(&mut self) -> Result<(u64, String), StoreError> {
        if let Some(head) = &self.audit_head {
            return Ok(head.clone());
        }
        let head = match self
            .s
            .query_opt("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1", &[])?
        {
            Some(row) => (seq(col(&row, "seq")?)?, col(&row, "hash")?),
            None => (0, audit_model::GENESIS_HASH.to_string()),
        };
        self.audit_head = Some(head.clone());
        Ok(head)
    }

    fn all<T>(
        &mut self,
        sql: &'static str,
        map: fn(&postgres::Row) -> Result<T, StoreError>,
    ) -> Result<Vec<T>, StoreError> {
        self.s.query(sql, &[])?.iter().map(map).collect()
    }

    fn one<T>(
        &mut self,
        sql: &'static str,
        id: &Uuid,
        map: fn(&postgres::Row) -> Result<T, StoreError>,
    ) -> Result<Option<T>, StoreError> {
        self.s.query_opt(sql, &[id])?.as_ref().map(map).transpose()
    }

    /// The rows of `sql`, whose one parameter is an array of ids.
    fn any<T>(
        &mut self,
        sql: &'static str,
        ids: &[Uuid],
        map: fn(&postgres::Row) -> Result<T, StoreError>,
    ) -> Result<Vec<T>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        self.s.query(sql, &[&ids])?.iter().map(map).collect()
    }

    fn ids(&mut self, sql: &'static str, id: &Uuid) -> Result<Vec<Uuid>, StoreError> {
        self.s
            .query(sql, &[id])?
            .iter()
            .map(|r| col(r, "id"))
            .collect()
    }
}

impl Txn for PgTxn<'_> {
    fn org(&mut self, id: OrgId) -> Result<Option<Org>, StoreError> {
        self.one("SELECT * FROM orgs WHERE org_id = $1", &id.0, rows::org)
    }
    fn orgs(&mut self) -> Result<Vec<Org>, StoreError> {
        self.all("SELECT * FROM orgs ORDER BY org_id", rows::org)
    }
    fn team(&mut self, id: TeamId) -> Result<Option<Team>, StoreError> {
        self.one("SELECT * FROM teams WHERE team_id = $1", &id.0, rows::team)
    }
    fn teams(&mut self) -> Result<Vec<Team>, StoreError> {
        self.all("SELECT * FROM teams ORDER BY team_id", rows::team)
    }
    // One row per asked team that exists (one with none: NULLs), each with the organisation.
    fn org_and_teams(
        &mut self,
        org: OrgId,
        teams: &[TeamId],
    ) -> Result<(Option<Org>, Vec<Team>), StoreError> {
        let teams = rows::uuids(teams, |t| t.0);
        let found = self.s.query(
            "SELECT o.org_id AS o_org_id, o.name AS o_name, t.*
             FROM (SELECT 1) AS one
             LEFT JOIN orgs o ON o.org_id = $1
             LEFT JOIN (unnest($2::uuid[]) WITH ORDINALITY AS asked(team_id, n)
                        JOIN teams t ON t.team_id = asked.team_id) ON true
             ORDER BY asked.n",
            &[&org.0, &teams],
        )?;
        rows::org_and_teams(&found)
    }
    fn staff(&mut self, id: StaffId) -> Result<Option<Staff>, StoreError> {
        self.one(
            "SELECT * FROM staff WHERE staff_id = $1",
            &id.0,
            rows::staff,
        )
    }
    fn staff_all(&mut self) -> Result<Vec<Staff>, StoreError> {
        self.all("SELECT * FROM staff ORDER BY staff_id", rows::staff)
    }
    fn device(&mut self, id: DeviceId) -> Result<Option<Device>, StoreError> {
        self.one(
            "SELECT * FROM devices WHERE device_id = $1",
            &id.0,
            rows::device,
        )
    }
    fn devices(&mut self) -> Result<Vec<Device>, StoreError> {
        self.all("SELECT * FROM devices ORDER BY device_id", rows::device)
    }
    fn token(&mut self, sha256: &[u8; 32]) -> Result<Option<TokenRecord>, StoreError> {
        self.s
            .query_opt(
                "SELECT * FROM tokens WHERE token_sha256 = $1",
                &[&&sha256[..]],
            )?
            .as_ref()
            .map(rows::token)
            .transpose()
    }

    fn put_org(&mut self, org: &Org) -> Result<(), StoreError> {
        self.writing()?;
        self.s.execute(
            "INSERT INTO orgs (org_id, name) VALUES ($1, $2)
             ON CONFLICT (org_id) DO UPDATE SET name = excluded.name",
            &[&org.org_id.0, &org.name],
        )?;
        Ok(())
    }
    fn put_team(&mut self, team: &Team) -> Result<(), StoreError> {
        self.writing()?;
        self.s.execute(
            "INSERT INTO teams (team_id, org_id, name) VALUES ($1, $2, $3)
             ON CONFLICT (team_id) DO UPDATE SET org_id = excluded.org_id, name = excluded.name",
            &[&team.team_id.0, &team.org_id.0, &team.name],
        )?;
        Ok(())
    }
    fn put_staff(&mut self, staff: &Staff) -> Result<(), StoreError> {
        self.writing()?;
        let teams = rows::uuids(&staff.teams, |t| t.0);
        self.s.execute(
            "INSERT INTO staff (staff_id, name, role, org_id, teams, revoked)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (staff_id) DO UPDATE SET name = excluded.name, role = excluded.role,
                 org_id = excluded.org_id, teams = excluded.teams, revoked = excluded.revoked",
            &[
                &staff.staff_id.0,
                &staff.name,
                &enum_text(&staff.role)?,
                &staff.org_id.0,
                &teams,
                &staff.revoked,
            ],
        )?;
        Ok(())
    }
    fn put_device(&mut self, d: &Device) -> Result<(), StoreError> {
        self.writing()?;
        self.s.execute(
            "INSERT INTO devices (device_id, staff_id, name, created_ms, revoked, token_sha256)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (device_id) DO UPDATE SET staff_id = excluded.staff_id,
                 name = excluded.name, created_ms = excluded.created_ms,
                 revoked = excluded.revoked, token_sha256 = excluded.token_sha256",
            &[
                &d.device_id.0,
                &d.staff_id.0,
                &d.name,
                &d.created_ms,
                &d.revoked,
                &d.token_sha256,
            ],
        )?;
        Ok(())
    }
    fn put_token(&mut self, sha256: &[u8; 32], t: &TokenRecord) -> Result<(), StoreError> {
        self.writing()?;
        self.s.execute(
            "INSERT INTO tokens (token_sha256, device_id, staff_id, revoked)
             VALUES ($1, $2, $3, $4)
             ON CONFLICT (token_sha256) DO UPDATE SET device_id = excluded.device_id,
                 staff_id = excluded.staff_id, revoked = excluded.revoked",
            &[&&sha256[..], &t.device_id.0, &t.staff_id.0, &t.revoked],
        )?;
        Ok(())
    }

    fn case(&mut self, id: CaseId) -> Result<Option<CaseRecord>, StoreError> {
        self.one("SELECT * FROM cases WHERE case_id = $1", &id.0, rows::case)
    }
    fn put_case(&mut self, case: &CaseRecord) -> Result<(), StoreError> {
        self.writing()?;
        let teams = rows::uuids(&case.teams, |t| t.0);
        self.s.defer(
            "INSERT INTO cases (case_id, owner_org, teams, created_ms) VALUES ($1, $2, $3, $4)
             ON CONFLICT (case_id) DO UPDATE SET owner_org = excluded.owner_org,
                 teams = excluded.teams, created_ms = excluded.created_ms",
            params![case.case_id.0, case.owner_org.0, teams, case.created_ms],
        )
    }
    fn doc(&mut self, id: DocId) -> Result<Option<DocRecord>, StoreError> {
        self.one("SELECT * FROM docs WHERE doc_id = $1", &id.0, rows::doc)
    }
    fn doc_and_case(
        &mut self,
        id: DocId,
    ) -> Result<Option<(DocRecord, Option<CaseRecord>)>, StoreError> {
        self.one(
            "SELECT d.*, c.case_id AS c_case_id, c.owner_org AS c_owner_org,
                    c.teams AS c_teams, c.created_ms AS c_created_ms
             FROM docs d LEFT JOIN cases c ON c.case_id = d.case_id
             WHERE d.doc_id = $1",
            &id.0,
            rows::doc_and_case,
        )
    }
    fn docs_in(&mut self, ids: &[DocId]) -> Result<Vec<DocRecord>, StoreError> {
        let ids = rows::uuids(ids, |d| d.0);
        self.any("SELECT * FROM docs WHERE doc_id = ANY($1)", &ids, rows::doc)
    }
    // Every found document's case, known or not: it comes in the same row.
    fn docs_and_cases_in(
        &mut self,
        ids: &[DocId],
        _known: &HashSet<CaseId>,
    ) -> Result<(Vec<DocRecord>, Vec<CaseRecord>), StoreError> {
        let ids = rows::uuids(ids, |d| d.0);
        let found = self.any(
            "SELECT d.*, c.case_id AS c_case_id, c.owner_org AS c_owner_org,
                    c.teams AS c_teams, c.created_ms AS c_created_ms
             FROM docs d LEFT JOIN cases c ON c.case_id = d.case_id
             WHERE d.doc_id = ANY($1)",
            &ids,
            rows::doc_and_case,
        )?;
        let mut cases: HashMap<CaseId, CaseRecord> = HashMap::new();
        let mut docs = Vec::with_capacity(found.len());
        for (doc, case) in found {
            if let Some(c) = case {
                cases.insert(c.case_id, c);
            }
            docs.push(doc);
        }
        Ok((docs, cases.into_values().collect()))
    }
    fn cases_in(&mut self, ids: &[CaseId]) -> Result<Vec<CaseRecord>, StoreError> {
        let ids = rows::uuids(ids, |c| c.0);
        self.any(
            "SELECT * FROM cases WHERE case_id = ANY($1)",
            &ids,
            rows::case,
        )
    }
    // The log as this transaction left it: its appends are inserted first (they wait in memory).
    fn change_seqs_of(&mut self, doc: DocId) -> Result<Vec<Seq>, StoreError> {
        self.insert_appended()?;
        doc_change_seqs(self.s, doc)
    }
    fn change_at(&mut self, seq: Seq) -> Result<Option<(DocId, Hash, Vec<u8>)>, StoreError> {
        self.insert_appended()?;
        get_log(self.s, seq)
    }
    fn changes_of_after(
        &mut self,
        doc: DocId,
        after: Seq,
    ) -> Result<Vec<(Seq, Vec<u8>)>, StoreError> {
        self.insert_appended()?;
        doc_changes_after(self.s, doc, after)
    }
    fn log_page(
        &mut self,
        range: (Seq, Seq),
        max: usize,
        max_bytes: usize,
    ) -> Result<Vec<LoggedChange>, StoreError> {
        self.insert_appended()?;
        log_page(self.s, range, max, max_bytes)
    }
    fn docs_page(
        &mut self,
        docs: &[DocId],
        range: (Seq, Seq),
        max: usize,
        max_bytes: usize,
    ) -> Result<Vec<LoggedChange>, StoreError> {
        self.insert_appended()?;
        docs_page(self.s, docs, range, max, max_bytes)
    }
    fn put_doc(&mut self, doc: &DocRecord) -> Result<(), StoreError> {
        self.writing()?;
        let h = &doc.header;
        let access = h.access_teams.as_ref().map(|t| rows::uuids(t, |t| t.0));
        let heads: Vec<Vec<u8>> = doc.heads.iter().map(|h| h.0.to_vec()).collect();
        let grants = (!h.grants.is_empty())
            .then(|| serde_json::to_string(&h.grants).expect("plain data serialises"));
        self.s.defer(
            "INSERT INTO docs (doc_id, case_id, kind, owner_org, access_teams, created_by,
                               created_ms, heads, ops, filed_ms, sealed, grants)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
             ON CONFLICT (doc_id) DO UPDATE SET case_id = excluded.case_id,
                 kind = excluded.kind, owner_org = excluded.owner_org,
                 access_teams = excluded.access_teams, created_by = excluded.created_by,
                 created_ms = excluded.created_ms, heads = excluded.heads,
                 ops = excluded.ops, filed_ms = excluded.filed_ms,
                 sealed = excluded.sealed, grants = excluded.grants",
            params![
                h.doc_id.0,
                h.case_id.0,
                enum_text(&h.kind)?,
                h.owner_org.0,
                access,
                h.created_by.0,
                h.created_ms,
                heads,
                big(doc.ops)?,
                doc.filed_ms,
                h.sealed,
                grants,
            ],
        )
    }
    fn has_change(&mut self, doc: DocId, hash: &Hash) -> Result<bool, StoreError> {
        if self.appended_keys.contains(&(doc, hash.0)) {
            return Ok(true);
        }
        Ok(self
            .s
            .query_opt(
                "SELECT 1 FROM change_log WHERE doc_id = $1 AND hash = $2",
                &[&doc.0, &&hash.0[..]],
            )?
            .is_some())
    }
    fn held_changes(&mut self, doc: DocId, hashes: &[Hash]) -> Result<HashSet<Hash>, StoreError> {
        Ok(self.held_or_refused(doc, hashes)?.0)
    }
    fn held_or_refused(
        &mut self,
        doc: DocId,
        hashes: &[Hash],
    ) -> Result<(HashSet<Hash>, HashSet<Hash>), StoreError> {
        let (mut held, asked) = self.held_in_memory(doc, hashes);
        let mut refused = HashSet::new();
        if asked.is_empty() {
            return Ok((held, refused));
        }
        // A lookup per hash, not `hash = ANY($2)`: with thousands of hashes that was a scan of
        // the document's log testing each entry against the whole array (0.7 s for a
        // 4,000-change push in a debug build, under the write lock).
        let found = self.s.query(HELD_OR_REFUSED, &[&doc.0, &asked])?;
        for row in &found {
            let bytes: Vec<u8> = col(row, "hash")?;
            let into = if col(row, "refused")? {
                &mut refused
            } else {
                &mut held
            };
            into.insert(rows::hash(&bytes)?);
        }
        refused.retain(|h| !held.contains(h));
        Ok((held, refused))
    }
    // The three reads of `Txn::push_facts` as one statement (see there and `PUSH_FACTS`).
    fn push_facts(&mut self, ask: &PushAsk<'_>) -> Result<PushFacts, StoreError> {
        let (held, asked) = self.held_in_memory(ask.doc, ask.hashes);
        let actors: Vec<&[u8]> = ask.actors.iter().map(Vec::as_slice).collect();
        let row = self
            .s
            .query_one(PUSH_FACTS, &[&ask.doc.0, &asked, &actors, &ask.record])?;
        rows::push_facts(&row, held)
    }
    fn append_change(&mut self, change: &NewChange) -> Result<Seq, StoreError> {
        self.writing()?;
        let (last, chain) = self.tip()?;
        let seq = last + 1;
        let chain = chain_next(&chain, seq, change.doc_id, &change.hash);
        self.tip = Some((seq, chain));
        let first = self.range.map_or(Seq(seq), |r| r.0);
        self.range = Some((first, Seq(seq)));
        self.appended_keys.insert((change.doc_id, change.hash.0));
        self.appended.push(Appended {
            seq,
            chain,
            change: change.clone(),
        });
        self.appended_bytes += change.bytes.len();
        if self.appended.len() >= limits::PG_APPEND_ROWS_PER_INSERT
            || self.appended_bytes >= limits::PG_APPEND_BYTES_PER_INSERT
        {
            // Sent now: what is held back stays within one insert's bytes.
            self.insert_appended()?;
            self.s.send_held()?;
        }
        Ok(Seq(seq))
    }
    fn actor(&mut self, actor: &[u8]) -> Result<Option<ActorBinding>, StoreError> {
        self.s
            .query_opt("SELECT * FROM actors WHERE actor = $1", &[&actor])?
            .as_ref()
            .map(rows::actor)
            .transpose()
    }
    fn put_actor(&mut self, actor: &[u8], b: &ActorBinding) -> Result<(), StoreError> {
        self.writing()?;
        self.s.defer(
            "INSERT INTO actors (actor, staff_id, device_id, first_seen_ms) VALUES ($1, $2, $3, $4)
             ON CONFLICT (actor) DO UPDATE SET staff_id = excluded.staff_id,
                 device_id = excluded.device_id, first_seen_ms = excluded.first_seen_ms",
            params![actor.to_vec(), b.staff_id.0, b.device_id.0, b.first_seen_ms],
        )
    }
    fn cases_of_team(&mut self, team: TeamId) -> Result<Vec<CaseId>, StoreError> {
        Ok(self
            .ids(
                "SELECT case_id AS id FROM cases WHERE teams @> ARRAY[$1::uuid] ORDER BY case_id",
                &team.0,
            )?
            .into_iter()
            .map(CaseId)
            .collect())
    }
    fn docs_of_case(&mut self, case: CaseId) -> Result<Vec<DocId>, StoreError> {
        Ok(self
            .ids(
                "SELECT doc_id AS id FROM docs WHERE case_id = $1 ORDER BY doc_id",
                &case.0,
            )?
            .into_iter()
            .map(DocId)
            .collect())
    }

    fn device_sync(&mut self, device: DeviceId) -> Result<Option<DeviceSync>, StoreError> {
        self.one(
            "SELECT * FROM device_sync WHERE device_id = $1",
            &device.0,
            rows::device_sync,
        )
    }
    fn device_sync_at_epoch(
        &mut self,
        device: DeviceId,
    ) -> Result<(Option<DeviceSync>, u64), StoreError> {
        let row = self.s.query_one(
            "SELECT s.access_epoch, d.device_id AS d_device_id, d.reconciled_epoch, d.pending
             FROM store_state s LEFT JOIN device_sync d ON d.device_id = $1",
            &[&device.0],
        )?;
        let state = match col::<Option<uuid::Uuid>>(&row, "d_device_id")? {
            Some(_) => Some(rows::device_sync(&row)?),
            None => None,
        };
        Ok((state, seq(col(&row, "access_epoch")?)?))
    }
    // The log's last sequence from the table; a write transaction's own appends wait in memory
    // (`self.tip` is the last of them).
    fn sync_basis(
        &mut self,
        device: DeviceId,
        staff: StaffId,
        meta_key: &str,
    ) -> Result<SyncBasis, StoreError> {
        let row = self.s.query_one(
            "SELECT (SELECT coalesce(max(seq), 0) FROM change_log) AS last_seq,
                    s.access_epoch, d.device_id AS d_device_id, d.reconciled_epoch, d.pending,
                    st.staff_id AS s_staff_id, st.name AS s_name, st.role AS s_role,
                    st.org_id AS s_org_id, st.teams AS s_teams, st.revoked AS s_revoked,
                    (SELECT value FROM meta WHERE key = $3) AS meta
             FROM store_state s
             LEFT JOIN device_sync d ON d.device_id = $1
             LEFT JOIN staff st ON st.staff_id = $2",
            &[&device.0, &staff.0, &meta_key],
        )?;
        let mut basis = rows::sync_basis(&row)?;
        if let Some((appended, _)) = self.tip {
            basis.last_seq = basis.last_seq.max(Seq(appended));
        }
        Ok(basis)
    }
    fn last_seq(&mut self) -> Result<Seq, StoreError> {
        match self.tip {
            Some((appended, _)) => Ok(Seq(appended)),
            None => last_seq(self.s),
        }
    }
    fn put_device_sync(&mut self, device: DeviceId, state: &DeviceSync) -> Result<(), StoreError> {
        self.writing()?;
        let epoch = state.reconciled_epoch.map(big).transpose()?;
        let pending = state
            .pending
            .as_ref()
            .map(serde_json::to_value)
            .transpose()
            .map_err(|e| StoreError::Backend(format!("a pending reconciliation: {e}")))?;
        self.s.defer(
            "INSERT INTO device_sync (device_id, reconciled_epoch, pending) VALUES ($1, $2, $3)
             ON CONFLICT (device_id) DO UPDATE SET reconciled_epoch = excluded.reconciled_epoch,
                 pending = excluded.pending",
            params![device.0, epoch, pending],
        )
    }
    fn device_docs(&mut self, device: DeviceId) -> Result<Vec<DocId>, StoreError> {
        Ok(self
            .ids(
                "SELECT doc_id AS id FROM device_docs WHERE device_id = $1 ORDER BY doc_id",
                &device.0,
            )?
            .into_iter()
            .map(DocId)
            .collect())
    }
    fn device_docs_add(&mut self, device: DeviceId, docs: &[DocId]) -> Result<(), StoreError> {
        self.writing()?;
        if docs.is_empty() {
            return Ok(());
        }
        let docs = rows::uuids(docs, |d| d.0);
        self.s.defer(
            "INSERT INTO device_docs (device_id, doc_id) SELECT $1, unnest($2::uuid[])
             ON CONFLICT DO NOTHING",
            params![device.0, docs],
        )
    }
    fn device_docs_remove(&mut self, device: DeviceId, docs: &[DocId]) -> Result<(), StoreError> {
        self.writing()?;
        if docs.is_empty() {
            return Ok(());
        }
        let docs = rows::uuids(docs, |d| d.0);
        self.s.execute(
            "DELETE FROM device_docs WHERE device_id = $1 AND doc_id = ANY($2::uuid[])",
            &[&device.0, &docs],
        )?;
        Ok(())
    }
    fn device_docs_clear(&mut self, device: DeviceId) -> Result<(), StoreError> {
        self.writing()?;
        self.s
            .execute("DELETE FROM device_docs WHERE device_id = $1", &[&device.0])?;
        Ok(())
    }

    fn quarantined(
        &mut self,
        doc: DocId,
        hash: &Hash,
    ) -> Result<Option<QuarantineEntry>, StoreError> {
        self.s
            .query_opt(
                "SELECT * FROM quarantine WHERE doc_id = $1 AND hash = $2",
                &[&doc.0, &&hash.0[..]],
            )?
            .as_ref()
            .map(rows::quarantine)
            .transpose()
    }
    /// One statement for all of them: this runs under the write lock, and a refused push of
    /// `PUSH_CHANGES_MAX` changes made as many round trips there (about a second on this
    /// machine in a debug build, every other writer of every node waiting).
    fn quarantine_add(&mut self, entries: &[QuarantineEntry]) -> Result<usize, StoreError> {
        self.writing()?;
        if entries.is_empty() {
            return Ok(0);
        }
        let column = |f: fn(&QuarantineEntry) -> Uuid| entries.iter().map(f).collect::<Vec<_>>();
        let (docs, staff, devices) = (
            column(|e| e.doc_id.0),
            column(|e| e.staff_id.0),
            column(|e| e.device_id.0),
        );
        let hashes: Vec<&[u8]> = entries.iter().map(|e| &e.hash.0[..]).collect();
        let bytes: Vec<&[u8]> = entries.iter().map(|e| &e.bytes[..]).collect();
        let reasons: Vec<&str> = entries.iter().map(|e| e.reason.as_str()).collect();
        let at: Vec<i64> = entries.iter().map(|e| e.at_ms).collect();
        let added = self.s.execute(
            "INSERT INTO quarantine (doc_id, hash, bytes, reason, staff_id, device_id, at_ms)
             SELECT * FROM unnest($1::uuid[], $2::bytea[], $3::bytea[], $4::text[],
                                  $5::uuid[], $6::uuid[], $7::bigint[])
             ON CONFLICT DO NOTHING",
            &[&docs, &hashes, &bytes, &reasons, &staff, &devices, &at],
        )?;
        Ok(added as usize)
    }

    fn audit_append(&mut self, record: AuditRecord) -> Result<AuditEntry, StoreError> {
        self.writing()?;
        let (last, prev) = self.head()?;
        let entry = audit_model::seal(last + 1, &prev, record);
        let text = String::from_utf8(audit_model::encode(&entry))
            .map_err(|_| StoreError::Backend("an audit entry that is not UTF-8".into()))?;
        self.s.defer(
            "INSERT INTO audit (seq, at_ms, kind, staff_id, device_id, hash, entry)
             VALUES ($1, $2, $3, $4, $5, $6, $7::text::json)",
            params![
                big(entry.seq)?,
                entry.at_ms,
                entry.kind.as_str().to_owned(),
                entry.staff_id.map(|s| s.0),
                entry.device_id.map(|d| d.0),
                entry.hash.clone(),
                text,
            ],
        )?;
        self.audit_head = Some((entry.seq, entry.hash.clone()));
        Ok(entry)
    }

    fn access_epoch(&mut self) -> Result<u64, StoreError> {
        access_epoch(self.s)
    }
    fn bump_access_epoch(&mut self) -> Result<u64, StoreError> {
        self.writing()?;
        let row = self.s.query_one(
            "UPDATE store_state SET access_epoch = access_epoch + 1 RETURNING access_epoch",
            &[],
        )?;
        seq(col(&row, "access_epoch")?)
    }
    fn log_id(&mut self) -> Result<Uuid, StoreError> {
        let row = self.s.query_one("SELECT log_id FROM store_state", &[])?;
        col(&row, "log_id")
    }
    fn set_log_id(&mut self, id: Uuid) -> Result<(), StoreError> {
        self.writing()?;
        self.s
            .execute("UPDATE store_state SET log_id = $1", &[&id])?;
        Ok(())
    }
    fn meta(&mut self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.s
            .query_opt("SELECT value FROM meta WHERE key = $1", &[&key])?
            .map(|r| col(&r, "value"))
            .transpose()
    }
    fn put_meta(&mut self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        self.writing()?;
        self.s.execute(
            "INSERT INTO meta (key, value) VALUES ($1, $2)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            &[&key, &value],
        )?;
        Ok(())
    }

    fn escrow(&mut self, device: DeviceId) -> Result<Option<[u8; 32]>, StoreError> {
        self.s
            .query_opt(
                "SELECT wrap_key FROM escrow WHERE device_id = $1",
                &[&device.0],
            )?
            .map(|r| wrap_key(&r))
            .transpose()
    }
    fn escrow_put_if_absent(
        &mut self,
        device: DeviceId,
        key: [u8; 32],
    ) -> Result<[u8; 32], StoreError> {
        self.writing()?;
        self.s.execute(
            "INSERT INTO escrow (device_id, wrap_key) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            &[&device.0, &&key[..]],
        )?;
        self.escrow(device)?
            .ok_or_else(|| StoreError::Corrupt("an escrowed key vanished".into()))
    }
    fn escrow_remove(&mut self, device: DeviceId) -> Result<(), StoreError> {
        self.writing()?;
        self.s
            .execute("DELETE FROM escrow WHERE device_id = $1", &[&device.0])?;
        Ok(())
    }

    fn erase_doc(&mut self, doc: DocId) -> Result<Vec<Seq>, StoreError> {
        self.writing()?;
        self.insert_appended()?;
        let rows = self.s.query(
            "UPDATE change_log SET bytes = ''::bytea, received_ms = NULL
             WHERE doc_id = $1 AND octet_length(bytes) > 0 RETURNING seq",
            &[&doc.0],
        )?;
        let mut seqs = rows
            .iter()
            .map(|r| Ok(Seq(seq(col(r, "seq")?)?)))
            .collect::<Result<Vec<_>, StoreError>>()?;
        seqs.sort();
        self.s
            .execute("DELETE FROM docs WHERE doc_id = $1", &[&doc.0])?;
        self.s
            .execute("DELETE FROM quarantine WHERE doc_id = $1", &[&doc.0])?;
        Ok(seqs)
    }
}

/// Rewrites the tables erasures touch (`VACUUM FULL`: fresh files, the old ones unlinked) and
/// retires the write-ahead log that held the erased rows: a switch to a new segment and a
/// checkpoint, twice, so that every segment written before is past the redo point and is
/// removed, or recycled where `wal_recycle` is on (a recycled segment keeps its old bytes until
/// overwritten, so `done` says so). A role that may not `CHECKPOINT` (PostgreSQL 15: superuser
/// or `pg_checkpoint`) gets `done: false` and the reason.
pub(super) fn compact(s: &mut Session) -> Result<crate::store::Compaction, StoreError> {
    s.simple("VACUUM FULL change_log, docs, quarantine")?;
    let retired =
        s.simple("SELECT pg_switch_wal(); CHECKPOINT; SELECT pg_switch_wal(); CHECKPOINT;");
    let recycle = s.simple_value("SHOW wal_recycle")?.unwrap_or_default();
    let (done, detail) = match (retired, recycle.as_str()) {
        (Err(e), _) => (
            false,
            format!(
                "the tables were rewritten; the write-ahead log still holds the erased rows \
                 until PostgreSQL's next checkpoints remove its old segments (this role could \
                 not switch it: {e})"
            ),
        ),
        (Ok(()), "off") => (
            true,
            "the tables were rewritten and the write-ahead log segments that held the erased \
             rows removed (wal_recycle is off); archives and replicas keep their own copies"
                .to_string(),
        ),
        (Ok(()), _) => (
            false,
            "the tables were rewritten; wal_recycle is on, so retired write-ahead log segments \
             are renamed for reuse and keep the erased rows' bytes until overwritten: set \
             wal_recycle = off"
                .to_string(),
        ),
    };
    Ok(crate::store::Compaction { done, detail })
}

fn wrap_key(row: &postgres::Row) -> Result<[u8; 32], StoreError> {
    let v: Vec<u8> = col(row, "wrap_key")?;
    <[u8; 32]>::try_from(v.as_slice())
        .map_err(|_| StoreError::Corrupt("an escrowed key is not 32 bytes".into()))
}

// Reads of committed, append-only data, outside transactions.

/// The log entries of `(after, upto]` in order (erased ones, with no bytes, only if `$5`), at
/// most `$3` rows and none after the one that brings their bytes to `$4`: the database sums the
/// bytes, so one round trip holds about `$4` plus one change whatever the rows' sizes.
const LOG_PAGE: &str = "SELECT seq, doc_id, hash, bytes FROM (
         SELECT seq, doc_id, hash, bytes,
                sum(octet_length(bytes)) OVER (ORDER BY seq) - octet_length(bytes) AS bytes_before
         FROM change_log
         WHERE seq > $1 AND seq <= $2 AND ($5 OR octet_length(bytes) > 0)
         ORDER BY seq LIMIT $3) page
     WHERE bytes_before < $4 ORDER BY seq";

/// [`LOG_PAGE`] for the changes of the documents `$5`, document by document in the order given
/// (the first's after `$1`, the others' from the start), each through the index by (document,
/// sequence): what a backfill reads of a run of documents. The database reads up to `$3` rows of
/// each document asked before it orders them ([`docs_page`] asks for fewer after a fetch that
/// ended among the first).
pub(super) const DOCS_PAGE: &str = "SELECT seq, doc_id, hash, bytes FROM (
         SELECT c.seq, c.doc_id, c.hash, c.bytes, d.ord,
                sum(octet_length(c.bytes)) OVER (ORDER BY d.ord, c.seq)
                    - octet_length(c.bytes) AS bytes_before
         FROM unnest($5::uuid[]) WITH ORDINALITY AS d(doc_id, ord)
         CROSS JOIN LATERAL (
             SELECT seq, doc_id, hash, bytes FROM change_log
             WHERE doc_id = d.doc_id AND seq > CASE WHEN d.ord = 1 THEN $1::bigint ELSE 0 END
                 AND seq <= $2 AND octet_length(bytes) > 0
             ORDER BY seq LIMIT $3) c
         ORDER BY d.ord, c.seq LIMIT $3) page
     WHERE bytes_before < $4 ORDER BY ord, seq";

/// A row of [`LOG_PAGE`] or [`DOCS_PAGE`].
fn log_entry(row: &postgres::Row) -> Result<LogEntry<'_>, StoreError> {
    Ok(LogEntry {
        seq: Seq(seq(col(row, "seq")?)?),
        doc_id: DocId(col(row, "doc_id")?),
        hash: rows::hash(col(row, "hash")?)?,
        bytes: col(row, "bytes")?,
    })
}

/// One [`LOG_PAGE`] of `(after, upto]`, at most `rows` rows and `bytes` bytes (plus one change).
fn page_params(
    (after, upto): (Seq, Seq),
    rows: usize,
    bytes: usize,
) -> Result<[i64; 4], StoreError> {
    Ok([
        big(after.0)?,
        big(upto.0)?,
        big(rows as u64)?,
        big(bytes as u64)?,
    ])
}

/// Visits log entries with `after < seq <= upto` in order until `visit` returns false, on one
/// snapshot, a [`LOG_PAGE`] of at most [`limits::PG_SCAN_FETCH_BYTES`] (plus one change) at a
/// time, so memory stays near that whatever the range and the changes' sizes. Erased entries
/// (no bytes, `PgTxn::erase_doc`) are visited only if `erased`.
pub(super) fn scan_log(
    s: &mut Session,
    (mut after, upto): (Seq, Seq),
    erased: bool,
    visit: &mut dyn FnMut(LogEntry<'_>) -> bool,
) -> Result<(), StoreError> {
    let (rows_max, bytes_max) = (
        limits::PG_SCAN_ROWS_PER_FETCH_MAX,
        limits::PG_SCAN_FETCH_BYTES,
    );
    in_snapshot(s, |s| loop {
        let [a, u, r, b] = page_params((after, upto), rows_max, bytes_max)?;
        let rows = s.query(LOG_PAGE, &[&a, &u, &r, &b, &erased])?;
        #[cfg(test)]
        fetched::note(&rows);
        let mut bytes = 0;
        for row in &rows {
            let entry = log_entry(row)?;
            bytes += entry.bytes.len();
            after = entry.seq;
            if !visit(entry) {
                return Ok(());
            }
        }
        // A page cut by neither bound was the range's last.
        if rows.len() < rows_max && bytes < bytes_max {
            return Ok(());
        }
    })
}

/// `Txn::held_or_refused`: of the hashes `$2`, those of document `$1` stored, then those in
/// quarantine. Each hash is looked up in the index on its own (a lateral subquery with a limit,
/// which the planner cannot turn into a join): as a join, under the plan a connection comes to
/// use for any document, the asked hashes were matched against every change of the document.
pub(super) const HELD_OR_REFUSED: &str =
    "SELECT asked.hash, false AS refused FROM unnest($2::bytea[]) AS asked(hash)
     CROSS JOIN LATERAL (SELECT 1 FROM change_log c
                         WHERE c.doc_id = $1 AND c.hash = asked.hash LIMIT 1) AS found
     UNION ALL
     SELECT asked.hash, true AS refused FROM unnest($2::bytea[]) AS asked(hash)
     CROSS JOIN LATERAL (SELECT 1 FROM quarantine q
                         WHERE q.doc_id = $1 AND q.hash = asked.hash LIMIT 1) AS found";

/// `Txn::push_facts`: document `$1`'s row and its case's (when `$4`), which of the hashes `$2`
/// it holds and has in quarantine (looked up one by one, as in [`HELD_OR_REFUSED`]), and the
/// bindings of the actors `$3`, and the access epoch. The document's row is joined to a row that
/// always exists, so that the answer is one row with or without it.
pub(super) const PUSH_FACTS: &str =
    "SELECT d.*, c.case_id AS c_case_id, c.owner_org AS c_owner_org,
            c.teams AS c_teams, c.created_ms AS c_created_ms,
            ARRAY(SELECT asked.hash FROM unnest($2::bytea[]) AS asked(hash)
                  CROSS JOIN LATERAL (SELECT 1 FROM change_log l
                      WHERE l.doc_id = $1 AND l.hash = asked.hash LIMIT 1) AS found) AS f_held,
            ARRAY(SELECT asked.hash FROM unnest($2::bytea[]) AS asked(hash)
                  CROSS JOIN LATERAL (SELECT 1 FROM quarantine q
                      WHERE q.doc_id = $1 AND q.hash = asked.hash LIMIT 1) AS found) AS f_refused,
            (SELECT access_epoch FROM store_state) AS f_epoch,
            a.*
     FROM (SELECT 1) AS one
     LEFT JOIN docs d ON $4 AND d.doc_id = $1
     LEFT JOIN cases c ON c.case_id = d.case_id
     CROSS JOIN LATERAL (
         SELECT array_agg(actor) AS a_actor, array_agg(staff_id) AS a_staff,
                array_agg(device_id) AS a_device, array_agg(first_seen_ms) AS a_first_seen
         FROM actors WHERE actor = ANY($3::bytea[])) AS a";

/// Runs `scan` in a read-only transaction on one snapshot, committed when it returns `Ok`
/// (every read transaction of the store but `Store::read_each_txn`'s).
pub(super) fn in_snapshot(
    s: &mut Session,
    scan: impl FnOnce(&mut Session) -> Result<(), StoreError>,
) -> Result<(), StoreError> {
    s.begin_lazily(super::READ_BEGIN);
    match scan(s) {
        Ok(()) => s.commit("COMMIT"),
        Err(e) => {
            s.rollback();
            Err(e)
        }
    }
}

/// Visits every audit entry's sequence and stored JSON, in order, until `visit` returns false.
pub(super) fn audit_scan(
    s: &mut Session,
    visit: &mut dyn FnMut(u64, &[u8]) -> bool,
) -> Result<(), StoreError> {
    let rows_per_fetch = limits::PG_SCAN_ROWS_PER_FETCH_MAX;
    let limit = big(rows_per_fetch as u64)?;
    let mut after = 0i64;
    in_snapshot(s, |s| loop {
        let rows = s.query(
            "SELECT seq, entry::text AS entry FROM audit WHERE seq > $1 ORDER BY seq LIMIT $2",
            &[&after, &limit],
        )?;
        for row in &rows {
            let entry: &str = col(row, "entry")?;
            after = col(row, "seq")?;
            if !visit(seq(after)?, entry.as_bytes()) {
                return Ok(());
            }
        }
        if rows.len() < rows_per_fetch {
            return Ok(());
        }
    })
}

/// [`Txn::log_page`] on the transaction open on `s`. Each query returns at most
/// [`limits::PG_SCAN_ROWS_PER_FETCH_MAX`] rows and stops after the row that brings their bytes to
/// [`limits::PG_SCAN_FETCH_BYTES`] (the running total is the database's), so what is read at once
/// stays near that figure plus one change, whatever the rows' sizes.
fn log_page(
    s: &mut Session,
    (mut after, upto): (Seq, Seq),
    max: usize,
    max_bytes: usize,
) -> Result<Vec<LoggedChange>, StoreError> {
    let mut out = Vec::new();
    let mut bytes = 0usize;
    while after < upto && out.len() < max && bytes < max_bytes {
        let (rows_wanted, bytes_wanted) = fetch_bounds((out.len(), bytes), (max, max_bytes));
        let [a, u, r, b] = page_params((after, upto), rows_wanted, bytes_wanted)?;
        let rows = s.query(LOG_PAGE, &[&a, &u, &r, &b, &false])?;
        let fetched = take_rows(&rows, &mut out)?;
        bytes += fetched;
        // A fetch cut by neither of its bounds was the range's last: asking again would be a
        // round trip for nothing.
        if rows.len() < rows_wanted && fetched < bytes_wanted {
            break;
        }
        after = out.last().map_or(upto, |e| e.seq);
    }
    Ok(out)
}

/// [`Txn::docs_page`] on the transaction open on `s`, a [`DOCS_PAGE`] at a time within the same
/// bounds as [`log_page`]'s fetches. A fetch names every document left, unless the last was cut
/// among its first documents (long histories): then twice as many as it reached, since the
/// database reads up to a fetch's rows of each document named.
fn docs_page(
    s: &mut Session,
    mut docs: &[DocId],
    (mut after, upto): (Seq, Seq),
    max: usize,
    max_bytes: usize,
) -> Result<Vec<LoggedChange>, StoreError> {
    let mut out = Vec::new();
    let mut bytes = 0usize;
    let mut ahead = docs.len();
    while !docs.is_empty() && out.len() < max && bytes < max_bytes {
        let named = &docs[..ahead.clamp(1, docs.len())];
        let (rows_wanted, bytes_wanted) = fetch_bounds((out.len(), bytes), (max, max_bytes));
        let [a, u, r, b] = page_params((after, upto), rows_wanted, bytes_wanted)?;
        let ids = rows::uuids(named, |d| d.0);
        let rows = s.query(DOCS_PAGE, &[&a, &u, &r, &b, &ids])?;
        let fetched = take_rows(&rows, &mut out)?;
        bytes += fetched;
        if rows.len() < rows_wanted && fetched < bytes_wanted {
            // Cut by neither bound: every document named is done.
            (docs, after, ahead) = (&docs[named.len()..], Seq(0), 2 * named.len());
            continue;
        }
        // Cut: the next fetch starts inside the document it ended in.
        let last = out.last().map(|e| (e.doc_id, e.seq));
        let at = last.and_then(|(doc, _)| named.iter().position(|d| *d == doc));
        let (Some(at), Some((_, seq))) = (at, last) else {
            return Err(StoreError::Backend(
                "a page of documents not asked for".into(),
            ));
        };
        (docs, after, ahead) = (&docs[at..], seq, 2 * (at + 1));
    }
    Ok(out)
}

/// The rows and bytes the next fetch of a page asks for, the page having taken `rows` and
/// `bytes` of its `max` and `max_bytes`: a fetch's at most, and no more than the page has left.
fn fetch_bounds((rows, bytes): (usize, usize), (max, max_bytes): (usize, usize)) -> (usize, usize) {
    (
        limits::PG_SCAN_ROWS_PER_FETCH_MAX.min(max - rows),
        limits::PG_SCAN_FETCH_BYTES.min(max_bytes - bytes),
    )
}

/// Appends the entries of a [`LOG_PAGE`] or [`DOCS_PAGE`] fetch to `out`; their bytes.
fn take_rows(rows: &[postgres::Row], out: &mut Vec<LoggedChange>) -> Result<usize, StoreError> {
    #[cfg(test)]
    fetched::note(rows);
    let mut bytes = 0;
    for row in rows {
        let e = log_entry(row)?;
        bytes += e.bytes.len();
        out.push(LoggedChange {
            seq: e.seq,
            doc_id: e.doc_id,
            hash: e.hash,
            bytes: e.bytes.to_vec(),
        });
    }
    Ok(bytes)
}

pub(super) fn get_log(
    s: &mut Session,
    at: Seq,
) -> Result<Option<(DocId, Hash, Vec<u8>)>, StoreError> {
    let Some(row) = s.query_opt(
        "SELECT doc_id, hash, bytes FROM change_log WHERE seq = $1",
        &[&big(at.0)?],
    )?
    else {
        return Ok(None);
    };
    let h: Vec<u8> = col(&row, "hash")?;
    let bytes: Vec<u8> = col(&row, "bytes")?;
    if bytes.is_empty() {
        return Ok(None); // erased
    }
    Ok(Some((DocId(col(&row, "doc_id")?), rows::hash(&h)?, bytes)))
}

pub(super) fn doc_change_seqs(s: &mut Session, doc: DocId) -> Result<Vec<Seq>, StoreError> {
    s.query(
        "SELECT seq FROM change_log WHERE doc_id = $1 AND octet_length(bytes) > 0 ORDER BY seq",
        &[&doc.0],
    )?
    .iter()
    .map(|r| Ok(Seq(seq(col(r, "seq")?)?)))
    .collect()
}

/// `Store::doc_changes_after`: document `$1`'s changes after sequence `$2`, not erased.
pub(super) const DOC_CHANGES_AFTER: &str = "SELECT seq, bytes FROM change_log
     WHERE doc_id = $1 AND seq > $2 AND octet_length(bytes) > 0 ORDER BY seq";

pub(super) fn doc_changes_after(
    s: &mut Session,
    doc: DocId,
    after: Seq,
) -> Result<Vec<(Seq, Vec<u8>)>, StoreError> {
    s.query(DOC_CHANGES_AFTER, &[&doc.0, &big(after.0)?])?
        .iter()
        .map(|r| Ok((Seq(seq(col(r, "seq")?)?), col(r, "bytes")?)))
        .collect()
}

pub(super) fn received_at(s: &mut Session, at: Seq) -> Result<Option<i64>, StoreError> {
    Ok(s.query_opt(
        "SELECT received_ms FROM change_log WHERE seq = $1",
        &[&big(at.0)?],
    )?
    .map(|r| col::<Option<i64>>(&r, "received_ms"))
    .transpose()?
    .flatten())
}

/// [`Store::log_state`](crate::store::Store::log_state) in one statement (one snapshot).
pub(super) fn log_state(
    s: &mut Session,
    meta_key: &str,
) -> Result<crate::store::LogState, StoreError> {
    let row = s.query_one(
        "SELECT log_id,
                (SELECT coalesce(max(seq), 0) FROM change_log) AS last_seq,
                (SELECT value FROM meta WHERE key = $1) AS meta
         FROM store_state",
        &[&meta_key],
    )?;
    Ok(crate::store::LogState {
        log_id: col(&row, "log_id")?,
        last_seq: Seq(seq(col(&row, "last_seq")?)?),
        meta: col(&row, "meta")?,
    })
}

/// [`Store::credentials`](crate::store::Store::credentials) in one statement (one snapshot).
pub(super) fn credentials(
    s: &mut Session,
    sha256: &[u8; 32],
    meta_key: &str,
) -> Result<Option<crate::store::Credentials>, StoreError> {
    let row = s.query_opt(
        "SELECT t.device_id, t.staff_id, t.revoked,
                d.device_id AS d_device_id, d.staff_id AS d_staff_id, d.name AS d_name,
                d.created_ms AS d_created_ms, d.revoked AS d_revoked,
                d.token_sha256 AS d_token_sha256,
                s.staff_id AS s_staff_id, s.name AS s_name, s.role AS s_role,
                s.org_id AS s_org_id, s.teams AS s_teams, s.revoked AS s_revoked,
                (SELECT value FROM meta WHERE key = $2) AS meta
         FROM tokens t
         LEFT JOIN devices d ON d.device_id = t.device_id
         LEFT JOIN staff s ON s.staff_id = t.staff_id
         WHERE t.token_sha256 = $1",
        &[&&sha256[..], &meta_key],
    )?;
    row.as_ref().map(rows::credentials).transpose()
}

pub(super) fn access_epoch(s: &mut Session) -> Result<u64, StoreError> {
    let row = s.query_one("SELECT access_epoch FROM store_state", &[])?;
    seq(col(&row, "access_epoch")?)
}

pub(super) fn last_seq(s: &mut Session) -> Result<Seq, StoreError> {
    let row = s.query_one("SELECT coalesce(max(seq), 0) AS seq FROM change_log", &[])?;
    Ok(Seq(seq(col(&row, "seq")?)?))
}

/// The database's size on disk.
pub(super) fn database_size(s: &mut Session) -> Result<u64, StoreError> {
    let row = s.query_one("SELECT pg_database_size(current_database()) AS bytes", &[])?;
    let bytes: i64 = col(&row, "bytes")?;
    Ok(u64::try_from(bytes).unwrap_or(0))
}

pub(super) fn quarantine_list(s: &mut Session) -> Result<Vec<QuarantineEntry>, StoreError> {
    s.query("SELECT * FROM quarantine ORDER BY doc_id, hash", &[])?
        .iter()
        .map(rows::quarantine)
        .collect()
}

/// The largest number of change bytes one round trip of a scan fetched on this thread (tests).
#[cfg(test)]
pub(super) mod fetched {
    use std::cell::Cell;
    thread_local!(static LARGEST: Cell<usize> = const { Cell::new(0) });
    thread_local!(static FETCHES: Cell<usize> = const { Cell::new(0) });

    pub fn note(rows: &[postgres::Row]) {
        let bytes = rows
            .iter()
            .map(|r| r.get::<_, &[u8]>("bytes").len())
            .sum::<usize>();
        LARGEST.with(|l| l.set(l.get().max(bytes)));
        FETCHES.with(|f| f.set(f.get() + 1));
    }

    /// The largest fetch since the last call.
    pub fn take() -> usize {
        LARGEST.with(|l| l.replace(0))
    }

    /// The fetches made on this thread since the last call.
    pub fn fetches() -> usize {
        FETCHES.with(|f| f.replace(0))
    }
}
