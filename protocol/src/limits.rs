//! Every limit in casenote, each with the reason for its value.
//!
//! Both sides enforce these: the server on every request before it allocates, the device before it
//! sends. The `const _` checks at the bottom pin how the limits relate to one another.

/// Largest sync request body. A day offline writes perhaps 50 notes of a few KB each plus plan
/// edits: well under 1 MiB. 16 MiB leaves room for a device re-sending the whole history of a long
/// co-edited plan after a server restore, while bounding what one request can make the server hold.
pub const REQUEST_BYTES_MAX: usize = 16 * 1024 * 1024;

/// Soft limit on the change bytes in one sync response; the rest follows on the next page. Keeps a
/// cold pull of a large caseload resumable (a cut connection loses one page, not the whole pull)
/// and bounds the memory the server spends on one response.
pub const RESPONSE_CHANGE_BYTES_SOFT_MAX: usize = 4 * 1024 * 1024;

/// Largest single Automerge change. A change is one edit session on one document; a whole note's
/// text is far smaller. 4 MiB refuses pasted blobs without refusing any real edit.
pub const CHANGE_BYTES_MAX: usize = 4 * 1024 * 1024;

/// Most documents pushed in one request. A day's caseload work touches tens of documents; a first
/// sync after a long offline period may touch a few hundred.
pub const PUSH_DOCS_MAX: usize = 2_000;

/// Most changes in one push, over all its documents. The server stores a push in one atomic
/// transaction, and sled's memory for a transaction grows with its inserts (measured on the
/// reference machine: 20,000 changes, three inserts each, took about 250 MB that the process never
/// gave back; 1,000 changes about 30 MB), so this bounds what one request can make the server
/// hold. A device splits longer histories (a heavily co-edited plan re-sent whole after a restore
/// carries thousands of changes) over the rounds of one sync, [`PUSH_CHANGES_SOFT_MAX`] at a time.
pub const PUSH_CHANGES_MAX: usize = 4_000;

/// Changes a device packs into one push before it leaves the rest (of a document, too) for the
/// next round of the same sync: half the hard limit, so a device never meets it.
pub const PUSH_CHANGES_SOFT_MAX: usize = PUSH_CHANGES_MAX / 2;

/// Most heads in a base. Heads are the concurrent tips of a document's history; more than a few
/// dozen means something is wrong with the sender.
pub const HEADS_MAX: usize = 256;

/// Longest free-text field accepted by the record API (a note body, a plan narrative edit). A long
/// MDT note is tens of KB; 128 KiB (about 20,000 words) refuses accidents without refusing real
/// writing, and keeps a note (one operation per character) well inside [`DOC_OPS_MAX`].
pub const TEXT_BYTES_MAX: usize = 128 * 1024;

/// Longest short field (a name, a reason, an NHS number, a role).
pub const SHORT_TEXT_BYTES_MAX: usize = 4 * 1024;

/// Deepest nesting of objects (maps, lists, texts) in one record document, the root being depth
/// 0. The record schema nests three deep at most (a plan's actions map, an action, its fields; a
/// future assessment's tests map, a test, its evidence text); 8 leaves room for the schema to
/// grow. Everything that walks a document (validation, the record views, the export) relies on
/// this bound; the check itself walks with an explicit stack, so a document far deeper than this
/// (a device once pushed maps nested 100,000 deep) is refused, never walked by recursion.
pub const DOC_DEPTH_MAX: usize = 8;

/// Most objects (maps, lists, texts) visible in one record document. A note holds a handful; a
/// case or plan gains one object per alert, goal, action, team member and resolution, which is
/// hundreds over years of work with one person. 10,000 refuses a document built to exhaust the
/// server or a colleague's device while leaving ample room for real records, and bounds the cost
/// of walking one (validation, views) to a few milliseconds.
pub const DOC_OBJECTS_MAX: usize = 10_000;

/// Nesting depth the CBOR decoder accepts. Our envelope nests four deep; anything far deeper is an
/// attack on the decoder's stack.
pub const CBOR_DEPTH_MAX: usize = 32;

/// Largest request body for the small JSON endpoints (whoami and the like).
pub const SMALL_BODY_BYTES_MAX: usize = 64 * 1024;

/// Offset between device and server clocks above which the sync is flagged (docs/design.md, "Time").
pub const CLOCK_OFFSET_FLAG_MS: i64 = 5 * 60 * 1000;

/// Rounds a device runs in one `sync` before it stops (pages of a large pull plus one re-send of
/// full history when the server lacks a base). Guards against a server that always says "more".
pub const SYNC_ROUNDS_MAX: usize = 10_000;

/// Chunks of incremental saves a device keeps for one document before compacting it into one
/// snapshot. Loading cost grows with chunk count; compaction costs a full save.
pub const DEVICE_CHUNKS_BEFORE_COMPACT: usize = 64;

/// Documents a device keeps in memory once loaded (`client-core`'s `doc_cache`), so that an edit
/// or a sync does not replay a document's whole history again: a worker's visit touches a few
/// cases (a case document, a plan, some notes each), and W5's devices hold 20 documents.
pub const DEVICE_DOCS_CACHED_MAX: usize = 64;
/// Stored bytes (snapshot and chunks, as loaded) of the documents a device keeps in memory, all
/// together; a document larger than this alone is never kept. A loaded document takes a few
/// times its stored size in memory; one built by applying changes, as a cached document becomes
/// through edits and syncs, up to twenty times more than loaded (automerge 0.12: a W5L plan 324
/// bytes an operation built, 15.6 loaded). Putting the loaded document back at each compaction
/// took W5's process (20 devices and the server) from 215-220 to 160-177 MB but its relay p99
/// from 78-98 to 111-139 ms (bench/README.md, stop 37), so the cache keeps what it built.
pub const DEVICE_DOCS_CACHED_BYTES_MAX: usize = 4 * 1024 * 1024;

/// Threads one push may use on the server for its Automerge work (decoding and validating
/// documents, before the write lock): the machine's cores, at most this many. A push of many
/// documents (back from a visit, a first sync) then takes a fraction of the time, and one push
/// cannot take over a large machine.
pub const VALIDATE_THREADS_MAX: usize = 4;

// How long opening a store waits for sled's lock (a store just closed in the same process lets go
// a moment later) is `casenote_sled_recovery::LOCK_WAIT`, beside the code that waits.

/// Argon2id memory cost for a passphrase-derived device key: 19 MiB with 2 passes is OWASP's
/// recommended floor. It costs about a tenth of a second per CLI command on this machine, and makes
/// each guess at a stolen laptop's passphrase cost the same.
pub const PASSPHRASE_ARGON2_MEMORY_KIB: u32 = 19 * 1024;
/// Argon2id passes; see [`PASSPHRASE_ARGON2_MEMORY_KIB`].
pub const PASSPHRASE_ARGON2_ITERATIONS: u32 = 2;
/// Shortest passphrase accepted for a device key. Argon2id slows guessing; it cannot make a
/// four-letter word safe.
pub const PASSPHRASE_BYTES_MIN: usize = 12;

/// How long a device may go without reaching the server before it locks until its user signs in
/// again (the server may set another value). Three days covers a weekend without signal; longer and
/// a lost device stays readable to whoever has it.
pub const DEVICE_LOCK_AFTER_MS_DEFAULT: i64 = 72 * 3600 * 1000;
/// How long a device may go without reaching the server before it wipes itself (the server may
/// set another value). Two weeks covers annual leave with the device left at home; a device silent
/// for longer is lost or out of use, and its records are safer gone (the server has them all except
/// unsynced edits, which a device this long offline is told about when it locks).
pub const DEVICE_WIPE_AFTER_MS_DEFAULT: i64 = 14 * 24 * 3600 * 1000;

