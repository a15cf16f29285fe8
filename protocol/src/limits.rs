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

/// Most changes for one document in one push. The device saves every edit as its own change, so a
/// heavily co-edited plan re-sent whole after a restore may carry thousands.
pub const PUSH_CHANGES_PER_DOC_MAX: usize = 20_000;

/// Most heads in a base. Heads are the concurrent tips of a document's history; more than a few
/// dozen means something is wrong with the sender.
pub const HEADS_MAX: usize = 256;

/// Longest free-text field accepted by the record API (a note body, a plan narrative edit). A long
/// MDT note is tens of KB; 1 MiB refuses accidents without refusing real writing.
pub const TEXT_BYTES_MAX: usize = 1024 * 1024;

/// Longest short field (a name, a reason, an NHS number, a role).
pub const SHORT_TEXT_BYTES_MAX: usize = 4 * 1024;

/// Nesting depth the CBOR decoder accepts. Our envelope nests four deep; anything far deeper is an
/// attack on the decoder's stack.
pub const CBOR_DEPTH_MAX: usize = 32;

/// Largest request body for the small JSON endpoints (whoami and the like).
pub const SMALL_BODY_BYTES_MAX: usize = 64 * 1024;

/// Offset between device and server clocks above which the sync is flagged (DESIGN.md, "Time").
pub const CLOCK_OFFSET_FLAG_MS: i64 = 5 * 60 * 1000;

/// Rounds a device runs in one `sync` before it stops (pages of a large pull plus one re-send of
/// full history when the server lacks a base). Guards against a server that always says "more".
pub const SYNC_ROUNDS_MAX: usize = 10_000;

/// Chunks of incremental saves a device keeps for one document before compacting it into one
/// snapshot. Loading cost grows with chunk count; compaction costs a full save.
pub const DEVICE_CHUNKS_BEFORE_COMPACT: usize = 64;

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

/// How many bytes of an oversized body the server reads and throws away before it answers 413.
/// An ordinary HTTP client writes its whole body before it reads the answer; if the server closed
/// the connection with the body unread, that client would see a connection reset instead of the
/// 413 and its JSON code. Draining up to one more request's worth costs little and is bounded;
/// a body declared larger than the limit plus this is refused without reading any of it.
pub const OVERSIZED_BODY_DRAIN_BYTES_MAX: usize = REQUEST_BYTES_MAX;

/// Default time after `occurred_at` beyond which filing a note needs a late-entry reason
/// (issue 4: "more than 24 hours"). Records written a day later are still useful, but practice
/// standards ask the writer to say why; the server may be configured with another value.
pub const LATE_ENTRY_AFTER_MS_DEFAULT: i64 = 24 * 60 * 60 * 1000;

/// Most materialised documents the server keeps between pushes for validating new changes
/// (issue 4). Materialising a document costs time in proportion to its history (about 10 ms at
/// 200 changes, over 100 ms at 2,000 on the reference machine), and a co-edited plan is pushed to
/// again and again; 128 covers the documents being edited at once by a busy team while bounding
/// memory (a small document costs tens of KB loaded).
pub const SERVER_DOC_CACHE_DOCS_MAX: usize = 128;

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

/// Documents whose readability one live connection remembers before it forgets them all and
/// asks the store again. Bounds a connection's memory however many documents change while it
/// is open; a device's working set (the shared plans of its team) is far smaller.
pub const LIVE_READ_CACHE_DOCS_MAX: usize = 4_096;

/// Bytes of the server's sled page cache (sled's own default is 1 GiB, which a large store would
/// fill). The server's hot set is the tail of the change log, the indexes of the caseloads being
/// synced and the directory; 64 MiB holds that for a busy team and keeps the server's resident
/// memory independent of how many documents it stores (issue "Fast at any caseload").
pub const SERVER_SLED_CACHE_BYTES: u64 = 64 * 1024 * 1024;

const _: () = assert!(LIVE_EVENT_DOCS_MAX * 20 + 64 <= LIVE_MESSAGE_BYTES_MAX);
const _: () = assert!(LIVE_PING_INTERVAL_MS > LIVE_SEND_TIMEOUT_MS);
