-- casenote on PostgreSQL, schema version 1: everything the sled store keeps.
--
-- Conventions. Ids are uuid. Sequences (the change log's, the audit log's, the access epoch)
-- are bigint, counted from 1 with no gaps. Times are bigint milliseconds since the Unix epoch,
-- UTC, named *_ms: the server's clock, exactly as the application reads and compares it (no
-- rounding through timestamptz). Hashes are raw 32-byte bytea (sha256 and Automerge change
-- hashes). Every value a query filters, joins, orders or constrains is a column; the only
-- bodies are a device's pending access reconciliation (jsonb: a small state machine read and
-- written whole by that device's sync, never queried) and the sealed audit entry (json, kept
-- byte for byte because its hash covers it). Nothing is CBOR: a DBA can read every row.
--
-- There are no foreign keys: the application keeps references (a document names its case, a
-- device its member of staff) and never deletes what is referenced; a key-share lock on every
-- referenced row would only add lock traffic to the one serialised writer.
--
-- Writers: every write transaction first takes the transaction-level advisory lock
-- 7161130330549515365 ('casenote' in ASCII), so writes are serialised across every node and
-- change sequences become visible in commit order (see ARCHITECTURE.md, "Stores").

-- One row: the identity of the change log (devices whose cursor counts in another log reset)
-- and the access epoch, bumped by every access change.
CREATE TABLE store_state (
    one           boolean PRIMARY KEY DEFAULT true CHECK (one),
    log_id        uuid    NOT NULL,
    access_epoch  bigint  NOT NULL DEFAULT 0 CHECK (access_epoch >= 0)
);
INSERT INTO store_state (log_id) VALUES (gen_random_uuid());

-- Small named values of the application (the demo marker).
CREATE TABLE meta (
    key    text  PRIMARY KEY,
    value  bytea NOT NULL
);

-- The directory.
CREATE TABLE orgs (
    org_id  uuid PRIMARY KEY,
    name    text NOT NULL
);
CREATE TABLE teams (
    team_id  uuid PRIMARY KEY,
    org_id   uuid NOT NULL,
    name     text NOT NULL
);
CREATE TABLE staff (
    staff_id  uuid    PRIMARY KEY,
    name      text    NOT NULL,
    role      text    NOT NULL,          -- social_worker, nurse, ... (the model's Role)
    org_id    uuid    NOT NULL,
    teams     uuid[]  NOT NULL,          -- in the order they were given
    revoked   boolean NOT NULL
);
CREATE TABLE devices (
    device_id     uuid    PRIMARY KEY,
    staff_id      uuid    NOT NULL,
    name          text    NOT NULL,
    created_ms    bigint  NOT NULL,
    revoked       boolean NOT NULL,
    token_sha256  text    NOT NULL       -- hex, to find the token when the device is revoked
);
-- Bearer tokens, by the sha256 of the token: the token itself is never stored.
CREATE TABLE tokens (
    token_sha256  bytea   PRIMARY KEY CHECK (octet_length(token_sha256) = 32),
    device_id     uuid    NOT NULL,
    staff_id      uuid    NOT NULL,
    revoked       boolean NOT NULL
);

-- Cases: the teams around the person. cases_by_team answers "which cases is this team on".
CREATE TABLE cases (
    case_id     uuid   PRIMARY KEY,
    owner_org   uuid   NOT NULL,
    teams       uuid[] NOT NULL,
    created_ms  bigint NOT NULL
);
CREATE INDEX cases_by_team ON cases USING gin (teams);

-- Documents: the server-side header (fixed when first stored) and the current heads.
CREATE TABLE docs (
    doc_id        uuid    PRIMARY KEY,
    case_id       uuid    NOT NULL,
    kind          text    NOT NULL CHECK (kind IN ('case', 'note', 'plan', 'restricted')),
    owner_org     uuid    NOT NULL,
    access_teams  uuid[],                -- restricted documents only
    created_by    uuid    NOT NULL,
    created_ms    bigint  NOT NULL,
    heads         bytea[] NOT NULL,
    ops           bigint  NOT NULL CHECK (ops >= 0),
    filed_ms      bigint                 -- notes: when the server received the filing
);
CREATE INDEX docs_by_case ON docs (case_id, doc_id);

-- The change log. seq is allocated under the write lock, so it is gap-free and in commit
-- order; chain = sha256(previous chain || seq || doc_id || hash), 32 zero bytes before the
-- first entry, so the chain at the tail vouches for every entry before it. received_ms is the
-- server's clock when it received the change (NULL for changes a sled store kept from before
-- it recorded receipt times). Changes are Automerge's compressed bytes: stored out of line and
-- not compressed again.
CREATE TABLE change_log (
    seq          bigint PRIMARY KEY CHECK (seq > 0),
    doc_id       uuid   NOT NULL,
    hash         bytea  NOT NULL CHECK (octet_length(hash) = 32),
    chain        bytea  NOT NULL CHECK (octet_length(chain) = 32),
    received_ms  bigint,
    bytes        bytea  NOT NULL,
    CONSTRAINT change_log_doc_hash UNIQUE (doc_id, hash) INCLUDE (seq)
);
ALTER TABLE change_log ALTER COLUMN bytes SET STORAGE EXTERNAL;

-- Who first used each Automerge actor id: every later change under it must come from the same
-- member of staff on the same device.
CREATE TABLE actors (
    actor          bytea  PRIMARY KEY,
    staff_id       uuid   NOT NULL,
    device_id      uuid   NOT NULL,
    first_seen_ms  bigint NOT NULL
);

-- What the server has handed each device or accepted from it (so it knows what to evict).
CREATE TABLE device_docs (
    device_id  uuid NOT NULL,
    doc_id     uuid NOT NULL,
    PRIMARY KEY (device_id, doc_id)
);
-- Each device's access reconciliation: the epoch it was reconciled at, and the one it has
-- been sent and not yet confirmed (the application's PendingReconcile, as JSON).
CREATE TABLE device_sync (
    device_id         uuid   PRIMARY KEY,
    reconciled_epoch  bigint,
    pending           jsonb
);

-- Changes refused by the record rules: kept for an administrator, never relayed. The first
-- refusal of a change is kept.
CREATE TABLE quarantine (
    doc_id     uuid   NOT NULL,
    hash       bytea  NOT NULL CHECK (octet_length(hash) = 32),
    bytes      bytea  NOT NULL,
    reason     text   NOT NULL,          -- a fixed sentence, never record content
    staff_id   uuid   NOT NULL,
    device_id  uuid   NOT NULL,
    at_ms      bigint NOT NULL,
    PRIMARY KEY (doc_id, hash)
);

-- The hash-chained audit log. entry is the sealed entry exactly as its hash was computed
-- (json keeps the text byte for byte); the other columns repeat parts of it for queries.
CREATE TABLE audit (
    seq        bigint PRIMARY KEY CHECK (seq > 0),
    at_ms      bigint NOT NULL,
    kind       text   NOT NULL,
    staff_id   uuid,
    device_id  uuid,
    hash       text   NOT NULL,
    entry      json   NOT NULL
);
CREATE INDEX audit_by_staff ON audit (staff_id, seq) WHERE staff_id IS NOT NULL;

-- Key escrow: one wrap key per device store, handed to that device or another live device of
-- the same member of staff; destroyed when the device is revoked.
CREATE TABLE escrow (
    device_id  uuid  PRIMARY KEY,
    wrap_key   bytea NOT NULL CHECK (octet_length(wrap_key) = 32)
);