/// Bytes of a device store's escrowed wrap key (`server/src/escrow.rs`): a 256-bit key, the size
/// of every key the device store uses.
pub const ESCROW_KEY_BYTES: usize = 32;

/// Room a device store keeps on its disk (`client-core/src/disk.rs`): a commit that would leave
/// less free is refused before sled writes anything, and each store keeps a reserve file of this
/// size, given up when the disk is full so that the store still opens, reads and closes. sled
/// writes up to one log segment (512 KiB) as it opens and rewrites whole tree nodes as it flushes;
/// 8 MiB covers both many times over and is nothing beside a phone's storage.
pub const DEVICE_DISK_HEADROOM_BYTES: usize = 8 * 1024 * 1024;

/// The most a CA file given to a device may take (`login --ca-file`, or the PEM an app passes),
/// kept in its store for later syncs. A trust's own CA is a certificate or two of a few KiB, and
/// even Mozilla's whole root bundle is about 220 KiB; 1 MiB takes any real chain, and keeps a
/// wrong file (an image, a log) from being read whole.
pub const DEVICE_CA_PEM_BYTES_MAX: usize = 1024 * 1024;

/// Background sync interval while all is well: often enough that a colleague's edit arrives
/// within minutes without the live channel, rare enough to cost nothing on battery.
pub const SYNC_INTERVAL_MS: u64 = 5 * 60 * 1000;
/// First retry delay after a failed sync; doubles on each failure up to [`SYNC_BACKOFF_MAX_MS`].
pub const SYNC_BACKOFF_BASE_MS: u64 = 2_000;
/// Longest wait between retries: a device without signal all day tries a few times an hour, not
/// thousands of times.
pub const SYNC_BACKOFF_MAX_MS: u64 = 15 * 60 * 1000;
/// Shortest wait between two syncs started by events (connectivity changes, live pokes), so a
/// flapping connection cannot make the device poll in a tight loop.
pub const SYNC_MIN_GAP_MS: u64 = 1_000;

const _: () = assert!(CHANGE_BYTES_MAX <= REQUEST_BYTES_MAX);
const _: () = assert!(RESPONSE_CHANGE_BYTES_SOFT_MAX + CHANGE_BYTES_MAX <= REQUEST_BYTES_MAX);
const _: () = assert!(TEXT_BYTES_MAX < CHANGE_BYTES_MAX);
const _: () = assert!(SHORT_TEXT_BYTES_MAX < TEXT_BYTES_MAX);
const _: () = assert!(SMALL_BODY_BYTES_MAX < REQUEST_BYTES_MAX);

/// Change bytes a device packs into one push before it leaves the rest for the next round of the
/// same sync. Half the request limit leaves ample room for CBOR framing and headers, and keeps
/// each round's acknowledgement (and so what a cut connection costs) small.
pub const PUSH_BYTES_SOFT_MAX: usize = REQUEST_BYTES_MAX / 2;

const _: () = assert!(CHANGE_BYTES_MAX <= PUSH_BYTES_SOFT_MAX);

/// Most log entries one pull scans before it answers `more = true`. A device whose cursor is far
/// behind in a store full of documents it may not read would otherwise make one request walk the
/// whole log; this bounds the work per request while the cursor still advances past every entry
/// scanned. 100,000 entries is a fraction of a second of sled iteration.
pub const PULL_SCAN_ENTRIES_MAX: usize = 100_000;

/// Log entries a pull's scan reads into memory at once (`Txn::log_page`, also bounded by
/// [`RESPONSE_CHANGE_BYTES_SOFT_MAX`] of their bytes; a backfill reads a document's history in
/// batches of as many, `Txn::docs_page`): the scan reads the log inside its read
/// transaction, a batch at a time, and decides what the device may read between batches. 1,024
/// entries answers a busy device's usual pull in one batch and keeps a scan of many small entries
/// it may not read from holding more than a few hundred KB of them.
pub const PULL_SCAN_BATCH_ENTRIES: usize = 1_024;

/// Records read at once by id (`Txn::docs_in`, `Txn::cases_in`) where the server walks many:
/// the documents and cases a reconciliation finds a device may read, and a backfill's documents
/// ahead of their histories. On PostgreSQL a read per record was a round trip each, most of a
/// device's first sync. A backfill page that fills early has read at most this many records it
/// did not use (a few hundred bytes each), and the next page reads them again.
pub const RECORDS_PER_READ: usize = 256;

/// How many bytes of an oversized body the server reads and throws away before it answers 413.
/// An ordinary HTTP client writes its whole body before it reads the answer; if the server closed
/// the connection with the body unread, that client would see a connection reset instead of the
/// 413 and its JSON code. Draining up to one more request's worth costs little and is bounded;
/// a body declared larger than the limit plus this is refused without reading any of it.
pub const OVERSIZED_BODY_DRAIN_BYTES_MAX: usize = REQUEST_BYTES_MAX;

/// How long the server reads and throws away the body of a sync it refuses before reading it (401
/// for the token, 415 for the media type, 429 for one sync too many of a device), for the reason
/// of [`OVERSIZED_BODY_DRAIN_BYTES_MAX`]: a client that writes its whole body before reading
/// sees the answer and its code, not a reset connection (a revoked device must learn that it is
/// revoked, whatever its outbox holds). Bounded in time as well as in bytes, because the 429 is
/// there so that a device cannot hold more connections with uploads: 2 s is a 16 MiB body at
/// 64 Mbit/s. A slower client sees the reset, and retries; nothing is lost.
pub const REFUSED_BODY_DRAIN_MS: u64 = 2_000;

/// Refused syncs whose bodies the server drains at once ([`REFUSED_BODY_DRAIN_MS`]); one more is
/// answered with its body unread. A refusal costs nothing to whoever sends it (no token is needed
/// for a 401), and each one drained holds one of the [`HTTP_REQUESTS_IN_FLIGHT_MAX`] places for up
/// to 2 s: at most 16 of the 256 are ever spent so.
pub const REFUSED_BODY_DRAINS_MAX: usize = 16;
const _: () = assert!(REFUSED_BODY_DRAINS_MAX * 8 <= HTTP_REQUESTS_IN_FLIGHT_MAX);

/// Default time after `occurred_at` beyond which filing a note needs a late-entry reason
/// (issue 4: "more than 24 hours"). Records written a day later are still useful, but practice
/// standards ask the writer to say why; the server may be configured with another value.
pub const LATE_ENTRY_AFTER_MS_DEFAULT: i64 = 24 * 60 * 60 * 1000;

/// Most operations one document may hold over its whole history (every character typed is an
/// operation, and so is every field written or deleted). The server materialises a document to
/// validate changes to it, at 250 to 350 bytes of memory per operation (measured on the reference
/// machine: 100,001 operations took 35 MB whether they came in 20 changes or 20,000; 1,048,577
/// took 253 MB), so this bounds what one document can cost it: 250,000 operations is at most
/// about 85 MB. That holds years of daily work on a plan; a document that reaches the limit takes
/// no more changes and its writers are told to start a new one.
pub const DOC_OPS_MAX: u64 = 250_000;

/// Most operations the changes of one sync request may hold together, read from their columns
/// before automerge parses any ([`crate::chunk`]): parsing visits each (about 120 ns), and a
/// change of one run can claim any number in a few bytes. As many as the request may hold bytes:
/// text typed is a byte an operation, only runs of deletions are denser. At most about 2 s of a
/// core per request, honest or not.
pub const PUSH_OPS_MAX: u64 = REQUEST_BYTES_MAX as u64;
/// Operations a device packs into one sync request (client-core's engine, reading its changes'
/// columns as the server does): half of [`PUSH_OPS_MAX`], as the other soft limits are half of
/// theirs, so an honest device never meets the server's limit.
pub const PUSH_OPS_SOFT_MAX: u64 = PUSH_OPS_MAX / 2;

// One document's operations fit a device's packed push; a document at the most actors can still
// hold that many changes (at least one by each of them).
const _: () = assert!(DOC_OPS_MAX <= PUSH_OPS_SOFT_MAX);
const _: () = assert!(PUSH_OPS_SOFT_MAX < PUSH_OPS_MAX);
const _: () = assert!(DOC_ACTORS_MAX * DOC_ACTORS_MAX <= DOC_ACTOR_CHANGES_MAX);

/// Most actors (Automerge's writers) one document may hold: one per device store (a new one after
/// a store is wiped) and one per web app session that edits it. automerge 0.12 keeps, for each
/// 16 changes of a document's history, a clock of one counter per actor, so what a document costs
/// grows with changes x actors (see [`DOC_ACTOR_CHANGES_MAX`]); this bounds the actors a single
/// push or `/v1/repo` message can bring before any of it is loaded (a message of 40,000 actors
/// made the server's peak memory grow by 1.28 GB). A push that would bring in more is refused
/// (`rule_violation`).
pub const DOC_ACTORS_MAX: u64 = 4_096;

/// Most actors x changes one document may hold: the size of automerge's cached clocks (4 bytes
/// per actor per 16 changes), at most 32 MiB. Measured on the reference machine (what automerge
/// allocates loading a saved document of one-op changes, held after / at most during the load):
/// 250,000 changes by one actor 39 / 243 MiB, by 512 actors 76 / 265 MiB; 32,768 changes by
/// 4,096 actors 40 / 64 MiB (`protocol/examples/automerge_actors.rs`). Up to 512 actors a document reaches `DOC_OPS_MAX` first; a document
/// with more writers takes fewer changes (4,096 actors: 32,768), then is refused like a full one.
pub const DOC_ACTOR_CHANGES_MAX: u64 = 512 * 262_144;

/// Operations the server keeps materialised at once: documents being validated now plus the
/// cache of recently validated states (which gives way first), at up to
/// [`RESIDENT_BYTES_PER_OP`] bytes each (see [`DOC_OPS_MAX`]): about 100 MB. With the sled page
/// cache ([`SERVER_SLED_CACHE_BYTES`], which sled overshoots about fourfold) that keeps the
/// server within the 300 MB the W6 workload allows, whatever devices send, while holding the
/// plans a busy team edits (each a few thousand operations) many times over. A state loaded
/// from its save counts the bytes its load left allocated instead, in operations of
/// [`RESIDENT_BYTES_PER_OP`] (`server/src/validate/resident.rs`).
pub const SERVER_RESIDENT_OPS_MAX: u64 = 300_000;

/// Bytes of memory one materialised operation is counted at against
/// [`SERVER_RESIDENT_OPS_MAX`]: what a document built by applying changes holds, 250 to 350
/// bytes an operation (see [`DOC_OPS_MAX`]). A state automerge loads from its save holds far
/// less for text (a W5L plan of 34,000 operations: 324 bytes an operation built, 15.6 loaded;
/// a 100,000-character splice 212 and 1.1) and about as much for maps of many keys (237 and
/// 214), so such a state is weighed by what its load left allocated, divided by this
/// (`server/src/heap.rs`), and each operation added to it since counts whole.
pub const RESIDENT_BYTES_PER_OP: u64 = 350;

/// Bytes of the saved states of documents that [`SERVER_RESIDENT_OPS_MAX`] evicted from the
/// server's cache of validated states (`server/src/validate/resident.rs`). A state as automerge
/// saves it is compressed (a plan of 3,000 changes and 23,000 operations: 6.7 KB, where
/// materialised it takes hundreds of bytes an operation), and loads in about a quarter of the
/// time automerge takes to apply its history again, without reading the log (9 ms against
/// 32 ms, and against 100-200 ms in all from the log on a busy server). 64 MiB holds the saved
/// states of thousands of large plans; past it the oldest go.
pub const SERVER_SAVED_STATES_BYTES_MAX: u64 = 64 * 1024 * 1024;

/// Tokens whose credentials the sled store keeps in memory, so that a request is authenticated
/// without a store read and without leaving its async thread
/// (`server/src/store/sled/directory.rs`). An entry holds the token's, device's and staff
/// member's records, a few hundred bytes (the organisations' sharing value is kept once for
/// all), so 4,096 devices cost about 2 MB; past it the cache starts over (the next request of each
/// device reads its credentials again). A trust and a council's staff who sync within a few
/// minutes of each other are well within it.
pub const SERVER_CREDENTIALS_CACHED_MAX: usize = 4096;

/// Most WebSocket connections one server holds on `GET /v1/live` at once; one more is answered
/// 503 `limit_exceeded` and falls back to HTTP sync. Each connection costs a task, a small read
/// buffer (the server expects only pings from devices) and a slot in the broadcast, well under
/// 64 KiB in all, so 4,096 connections (the staff of a large trust on shift, per server node)
/// bound the live channel's memory to a few hundred MiB at worst.
pub const LIVE_CONNECTIONS_MAX: usize = 4_096;

/// Largest WebSocket message (and frame) on the live channel, either direction. Devices send
/// only ping, pong and close (a few bytes each), and the server's largest event is
/// [`LIVE_EVENT_DOCS_MAX`] document ids (about 17 bytes each in CBOR): 64 KiB holds that with
/// ample room, and a device that sends more is disconnected by the WebSocket layer itself before
/// the server buffers it.
pub const LIVE_MESSAGE_BYTES_MAX: usize = 64 * 1024;

/// Most document ids one live event names. A sync that changed more (a device back from a week
/// offline) is announced as an event with an empty list, which means "something you may read
/// changed; sync". The device learns what changed from the sync anyway; the list only lets an
/// app skip syncs it does not care about.
pub const LIVE_EVENT_DOCS_MAX: usize = 1_024;

/// How long the server waits for one live message to be written to a device's socket. A device
/// that does not read (asleep, on a dead link) fills its socket buffers and then stalls the
/// write; after this long it is disconnected and will resync over HTTP. Other devices never wait
/// for it: each connection has its own task. 10 s covers a 64 KiB message on a poor mobile link.
pub const LIVE_SEND_TIMEOUT_MS: u64 = 10_000;

/// How often the server pings each live connection. Keeps NAT and proxy mappings open (many
/// drop idle TCP after 60 s or more), finds dead peers (the ping's write times out), and
/// re-checks the device's token, so a revoked device is disconnected within this interval.
pub const LIVE_PING_INTERVAL_MS: u64 = 30_000;

/// Events the server's live broadcast holds for its slowest connection. A connection whose task
/// falls this far behind (its device reads too slowly, or the host is overloaded) is told
/// `lagged` and closed; it resyncs over HTTP, which loses nothing (the events only say "sync").
/// 1,024 events is seconds of a busy server's syncs, and at most a few hundred KiB.
pub const LIVE_BROADCAST_EVENTS_MAX: usize = 1_024;

/// Times a live connection tries a store read again when the store answers busy (PostgreSQL's
/// pool had no connection within its wait) before it closes as failed: an overload under a burst
/// of syncs passes, and a closed connection's device reconnects and resyncs, which adds load.
pub const LIVE_BUSY_RETRIES: u32 = 3;

/// Events one live connection folds into one message when they are already waiting for it (a
/// busy server publishes faster than a connection's task runs): the message names the highest
/// sequence and the documents of all of them, which says the same as the events one by one
/// ("durable up to seq; sync"), for one socket write instead of many. Bounded so that one
/// connection's turn stays short; the documents are bounded by [`LIVE_EVENT_DOCS_MAX`] anyway.
pub const LIVE_COALESCE_EVENTS_MAX: usize = 64;

/// Least time between two events on one live connection, in milliseconds. An event says
/// "durable up to seq; sync", so events that come closer together than this are folded into the
/// next one ([`LIVE_COALESCE_EVENTS_MAX`] at a time), which says the same: on a busy team (W5L:
/// 1,600 edits a second, each an event for 19 devices) a quarter of the messages and of the
/// devices' wake-ups (10 ms: a seventh, but a median relay 5 ms slower), for at most 5 ms more
/// before a device hears of an edit. The first event after a quiet spell goes at once.
pub const LIVE_EVENT_INTERVAL_MS: u64 = 5;

/// Documents whose readability one live connection remembers before it forgets them all and
/// asks the store again. Bounds a connection's memory however many documents change while it
/// is open; a device's working set (the shared plans of its team) is far smaller.
pub const LIVE_READ_CACHE_DOCS_MAX: usize = 4_096;

/// Bytes of the server's sled page cache (sled's own default is 1 GiB, which a large store would
/// fill). The server's hot set is the tail of the change log, the indexes of the caseloads being
/// synced and the directory; 16 MiB holds that for a busy team. sled's resident memory runs to
/// about four times this figure under sustained writes (measured: 2.4 million small inserts
/// settled at 140 MB with 32 MiB, 200 MB with 64 MiB), and it is that, not the figure itself,
/// that keeps the server's memory independent of how many documents it stores and inside the W6
/// bound together with [`SERVER_RESIDENT_OPS_MAX`]. 32 MiB left too little room: twelve
/// 20,000-change plans took the server to 300-340 MB on a loaded machine
/// (`tests/tests/starvation.rs`, `big_plans_...`).
pub const SERVER_SLED_CACHE_BYTES: u64 = 16 * 1024 * 1024;

/// Free bytes the server's data directory must keep for the store to accept a write (operators
/// may choose another floor with `serve --min-free-mb`). A write that reaches sled with no space
/// left fails, and sled then refuses every later write until the store is reopened; refusing
/// before that point is cheap and loses nothing. Before it flushes, sled holds a sync's writes in
/// memory and writes them in one go, so the floor must cover every sync that passed the check and
/// has not flushed yet: 256 MiB is sixteen of the largest requests at once, plus sled's 512 KiB
/// log segments and the snapshot it writes when it opens.
pub const STORE_FREE_BYTES_MIN_DEFAULT: u64 = 256 * 1024 * 1024;

/// Longest a write waits for the flush that makes it durable before it is refused (503
/// `store_full`) and the store is marked unwritable until that flush ends. A flush takes
/// milliseconds on a healthy disk and a second or two for a group of the largest requests on a
/// slow one; still running after 30 s, the disk (or sled) is stuck, and the device, whose own
/// request timeout is 120 s, hears a coded answer and keeps its edits instead of hanging.
pub const STORE_FLUSH_WAIT_MS_MAX: u64 = 30_000;

/// After sled failed a write (say, the disk filled between the free-space check and the write),
/// the store reopens sled to write again once space is back. A write or a `/ready` check tries
/// that at most once per this interval: each try reopens the database, and devices retrying
/// against a full disk must not turn into a storm of reopens, while writes resume within about a
/// second of space returning.
pub const STORE_REOPEN_INTERVAL_MS: u64 = 1_000;

/// Free bytes a reopen after a failed write needs, whatever the floor: sled writes a snapshot
/// and starts a 512 KiB log segment when it opens, and a reopen that fails for lack of space
/// leaves the store without even its reads until the next try.
pub const STORE_REOPEN_FREE_BYTES_MIN: u64 = 4 * 1024 * 1024;

/// How long a reopen waits for requests still using the failed sled handle to let go of it (they
/// are reads of a few milliseconds) before it gives up until the next try.
pub const STORE_REOPEN_WAIT_MS: u64 = 5_000;

/// Bytes of change log rewritten per transaction when a store written before the log's hash
/// chain existed gets its chain, once, at its first open: bounds that step's memory whatever the
/// size of the store.
pub const STORE_CHAIN_BUILD_BYTES_MAX: usize = 16 * 1024 * 1024;

/// Times a store write transaction is run again after another transaction changed what it read
/// (`StoreError::Conflict`), and times a sync runs its pull again when the device's state or the
/// access epoch moved under it. On one sled store conflicts come only from concurrent syncs of
/// one device or an access change landing mid-sync; on a shared database, also from other nodes.
/// Each retry waits a jittered back-off (below), so eight retries span at most about 0.2 s: a
/// request that still conflicts after that is answered 503 and retried by its device, rather
/// than holding a connection while others win the race.
pub const STORE_WRITE_RETRIES: u32 = 8;

/// Times a push judges its documents ahead again, outside the write lock, when another server
/// node stored changes to one of them between its judgement and its write (the judgement no
/// longer holds); the attempt after that judges in its write transaction, which cannot fail to
/// finish but holds the lock every node's writers wait on while it reads the document's new
/// changes and applies them (about 2.3 ms a push on two PostgreSQL nodes in W5L, where 60 % of
/// one node's pushes were judged there). A sled store has one node: its judgements always hold.
pub const PUSH_AHEAD_RETRIES: u32 = 2;

/// The back-off before retry n of a conflicting write is jittered up to n times this: short
/// against a sync's own cost (milliseconds), long enough for the winner to commit.
pub const STORE_WRITE_RETRY_BACKOFF_MS: u64 = 5;

const _: () = assert!(STORE_FREE_BYTES_MIN_DEFAULT >= 16 * REQUEST_BYTES_MAX as u64);
const _: () = assert!(
    STORE_WRITE_RETRIES as u64 * STORE_WRITE_RETRIES as u64 * STORE_WRITE_RETRY_BACKOFF_MS < 1_000
);
const _: () = assert!(STORE_REOPEN_WAIT_MS < STORE_FLUSH_WAIT_MS_MAX);
const _: () = assert!(STORE_REOPEN_FREE_BYTES_MIN <= STORE_FREE_BYTES_MIN_DEFAULT);
const _: () = assert!(STORE_CHAIN_BUILD_BYTES_MAX >= CHANGE_BYTES_MAX);

const _: () = assert!(LIVE_EVENT_DOCS_MAX * 20 + 64 <= LIVE_MESSAGE_BYTES_MAX);
const _: () = assert!(LIVE_COALESCE_EVENTS_MAX < LIVE_BROADCAST_EVENTS_MAX);
const _: () = assert!((TEXT_BYTES_MAX as u64) < DOC_OPS_MAX);
const _: () = assert!(DOC_OPS_MAX <= SERVER_RESIDENT_OPS_MAX);
const _: () = assert!(LIVE_PING_INTERVAL_MS > LIVE_SEND_TIMEOUT_MS);

// Connections (issue 11: nothing takes the server down). The server's accept loop and the HTTP
// layers enforce these (`server/src/listen.rs`); the live channel's own limits are above.

/// Most connections one server holds open at once, HTTP and live channel together. Each costs a
/// file descriptor, a task and buffers bounded by [`HTTP_HEAD_BYTES_MAX`]: at most a few hundred
/// MiB at this count, and room for [`LIVE_CONNECTIONS_MAX`] live listeners beside as many HTTP
/// connections. The server also stays [`FD_RESERVE`] below its open-file limit: under
/// `ulimit -n 1024` it holds 896. At the cap the connection that has waited longest for a
/// request is closed to make room (or, if every connection is busy with a request, the server
/// accepts no more until one ends).
pub const CONNECTIONS_MAX: usize = 8_192;

/// File descriptors the server keeps out of the connection cap for itself: sled's files (its
/// database, snapshots and blob files, opened on demand), the listener, the runtime's epoll and
/// wake-up descriptors, stdio, and the one connection accepted while the loop waits for room.
/// Running out of descriptors would fail a flush, which is far worse than a refused connection.
pub const FD_RESERVE: usize = 128;

/// Fewest connections the server allows itself however low its open-file limit, so that a
/// misconfigured limit still serves a few devices instead of none.
pub const CONNECTIONS_MIN: usize = 16;

/// How long a connection may take to send a whole request head (request line and headers), and
/// how long a kept-alive connection may sit without starting its next request (hyper runs one
/// timer for both). A device's head is under 1 KiB; even a poor 2G link with TCP's retransmission
/// backoff (1 + 2 + 4 s for three lost segments) delivers it well within 10 s. Past that the
/// connection is a stalled or hostile one and its slot is worth more to others. A server that
/// terminates TLS gives the handshake the same time before the head's own: two round trips and a
/// few KiB of certificates, no more than a head asks of the link.
pub const HTTP_HEADER_READ_TIMEOUT_MS: u64 = 10_000;

/// Largest request head (and read buffer) one connection may make the server hold. A device's
/// head is under 1 KiB; 32 KiB leaves room for the headers proxies add (and for the long paths
/// the refusal tests send) while bounding what [`CONNECTIONS_MAX`] connections that never finish
/// their heads can pin to 256 MiB (hyper's default would allow 400 KiB each, over 3 GiB).
pub const HTTP_HEAD_BYTES_MAX: usize = 32 * 1024;

/// How long a request body may go without a single byte arriving before the request is
/// abandoned (408 `request_timeout`). It is a stall timeout, not a deadline: an honest upload on
/// a slow link keeps arriving and is never cut, however long the whole body takes. 30 s rides
/// out a mobile handover, a tunnel or TCP's retransmission backoff (1 + 2 + 4 + 8 s after four
/// lost segments); a device gives up on a sync after 120 s in all anyway.
pub const HTTP_BODY_STALL_TIMEOUT_MS: u64 = 30_000;

/// How long a write to a connection may make no progress before the connection is closed: a
/// peer that stops reading its answers (or sends requests and never reads) fills its socket
/// buffers and then stalls the server's writes; it must not keep its slot. The same reasoning as
/// [`HTTP_BODY_STALL_TIMEOUT_MS`] gives the same value. The live channel gives up on a send
/// sooner ([`LIVE_SEND_TIMEOUT_MS`]).
pub const HTTP_WRITE_STALL_TIMEOUT_MS: u64 = 30_000;

/// How long `casenote-server admin --server URL` waits for the admin API's answer (issue 13).
/// An act is one transaction and a flush, well under a second; the slowest is `export` of a
/// large record or `audit verify` of a long audit log, which read the whole of either: 5
/// minutes lets those finish on a busy server and still ends a script that hit a dead one.
pub const ADMIN_CLIENT_TIMEOUT_MS: u64 = 300_000;

/// The most audit entries one `audit show` over the admin API answers (the last ones; issue 13).
/// An entry is about 400 bytes of JSON, so 50,000 is some 20 MB held once in memory, while a
/// busy server's whole log (a sync entry per sync) runs to millions. `--limit N` asks for fewer;
/// the whole log is `audit show --data DIR` on the store, or `audit verify` over the API.
pub const ADMIN_AUDIT_SHOW_ENTRIES_MAX: usize = 50_000;

/// How long the server, told to stop (SIGTERM), waits for the requests in flight to be answered
/// before it flushes and exits anyway (issue 13). A sync in flight may still be receiving its body
/// (at most [`HTTP_BODY_STALL_TIMEOUT_MS`] between bytes) and then pushes and flushes; 60 s lets
/// an honest one on a slow link finish, and stays under systemd's default 90 s stop timeout, after
/// which it would SIGKILL the process. Anything cut off was never acknowledged: its device sends
/// it again.
pub const SHUTDOWN_DRAIN_MS: u64 = 60_000;
const _: () = assert!(SHUTDOWN_DRAIN_MS > HTTP_BODY_STALL_TIMEOUT_MS);

/// Most syncs one device may have in progress at once (its body being read, its push being
/// stored). A device syncs one request at a time; an app and a CLI on one enrolment make two.
/// One more is answered 429 `limit_exceeded` at once, so that one device (a stolen token, a
/// bug) cannot hold every connection by trickling many uploads: a connection busy with a
/// request is never closed to make room, so this is what bounds one device's share. It bounds
/// its share of the server's cores too: a sync counts until its work ends, so one device keeps
/// at most this many threads busy validating what it sends.
pub const SYNCS_PER_DEVICE_MAX: usize = 4;

/// Most requests the server serves at once (issue 13; `server/src/api/guard.rs`), the live
/// channel (its own cap, [`LIVE_CONNECTIONS_MAX`]) and the probes (`/health`, `/ready`,
/// `/metrics`, which must answer most when the server is busiest) aside. One more is answered at
/// once with 503 `server_busy` and `Retry-After` ([`HTTP_BUSY_RETRY_AFTER_S`]) instead of
/// queueing: a device keeps its edits and retries, where a queue would only grow the wait of
/// everyone behind it. 256 is above the 200 devices the load test syncs at once, and four times
/// the blocking pool ([`SERVER_BLOCKING_THREADS_MAX`]), so the pool stays busy while many bodies
/// are still arriving on slow links (a body being read holds no thread); and it bounds the
/// request bodies held in memory at once to 256 x [`REQUEST_BYTES_MAX`] however many of the
/// [`CONNECTIONS_MAX`] connections send at once.
pub const HTTP_REQUESTS_IN_FLIGHT_MAX: usize = 256;

/// The `Retry-After` of a 503 `server_busy` answer, in seconds: about a busy sync's time, and
/// above the device's first backoff ([`SYNC_BACKOFF_BASE_MS`]); the device adds its own jitter.
pub const HTTP_BUSY_RETRY_AFTER_S: u64 = 5;

/// How many times one sync is sent again after a 503 `server_busy` answer (the server did
/// nothing with it), each after the answer's `Retry-After` (`client-core/src/transport.rs`):
/// a moment of overload costs a device a few seconds, not a failed sync, and a server that stays
/// overloaded gets the error back to the device (whose schedule backs off) within about half a
/// minute.
pub const SYNC_BUSY_RETRIES_MAX: u32 = 3;

/// The longest a device waits before one such retry, whatever the `Retry-After` says: one sync
/// call (a user waiting at the CLI) never sleeps for minutes on a server's word.
pub const SYNC_BUSY_RETRY_AFTER_MAX_S: u64 = 10;
const _: () = assert!(SYNC_BUSY_RETRY_AFTER_MAX_S >= HTTP_BUSY_RETRY_AFTER_S);

/// How long a short request (`/health`, `/ready`, `/metrics`, whoami, history, escrow, and every
/// admin act but the long readers) may take before it is answered 503 `request_timeout`
/// (issue 13; `server/src/api/guard.rs`). Such a request is one store transaction and at most
/// one flush, so it is done in well under a second; the longest honest wait in it is a flush
/// ([`STORE_FLUSH_WAIT_MS_MAX`], after which the store answers `store_full` itself) or a
/// PostgreSQL pool wait ([`PG_POOL_WAIT_MS_MAX`]), so 60 s is past both, and past the stalls a
/// body of at most [`SMALL_BODY_BYTES_MAX`] may have ([`HTTP_BODY_STALL_TIMEOUT_MS`]). Not
/// timed: `/v1/live` (open for hours by design), `/v1/sync` (an honest upload of
/// [`REQUEST_BYTES_MAX`] on a slow link may take minutes and is bounded by the stall timeout
/// instead, and its work by the flush wait and [`SYNCS_PER_DEVICE_MAX`]), and the admin acts that
/// read a whole log (`export`, `audit/show`, `audit/verify`, bounded by the admin client's
/// [`ADMIN_CLIENT_TIMEOUT_MS`]). A timed-out request's store work, already on the blocking
/// pool, may still finish: the answer says so.
pub const HTTP_REQUEST_TIMEOUT_MS: u64 = 60_000;
const _: () = assert!(HTTP_REQUEST_TIMEOUT_MS > STORE_FLUSH_WAIT_MS_MAX);
const _: () = assert!(HTTP_REQUEST_TIMEOUT_MS > PG_POOL_WAIT_MS_MAX);
const _: () = assert!(HTTP_REQUEST_TIMEOUT_MS > HTTP_BODY_STALL_TIMEOUT_MS);
const _: () = assert!(HTTP_REQUESTS_IN_FLIGHT_MAX >= SERVER_BLOCKING_THREADS_MAX);
const _: () = assert!(HTTP_REQUESTS_IN_FLIGHT_MAX < CONNECTIONS_MAX);
const _: () = assert!(HTTP_BUSY_RETRY_AFTER_S * 1000 >= SYNC_BACKOFF_BASE_MS);

/// How long the accept loop waits after `accept` fails (out of descriptors, out of memory)
/// before trying again, so that a persistent failure does not spin a core.
pub const ACCEPT_ERROR_BACKOFF_MS: u64 = 100;

/// Most live connections one device holds. A device runs one listener; a few more allow for an
/// app and a CLI `sync --watch` on the same enrolment, and for the old connection a device left
/// behind when its network dropped (the server notices a dead peer only at its next ping). A new
/// connection beyond this replaces the device's oldest one, which is closed with reason
/// `replaced`: a device that reconnects is never locked out by its own half-dead connection,
/// and one device can hold no more than this many of the [`LIVE_CONNECTIONS_MAX`] slots.
pub const LIVE_CONNECTIONS_PER_DEVICE_MAX: usize = 4;

// Refusals in the audit log (issue 11: a flood of refused requests must not flood the log).

/// The window over which repeated refusals of one kind (the same code, from the same device, or
/// from anyone unauthenticated) are counted instead of written one by one. The first refusal is
/// written at once; the rest of the window becomes one entry with a count, written when the
/// window ends. A minute keeps a flood to two entries a minute per kind, and an administrator
/// still reads who was refused, how often and within a minute of when.
pub const REFUSAL_AUDIT_WINDOW_MS: i64 = 60_000;

/// Most kinds of refusal counted at once. Kinds are keyed by code and device, which a peer cannot
/// invent without valid tokens, so this is reached only by very many real devices being refused
/// at once; then every pending count is written out and counting starts afresh. 1,024 pending
/// counts are well under 100 KiB.
pub const REFUSAL_AUDIT_KEYS_MAX: usize = 1_024;

const _: () = assert!(2 * LIVE_CONNECTIONS_MAX <= CONNECTIONS_MAX);
const _: () = assert!(CONNECTIONS_MIN <= CONNECTIONS_MAX);
const _: () = assert!(LIVE_CONNECTIONS_PER_DEVICE_MAX >= 2);
const _: () = assert!(SYNCS_PER_DEVICE_MAX >= 2 && SYNCS_PER_DEVICE_MAX < CONNECTIONS_MIN);
const _: () = assert!(LIVE_CONNECTIONS_PER_DEVICE_MAX < LIVE_CONNECTIONS_MAX);
// hyper refuses a buffer under 8 KiB.
const _: () = assert!(HTTP_HEAD_BYTES_MAX >= 8 * 1024);
const _: () = assert!(HTTP_HEADER_READ_TIMEOUT_MS < HTTP_BODY_STALL_TIMEOUT_MS);
const _: () = assert!(REFUSAL_AUDIT_WINDOW_MS > 0);

// The PostgreSQL store (server/src/store/postgres/).

/// Database connections one server process keeps at most. Write transactions run one at a time
/// across every node (the write lock), so more connections only serve more reads at once: 16
/// per node covers the blocking threads busy with syncs on 2 cores many times over, and keeps
/// four nodes (64, plus one listener each) well inside PostgreSQL's default of 100 connections.
pub const PG_POOL_CONNECTIONS_MAX: usize = 16;

/// Longest a store call waits for a free connection, and a write transaction for its turn among
/// its node's writers (`server/src/store/postgres/writers.rs`), before it is refused (503 `server_busy`
/// with `Retry-After`: the device keeps its edits and retries): every connection busy for this
/// long means the server is overloaded or the database stuck, and a request must never wait
/// without bound.
pub const PG_POOL_WAIT_MS_MAX: u64 = 10_000;

/// Most writers that share one sled transaction and its commit
/// (`server/src/store/sled/writers.rs`). Each waits for the work of the writers after it in its
/// batch (tens of microseconds each: a sync's writes go to an overlay in memory) and the one
/// commit, so this bounds what sharing adds to a writer's wait; in W5L the batches that formed
/// held 2-4 writers, and a bound of 4 to 16 measured alike.
pub const SLED_WRITE_BATCH_MAX: usize = 8;

/// Bytes of writes past which a shared sled transaction is committed at once rather than handed
/// on. Each later writer copies the batch's writes before its own work, so that a failure undoes
/// its work alone: a batch of syncs of a few KB each costs nothing to copy, but eight pushes of
/// [`REQUEST_BYTES_MAX`] would copy hundreds of MB. A large push is then committed on its own,
/// as before batches.
pub const SLED_WRITE_BATCH_BYTES_MAX: usize = 1024 * 1024;

/// Most writers that share one PostgreSQL transaction and its commit
/// (`server/src/store/postgres/writers.rs`). Each waits for the work of the writers after it in
/// its batch before the commit, so this bounds what sharing adds to one writer's wait (a sync's
/// write is a few milliseconds of work; the commit one flush of the database's log): 32 covers
/// the syncs that queue on 2 cores under W5L's load, many times over the 2-4 that share a commit
/// at a steady few hundred writes a second.
pub const PG_WRITE_BATCH_MAX: usize = 32;

/// Longest a writer whose work is in a shared transaction waits for that transaction's commit
/// before it gives up with `unwritable` (nothing acknowledged; the device syncs again, and a
/// commit that did happen is deduplicated then): past a whole batch's work and one commit many
/// times over, and past the lock wait a writer opening a batch may have ([`PG_LOCK_WAIT_MS_MAX`]).
pub const PG_BATCH_COMMIT_WAIT_MS: u64 = 60_000;

/// Longest a new connection may take to open (an unset `connect_timeout` in the URL).
pub const PG_CONNECT_TIMEOUT_MS: u64 = 10_000;

/// Longest a write transaction waits for the write lock (PostgreSQL's `lock_timeout` on the
/// store's sessions); past it the write is refused with `store_full` and the device retries.
/// The same bound as sled's wait for a flush: write transactions hold the lock for
/// milliseconds, so 30 s behind it means a stuck node or database.
pub const PG_LOCK_WAIT_MS_MAX: u64 = STORE_FLUSH_WAIT_MS_MAX;
const _: () = assert!(PG_BATCH_COMMIT_WAIT_MS > PG_LOCK_WAIT_MS_MAX);

/// A session that sits this long inside a transaction without a statement is ended by
/// PostgreSQL (`idle_in_transaction_session_timeout`), releasing the write lock: a node that
/// hangs while holding it cannot stop every other node's writes for longer. Our transactions
/// do no slow work between statements (validation runs before the write), so a minute is
/// generous, and it is longer than the lock wait so that a waiting writer gives up first.
pub const PG_IDLE_IN_TRANSACTION_MS_MAX: u64 = 60_000;

/// Changes inserted into the log in one statement at most, and their bytes: a push holds at
/// most [`PUSH_CHANGES_MAX`] changes, inserted in a few statements whose parameters stay
/// bounded.
pub const PG_APPEND_ROWS_PER_INSERT: usize = 1_000;
/// Statements a PostgreSQL connection holds back to send with its next round trip (writes whose
/// answer is only success or failure): a writer's few are sent together, and a transaction that
/// writes thousands of rows without reading sends them this many at a time, so what waits in
/// memory stays bounded (each change-log insert is itself bounded below).
pub const PG_HELD_STATEMENTS_MAX: usize = 64;
pub const PG_APPEND_BYTES_PER_INSERT: usize = 8 * 1024 * 1024;

/// Rows a log scan fetches in one round trip at most, and the bytes it aims at per fetch: the
/// next fetch takes fewer rows after large ones, so a scan holds about this much (plus one
/// change) however long the range.
pub const PG_SCAN_ROWS_PER_FETCH_MAX: usize = 256;
pub const PG_SCAN_FETCH_BYTES: usize = 4 * 1024 * 1024;

/// Log rows (sequence and document id) a node's watch reads per wake-up at most; a longer run
/// is read over the next wake-ups, which follow at once.
pub const PG_WATCH_ROWS_MAX: usize = 10_000;

/// Ranges of its own sequences a node remembers for its watch at most (one per write that
/// appended changes, forgotten as the watch passes them); beyond it, while the watch is cut
/// off from the database, the oldest are forgotten, which only costs a wake-up too many.
pub const PG_WATCH_OWN_RANGES_MAX: usize = 100_000;

const _: () = assert!(PG_LOCK_WAIT_MS_MAX < PG_IDLE_IN_TRANSACTION_MS_MAX);
const _: () = assert!(PG_APPEND_ROWS_PER_INSERT <= PUSH_CHANGES_MAX);
const _: () = assert!(PG_APPEND_BYTES_PER_INSERT >= CHANGE_BYTES_MAX);
const _: () = assert!(PG_SCAN_FETCH_BYTES >= CHANGE_BYTES_MAX);

/// `migrate` copies a store in transactions of at most this many change bytes, and this many
/// records (documents, cases, actors, audit entries) of the other kinds: its memory stays
/// bounded whatever the size of the store, and each transaction holds the target's write lock
/// for a moment.
pub const STORE_COPY_BYTES_PER_TXN: usize = 16 * 1024 * 1024;
pub const STORE_COPY_RECORDS_PER_TXN: usize = 1_000;

const _: () = assert!(STORE_COPY_BYTES_PER_TXN >= CHANGE_BYTES_MAX);

/// Backups (`admin backup`, `restore`; issue 13). A backup file is a stream of frames, one record
/// each: the largest record is a change (at most `CHANGE_BYTES_MAX`) or a quarantined one, with
/// a few hundred bytes of fields; a device's holdings come in parts of
/// `STORE_COPY_RECORDS_PER_TXN` ids. Twice a change's limit leaves room for all of them, and a
/// restore refuses a longer frame before allocating it (a damaged length cannot make it
/// allocate gigabytes). A backup never writes a frame it would refuse.
pub const BACKUP_FRAME_BYTES_MAX: usize = 2 * CHANGE_BYTES_MAX;
/// The server streams a backup in chunks of this size through a channel of this many chunks:
/// at most 4 MiB waits for a slow client per backup, on top of the traversal's own batch
/// (`STORE_COPY_BYTES_PER_TXN`).
pub const BACKUP_STREAM_CHUNK_BYTES: usize = 256 * 1024;
pub const BACKUP_STREAM_CHUNKS_MAX: usize = 16;
/// Backups running at once on one server: each holds a blocking thread and up to some 20 MB for
/// as long as it streams; more than two at once is a mistake (a cron job started twice), and is
/// refused (429) rather than allowed to slow the syncs down.
pub const BACKUPS_AT_ONCE_MAX: usize = 2;

const _: () = assert!(BACKUP_FRAME_BYTES_MAX >= CHANGE_BYTES_MAX + 64 * 1024);
const _: () = assert!(BACKUP_FRAME_BYTES_MAX <= u32::MAX as usize);

/// How long the thread that follows other nodes' commits (a shared database's watch) waits for
/// one before it checks whether the server is stopping: a stop waits at most this long for it.
pub const LIVE_WATCH_WAIT_MS: u64 = 500;

/// How long that thread waits before trying again after the database could not be reached (it
/// then reads what it missed from its cursor): often enough that devices hear of other nodes'
/// changes soon after the database is back, rarely enough to be no load on one that is down.
pub const LIVE_WATCH_RETRY_MS: u64 = 1_000;
/// How long a device store's open waits for another process (or handle) to let go of the store:
/// `sync --watch` holds it only while it syncs, and a sync of a day's work takes a second or two,
/// a first sync of a whole caseload some seconds more. Past this, the open says the store is
/// busy rather than waiting on without bound.
pub const DEVICE_STORE_BUSY_WAIT_MS: u64 = 30_000;

/// How many key files the CLI tries against a store from before store ids that was moved (its
/// key file was named by its old path). Each try is a file read and one key unwrap, microseconds;
/// a keys directory holds one file per store on the machine.
pub const DEVICE_KEY_FILES_TRIED_MAX: usize = 1_000;

/// Threads the server runs store and Automerge work on at most (tokio's blocking pool; its own
/// default is 512). Every sync's work runs there, so under a burst from many devices on a slow
/// machine the pool grew a thread per waiting sync, each with its own allocator caches: 200
/// devices took the server to 351 MB on a loaded 2-core machine, over the W6 bound. 64 threads
/// keep many syncs waiting on one flush together (group commit needs company) while work beyond
/// them queues, within the connection and per-device caps and the request timeouts.
pub const SERVER_BLOCKING_THREADS_MAX: usize = 64;

// Reads on devices, audited (issue 16).

/// Most views of records (a case shown, exported) a device keeps waiting for upload to the
/// server's audit chain. One view is about 80 bytes sealed; a worker opens perhaps a hundred
/// records a day, so 10,000 is months offline, far past the offline lease's lock
/// ([`DEVICE_LOCK_AFTER_MS_DEFAULT`]). A device at the limit refuses to show another record until
/// it syncs (a view that cannot be audited is not shown), rather than drop one already queued.
pub const DEVICE_VIEWS_QUEUED_MAX: usize = 10_000;

/// Most views one sync request carries; the rest follow in the next rounds of the same sync.
/// Each becomes one audit entry in the sync's last write transaction, so this bounds that
/// transaction (1,000 small entries, about the size of a push of 1,000 changes' headers).
pub const SYNC_VIEWS_MAX: usize = 1_000;

const _: () = assert!(SYNC_VIEWS_MAX <= DEVICE_VIEWS_QUEUED_MAX);
const _: () = assert!(SYNC_VIEWS_MAX <= PUSH_CHANGES_MAX);

// Freshness (issue 16).

/// How old a device's copy of its records may be (since its last successful sync) before it
/// warns that what it shows may be out of date: 12 hours, a shift. A device older than that has
/// missed at least one handover; an alert raised by the night team may not be on it.
pub const DEVICE_STALE_AFTER_MS: i64 = 12 * 3600 * 1000;

const _: () = assert!(DEVICE_STALE_AFTER_MS < DEVICE_LOCK_AFTER_MS_DEFAULT);

/// Most subject access requests open at once. A council's whole caseload sees a few hundred a
/// year, each answered within a month; the open ones are one stored value rewritten at each
/// open and fulfilment, so this bounds that value (about 300 bytes each, 300 KB at the limit).
pub const SUBJECT_ACCESS_OPEN_MAX: usize = 1_000;

/// Most legal holds on one record at once. A record under hold is held by one or two proceedings
/// at a time (a claim, an inquiry); each hold is kept in the case's retention value, so this
/// bounds that value.
pub const RETENTION_HOLDS_MAX: usize = 16;

/// The automerge-repo endpoint (`GET /v1/repo`, issue 14). One WebSocket message (a CBOR
/// envelope around one Automerge sync message): the sync protocol sends one document's missing
/// changes in one message, so this must hold the largest change a device may push, with room
/// for the envelope; a peer that sends more is disconnected by the WebSocket layer before the
/// server buffers it. Not `REQUEST_BYTES_MAX`: every `/v1/repo` connection may hold one message
/// at once, and 512 of them at 16 MiB would be 8 GiB. A document whose unsynced backlog in one
/// browser exceeds this cannot sync over `/v1/repo` (a device can, over `POST /v1/sync`).
pub const REPO_MESSAGE_BYTES_MAX: usize = CHANGE_BYTES_MAX + 64 * 1024;
/// Bytes the deflated data of one `/v1/repo` message may inflate to, counted before automerge
/// loads any of it ([`crate::chunk`]): a saved document's columns are deflated, and deflate
/// grows data up to a thousandfold. A document at `DOC_OPS_MAX` inflates to a few MiB.
pub const REPO_INFLATED_BYTES_MAX: usize = 4 * REPO_MESSAGE_BYTES_MAX;
/// Documents one `/v1/repo` connection syncs at once. The server keeps an Automerge sync state
/// per (connection, document): the peer's heads and the bloom filter of what it has, a few
/// hundred bytes for a record's history, so 4,096 documents (a ward's caseload many times over;
/// the reconnect figure holds 1,000) cost at most a few MiB per connection. The documents
/// themselves are not kept per connection: each message materialises its document within the
/// server's resident budget (`SERVER_RESIDENT_OPS_MAX`), shared with validation. A document
/// beyond this is answered `doc-unavailable`.
pub const REPO_DOCS_PER_CONNECTION_MAX: usize = 4_096;
/// `/v1/repo` connections at once on one server node, each bounded as above (a few MiB); one
/// more is answered 503 before the upgrade. Ward PCs are a few hundred per hospital, and each
/// browser tab holds one connection.
pub const REPO_CONNECTIONS_MAX: usize = 512;
/// How often an idle `/v1/repo` connection checks the access epoch and its token: a revoked
/// token or a document that left the token's reach stops being served within this long even
/// when no message arrives (every message checks first anyway). One store read per connection
/// per second is nothing; a minute of an ex-colleague's open tab would be too much.
pub const REPO_ACCESS_CHECK_MS: u64 = 1_000;
/// Bytes of one file of the web app (`/app/`), read from `serve --app-dir` per request: the
/// built bundle with automerge's WebAssembly inlined is a few MiB.
pub const APP_FILE_BYTES_MAX: u64 = 16 * 1024 * 1024;

const _: () = assert!(REPO_MESSAGE_BYTES_MAX > CHANGE_BYTES_MAX);
// One message never holds more than a sync request may: the push it becomes is judged alike.
const _: () = assert!(REPO_MESSAGE_BYTES_MAX <= REQUEST_BYTES_MAX);

/// Data-sharing agreements in force at once (`casenote-server admin agreement add`). One per
/// pair of organisations that share: an integrated care system has tens of controllers (councils,
/// trusts, hospices, GP federations), so a few hundred pairs at most. They are one stored value
/// read at every authentication (about 250 bytes each, 250 KB at the limit).
pub const AGREEMENTS_MAX: usize = 1_000;
/// Objections to sharing recorded at once (`admin case object`). Objections are rare (a borough's
/// caseload of tens of thousands sees dozens a year); they live in the same value as the
/// agreements, read at every authentication (about 300 bytes each, 1.5 MB at the limit).
pub const OBJECTIONS_MAX: usize = 5_000;

// Sealed sections and break-glass (issue 16).

/// Teams a device may name on the access list of a restricted section it creates. An access
/// list names the few teams that handle the matter (the safeguarding hub, the locality team, a
/// ward); 32 is every team around a complex person many times over, and the list lives in every
/// read of the document's header.
pub const RESTRICTED_ACCESS_TEAMS_MAX: usize = 32;
/// Sealed-section stubs one sync response carries. A stub is about 200 bytes (ids, kind, a time,
/// whom to ask); a reconciliation sends the stubs of every case the device may read, and a
/// caseload of a few hundred cases has at most a few sealed sections each. 10,000 stubs are
/// about 2 MB, well inside a response; more are left for a later reconciliation (logged).
pub const SYNC_SEALED_STUBS_MAX: usize = 10_000;
/// How long a break-glass grant lets a member of staff read a sealed section: long enough for
/// an emergency visit or an out-of-hours shift's handling of one crisis, short enough that an
/// emergency never becomes standing access (the IG lead reviews every grant; staff who need
/// more are added to the access list by an administrator).
pub const BREAK_GLASS_GRANT_MS: i64 = 4 * 60 * 60 * 1000;
/// Bytes of a break-glass reason's text: a few sentences saying why it is urgent (the IG lead
/// reads it). Kept in the store, never in the log or the audit chain (which keep its hash).
pub const BREAK_GLASS_REASON_BYTES_MAX: usize = 2_000;
/// Break-glass records kept open at once: not yet reviewed by the IG lead, or still in force.
/// They are one stored value rewritten at each grant and review, so this bounds that value
/// (about 2.5 KB each at most, 5 MB at the limit). Break-glass is rare (a few a week across a
/// council); a full list means the IG lead has not reviewed hundreds of them, and a new grant is
/// refused until they do, which the refusal says.
pub const BREAK_GLASS_OPEN_MAX: usize = 2_000;

const _: () = assert!(BREAK_GLASS_GRANT_MS < DEVICE_LOCK_AFTER_MS_DEFAULT);
const _: () = assert!(BREAK_GLASS_REASON_BYTES_MAX < REQUEST_BYTES_MAX / 1_000);
