//! Tests of the live channel (`GET /v1/live`, [`crate::api`]'s `live.rs`) over a real listener on
//! 127.0.0.1:0 and real WebSocket clients, and of group commit ([`crate::store`]).

use crate::api::{router, AppState};
use crate::auth::{self, Authenticated, Principal};
use crate::config::Config;
use crate::config::LiveSettings;
use crate::model::Staff;
use crate::store::sled::SledStore;
use crate::store::Store;
use crate::testkit;
use automerge::{Author, AutoCommit};
use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use casenote_protocol::record::{self, Identity};
use casenote_protocol::wire::{
    self, DocPush, LiveEvent, SyncRequest, CBOR_MEDIA_TYPE, PROTOCOL_VERSION,
};
use casenote_protocol::{CaseId, DocId, DocKind, ErrorBody, ErrorCode, Seq};
use http_body_util::BodyExt;
use serde_bytes::ByteBuf;
use std::net::TcpStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tower::ServiceExt;
use tungstenite::{Message, WebSocket};

/// A safety net so that a broken test fails instead of hanging; never a measurement.
const PATIENCE: Duration = Duration::from_secs(60);

pub(super) struct Server {
    _dir: tempfile::TempDir,
    pub(super) store: Arc<SledStore>,
    pub(super) state: AppState,
    pub(super) addr: std::net::SocketAddr,
    /// Alice and Bob are in North, Carol in South.
    pub(super) alice: String,
    pub(super) bob: String,
    pub(super) carol: String,
    pub(super) alice_staff: Staff,
    carol_staff: Staff,
}

impl Server {
    pub(super) async fn start(config: Config) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::sled::open(dir.path()).unwrap();
        let [(alice, alice_token), (_, bob_token), (carol, carol_token)] =
            crate::testkit::people(&*store);
        let state = AppState::new(store.clone(), config);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = router(state.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Server {
            alice: alice_token,
            bob: bob_token,
            carol: carol_token,
            alice_staff: alice,
            carol_staff: carol,
            store,
            state,
            addr,
            _dir: dir,
        }
    }

    /// Pushes a new case through `POST /v1/sync` (the path that publishes live events).
    pub(super) async fn push_case(&self, token: &str, staff: &Staff) -> DocId {
        let (_, push) = new_case(staff);
        self.push(token, push).await
    }

    /// Pushes one document through `POST /v1/sync`; the id the server acknowledged.
    pub(super) async fn push(&self, token: &str, push: DocPush) -> DocId {
        self.push_all(token, vec![push]).await[0]
    }

    /// Pushes documents in one `POST /v1/sync`; the ids the server acknowledged (all of them).
    pub(super) async fn push_all(&self, token: &str, docs: Vec<DocPush>) -> Vec<DocId> {
        let pushed = docs.len();
        let req = SyncRequest {
            version: PROTOCOL_VERSION,
            cursor: Seq(0),
            device_clock_ms: crate::now_ms(),
            docs,
            log_id: None,
            confirmed_reconcile: None,
            views: Vec::new(),
            restricted: Vec::new(),
        };
        let resp = router(self.state.clone())
            .oneshot(
                Request::post("/v1/sync")
                    .header(header::AUTHORIZATION, format!("Bearer {token}"))
                    .header(header::CONTENT_TYPE, CBOR_MEDIA_TYPE)
                    .body(Body::from(wire::encode(&req)))
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        let resp = wire::decode_response(&body).unwrap();
        assert_eq!(resp.acks.len(), pushed, "{:?}", resp.rejections);
        resp.acks.iter().map(|a| a.doc_id).collect()
    }

    /// Opens the live channel as `token` and reads the hello.
    pub(super) async fn listen(&self, token: &str) -> WebSocket<TcpStream> {
        let (addr, token) = (self.addr, token.to_string());
        tokio::task::spawn_blocking(move || {
            let mut ws = connect(addr, &token).expect("the live channel opens");
            let hello = next_event(&mut ws).expect("a hello");
            assert!(hello.docs.is_empty());
            ws
        })
        .await
        .unwrap()
    }
}

fn authored(staff: &Staff) -> AutoCommit {
    let mut doc = AutoCommit::new();
    doc.set_author(Some(Author::from(staff.staff_id.as_bytes().to_vec())));
    doc
}

pub(super) fn new_case(staff: &Staff) -> (CaseId, DocPush) {
    let case_id = CaseId::new_random();
    let mut doc = authored(staff);
    record::init_case(
        &mut doc,
        case_id,
        &Identity {
            name: "Peggy".into(),
            ..Identity::default()
        },
    )
    .unwrap();
    let changes = doc
        .get_changes(&[])
        .into_iter()
        .map(|mut c| ByteBuf::from(c.bytes().into_owned()))
        .collect();
    let push = DocPush {
        doc_id: DocId(case_id.0),
        case_id,
        kind: DocKind::Case,
        base: vec![],
        changes,
    };
    (case_id, push)
}

fn connect(
    addr: std::net::SocketAddr,
    token: &str,
) -> Result<WebSocket<TcpStream>, tungstenite::Error> {
    use tungstenite::client::IntoClientRequest;
    let mut req = format!("ws://{addr}/v1/live").into_client_request()?;
    if !token.is_empty() {
        req.headers_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
    }
    let stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(PATIENCE))?;
    match tungstenite::client::client(req, stream) {
        Ok((ws, _)) => Ok(ws),
        Err(tungstenite::HandshakeError::Failure(e)) => Err(e),
        Err(e) => panic!("handshake: {e}"),
    }
}

/// The next live event, or the error that ended the connection.
pub(super) fn next_event(ws: &mut WebSocket<TcpStream>) -> Result<LiveEvent, tungstenite::Error> {
    loop {
        match ws.read()? {
            Message::Binary(b) => return Ok(wire::decode_live_event(&b).unwrap()),
            Message::Close(frame) => {
                return Err(tungstenite::Error::Protocol(
                    tungstenite::error::ProtocolError::ResetWithoutClosingHandshake,
                ))
                .inspect_err(|_| eprintln!("closed: {frame:?}"))
            }
            _ => continue,
        }
    }
}

fn refused_code(err: tungstenite::Error) -> (u16, ErrorCode) {
    match err {
        tungstenite::Error::Http(resp) => {
            let body: ErrorBody = serde_json::from_slice(resp.body().as_deref().unwrap()).unwrap();
            (resp.status().as_u16(), body.code)
        }
        other => panic!("expected an HTTP refusal, got {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_live_channel_refuses_a_missing_unknown_or_revoked_token_with_the_usual_401s() {
    let s = Server::start(Config::default()).await;
    let carol_device = match auth::authenticate(&*s.store, &s.carol).unwrap() {
        Authenticated::Ok(p) => p.device_id,
        other => panic!("{other:?}"),
    };
    testkit::revoke(&*s.store, carol_device, 1);
    let addr = s.addr;
    let carol = s.carol.clone();
    tokio::task::spawn_blocking(move || {
        assert_eq!(
            refused_code(connect(addr, "").err().unwrap()),
            (401, ErrorCode::Unauthorized)
        );
        assert_eq!(
            refused_code(connect(addr, "cn_0000").err().unwrap()),
            (401, ErrorCode::Unauthorized)
        );
        assert_eq!(
            refused_code(connect(addr, &carol).err().unwrap()),
            (401, ErrorCode::DeviceRevoked)
        );
    })
    .await
    .unwrap();
    // A plain GET with a good token is told to upgrade, as JSON.
    let resp = router(s.state.clone())
        .oneshot(
            Request::get("/v1/live")
                .header(header::AUTHORIZATION, format!("Bearer {}", s.alice))
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UPGRADE_REQUIRED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_devices_newest_live_connection_replaces_its_oldest_even_when_every_slot_is_taken() {
    let live = LiveSettings::default()
        .with_connections_max(2)
        .with_per_device_max(2);
    let s = Server::start(Config::default().with_live(live)).await;
    let mut first = s.listen(&s.alice).await;
    let _second = s.listen(&s.alice).await;
    // Every slot is taken: another device is refused...
    let (addr, bob) = (s.addr, s.bob.clone());
    let refused =
        tokio::task::spawn_blocking(move || refused_code(connect(addr, &bob).err().unwrap()))
            .await
            .unwrap();
    assert_eq!(refused, (503, ErrorCode::LimitExceeded));
    // ...but Alice reconnecting (her first connection half-dead, say) gets in, in place of her
    // oldest connection, which is told why it was closed.
    let mut third = s.listen(&s.alice).await;
    let closed = tokio::task::spawn_blocking(move || loop {
        match first.read() {
            Ok(Message::Close(frame)) => return frame.map(|f| f.reason.to_string()),
            Ok(_) => continue,
            Err(e) => panic!("the replaced connection ended without a close frame: {e}"),
        }
    })
    .await
    .unwrap();
    assert_eq!(closed.as_deref(), Some(wire::LIVE_CLOSE_REPLACED));
    let alice = s.state.feed.settings().per_device_max;
    assert_eq!(alice, 2);
    let device = match auth::authenticate(&*s.store, &s.alice).unwrap() {
        Authenticated::Ok(p) => p.device_id,
        other => panic!("{other:?}"),
    };
    assert_eq!(s.state.feed.device_connections(device), 2);
    // The newest connection works.
    let pong = tokio::task::spawn_blocking(move || {
        third.send(Message::Ping(b"hi".to_vec().into())).unwrap();
        loop {
            match third.read().unwrap() {
                Message::Pong(p) => return p.to_vec(),
                _ => continue,
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(pong, b"hi");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_hears_of_a_colleagues_push_to_a_case_it_may_read_and_never_of_one_it_may_not() {
    let s = Server::start(Config::default()).await;
    let mut bob = s.listen(&s.bob).await;
    let mut alice = s.listen(&s.alice).await;

    let north = s.push_case(&s.alice, &s.alice_staff).await;
    let south = s.push_case(&s.carol, &s.carol_staff).await;
    let north_again = s.push_case(&s.alice, &s.alice_staff).await;

    let (bob_events, alice_next) = tokio::task::spawn_blocking(move || {
        // Events that wait for Bob's connection together come folded into one message, so read
        // until both North cases were named.
        let mut events: Vec<LiveEvent> = Vec::new();
        while !events.iter().any(|e| e.docs.contains(&north_again)) {
            events.push(next_event(&mut bob).unwrap());
        }
        // Alice pushed both North cases herself, so the first thing she hears of is nothing of
        // her own: check by having her read with a short timeout.
        alice
            .get_mut()
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let alice_next = next_event(&mut alice);
        (events, alice_next)
    })
    .await
    .unwrap();
    // Events come in order, so Carol's South case, pushed between the two, would have shown up
    // before the second North one or with it: it never reaches Bob.
    let named: Vec<DocId> = bob_events.iter().flat_map(|e| e.docs.clone()).collect();
    assert_eq!(named, vec![north, north_again]);
    assert!(bob_events.windows(2).all(|w| w[1].seq > w[0].seq));
    assert!(bob_events.iter().all(|e| !e.docs.contains(&south)));
    assert!(
        alice_next.is_err(),
        "a device is not told of its own pushes: {alice_next:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_that_never_reads_is_dropped_without_delaying_another_consumers_event() {
    let live = LiveSettings::default()
        .with_send_timeout(Duration::from_secs(1))
        .with_broadcast_events(64);
    let s = Server::start(Config::default().with_live(live)).await;
    // A case Bob may read, to make events that concern him, and a thousand more for the flood
    // (distinct: events waiting together are folded into one message naming each document once).
    let readable = s.push_case(&s.alice, &s.alice_staff).await;
    let cases = (0..1_000).map(|_| new_case(&s.alice_staff).1).collect();
    let batch: Vec<DocId> = s.push_all(&s.alice, cases).await;
    let mut reader = s.listen(&s.bob).await;
    let stuck = s.listen(&s.bob).await;
    assert_eq!(s.state.feed.connections(), 2);

    // The reader reads everything and counts; it returns the event naming `target`. It keeps the
    // events that are not the flood, because the event naming `target` may arrive before it
    // learns what `target` is.
    let received = Arc::new(AtomicUsize::new(0));
    let (target_tx, target_rx) = std::sync::mpsc::channel::<DocId>();
    let counter = received.clone();
    let flood: std::collections::HashSet<DocId> = batch.iter().copied().collect();
    let reader = tokio::task::spawn_blocking(move || {
        let mut target = None;
        let mut others: Vec<LiveEvent> = Vec::new();
        loop {
            if target.is_none() {
                target = target_rx.try_recv().ok();
            }
            if let Some(t) = target {
                if let Some(e) = others.iter().find(|e| e.docs.contains(&t)) {
                    return e.clone();
                }
            }
            let event = next_event(&mut reader).expect("the reader is never dropped");
            counter.fetch_add(1, Ordering::SeqCst);
            if event
                .docs
                .iter()
                .any(|d| *d != readable && !flood.contains(d))
            {
                others.push(event);
            }
        }
    });

    // Events of a thousand readable ids (about 17 KB each) until the stuck consumer's socket
    // buffers are full and its send times out, four at a time, each time waiting for the reader
    // to take in a message sent after them (a message folds every event waiting for it), so the
    // reader never lags.
    let mut published = 0usize;
    let began = std::time::Instant::now();
    while s.state.feed.connections() > 1 {
        assert!(published < 20_000, "the stuck consumer was never dropped");
        for _ in 0..4 {
            s.state.feed.publish(
                crate::sync::Stored {
                    upto: Seq(1),
                    docs: batch.clone(),
                    epoch: None,
                },
                None,
            );
            published += 1;
        }
        let before = received.load(Ordering::SeqCst);
        while received.load(Ordering::SeqCst) == before {
            assert!(!reader.is_finished(), "the reader was dropped");
            assert!(began.elapsed() < PATIENCE * 4, "the reader fell behind");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    // The stuck consumer is gone; the reader still hears of a real push at once.
    let bob_case = s.push_case(&s.alice, &s.alice_staff).await;
    target_tx.send(bob_case).unwrap();
    // One more event wakes the reader, in case the one naming `bob_case` came before the target.
    s.state.feed.publish(
        crate::sync::Stored {
            upto: Seq(1),
            docs: vec![readable],
            epoch: None,
        },
        None,
    );
    // (It may come folded with flood events still waiting for the reader.)
    let event = reader.await.unwrap();
    assert!(event.docs.contains(&bob_case), "{:?}", event.seq);

    // The dropped consumer finds its connection ended after what was buffered.
    let mut stuck = stuck;
    let ended = tokio::task::spawn_blocking(move || loop {
        if let Err(e) = next_event(&mut stuck) {
            return e;
        }
    })
    .await
    .unwrap();
    assert!(
        !matches!(ended, tungstenite::Error::Io(ref e) if e.kind() == std::io::ErrorKind::WouldBlock)
    );
}

#[test]
fn concurrent_pushes_share_flushes_and_every_acknowledged_change_survives_a_reopen() {
    const SYNCS: usize = 16;
    let dir = tempfile::tempdir().unwrap();
    let mut pushed: Vec<DocId> = Vec::new();
    {
        let store = crate::store::sled::open(dir.path()).unwrap();
        let s: &dyn Store = &*store;
        testkit::add_org(s, "Council").unwrap();
        testkit::add_team(s, "Council", "North").unwrap();
        let staff =
            testkit::add_staff(s, "Alice", "social_worker", "Council", &["North".into()]).unwrap();
        let devices: Vec<Principal> = (0..SYNCS)
            .map(|i| {
                let token = testkit::issue(s, &staff, &format!("tablet {i}"), 0)
                    .unwrap()
                    .token;
                match auth::authenticate(s, &token).unwrap() {
                    Authenticated::Ok(p) => p,
                    other => panic!("{other:?}"),
                }
            })
            .collect();
        store.flush().unwrap();

        // No flush may start until every sync is waiting for one.
        store.hold_flushes(true);
        let before = store.flush_count();
        let threads: Vec<_> = devices
            .into_iter()
            .map(|who| {
                let store = store.clone();
                let (case_id, push) = new_case(&who.staff);
                std::thread::spawn(move || {
                    let req = SyncRequest {
                        version: PROTOCOL_VERSION,
                        cursor: Seq(0),
                        device_clock_ms: crate::now_ms(),
                        docs: vec![push],
                        log_id: None,
                        confirmed_reconcile: None,
                        views: Vec::new(),
                        restricted: Vec::new(),
                    };
                    let rules = crate::validate::Rules::default();
                    let (resp, _) =
                        crate::sync::handle(&*store, &who, req, crate::now_ms(), &rules).unwrap();
                    (case_id, resp)
                })
            })
            .collect();
        let mut polls = 0;
        while store.flush_waiters() < SYNCS {
            std::thread::sleep(Duration::from_millis(5));
            polls += 1;
            assert!(polls < 12_000, "the syncs never reached their flush");
        }
        // Nothing is acknowledged while its flush has not happened.
        assert!(threads.iter().all(|t| !t.is_finished()));
        store.hold_flushes(false);
        for t in threads {
            let (case_id, resp) = t.join().unwrap();
            assert_eq!(resp.acks.len(), 1, "{:?}", resp.rejections);
            assert_eq!(resp.acks[0].stored, 1);
            pushed.push(DocId(case_id.0));
        }
        let flushes = store.flush_count() - before;
        assert!(
            flushes < SYNCS as u64,
            "{SYNCS} concurrent syncs ran {flushes} flushes"
        );
        assert!(store.durable_seq().unwrap() >= Seq(SYNCS as u64));
    }
    let store = crate::store::sled::open(dir.path()).unwrap();
    assert_eq!(store.last_seq().unwrap(), Seq(SYNCS as u64));
    for doc in pushed {
        let kept = crate::store::read(&*store, |t| t.doc(doc)).unwrap();
        assert!(kept.is_some(), "{doc} was lost");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_frame_ends_only_the_connection_that_sent_it() {
    let s = Server::start(Config::default()).await;
    let mut bob = s.listen(&s.bob).await;
    let mut noisy = s.listen(&s.bob).await;
    assert_eq!(s.state.feed.connections(), 2);
    let ended = tokio::task::spawn_blocking(move || {
        let frame = vec![0u8; casenote_protocol::limits::LIVE_MESSAGE_BYTES_MAX + 1];
        let _ = noisy.send(Message::Binary(frame.into()));
        loop {
            if let Err(e) = next_event(&mut noisy) {
                return e;
            }
        }
    })
    .await
    .unwrap();
    // Ended by the server, not by our own read timeout.
    assert!(
        !matches!(&ended, tungstenite::Error::Io(e)
            if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut)),
        "the oversized frame did not end the connection: {ended:?}"
    );
    let mut polls = 0;
    while s.state.feed.connections() > 1 {
        polls += 1;
        assert!(
            polls < 1_000,
            "the connection that sent the frame is still counted"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // The other connection is untouched and hears of the next push.
    let case = s.push_case(&s.alice, &s.alice_staff).await;
    let event = tokio::task::spawn_blocking(move || next_event(&mut bob).unwrap())
        .await
        .unwrap();
    assert_eq!(event.docs, vec![case]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_waiting_together_fold_into_one_message_of_the_highest_seq_and_the_readable_documents(
) {
    use super::live::{fold, waiting, Filter};
    let s = Server::start(Config::default()).await;
    let mut rx = s.state.feed.subscribe();
    let alice = match auth::authenticate(&*s.store, &s.alice).unwrap() {
        Authenticated::Ok(p) => p,
        other => panic!("{other:?}"),
    };
    let (bob_staff, _) = ready_staff(&s);
    let first = s.push_case(&s.bob, &bob_staff).await;
    let south = s.push_case(&s.carol, &s.carol_staff).await;
    let own = s.push_case(&s.alice, &s.alice_staff).await;
    let second = s.push_case(&s.bob, &bob_staff).await;

    let head = rx.recv().await.unwrap();
    let batch = waiting(head, &mut rx).ok().expect("nothing missed");
    assert_eq!(
        batch.len(),
        4,
        "every event waiting is taken, none waited for"
    );
    let bob_seqs: Vec<Seq> = batch
        .iter()
        .filter(|c| c.docs.contains(&first) || c.docs.contains(&second))
        .map(|c| c.seq)
        .collect();
    let store: Arc<dyn Store> = s.store.clone();
    let mut filter = Some(Filter::new(s.alice.clone(), alice.clone()));
    let folded = fold(&store, &mut filter, batch, alice.device_id)
        .await
        .ok()
        .expect("the filter decides")
        .expect("something for Alice");
    let mut expected = vec![first, second];
    expected.sort();
    assert_eq!(
        folded.1, expected,
        "neither South's case ({south}) nor her own ({own})"
    );
    assert_eq!(Some(folded.0), bob_seqs.into_iter().max());
    assert!(filter.is_some(), "the filter is kept for the next batch");

    // At most LIVE_COALESCE_EVENTS_MAX at a time: the rest stay for the next message.
    let max = casenote_protocol::limits::LIVE_COALESCE_EVENTS_MAX;
    for i in 0..=max {
        let stored = crate::sync::Stored {
            upto: Seq(1_000 + i as u64),
            docs: vec![first],
            epoch: None,
        };
        s.state.feed.publish(stored, None);
    }
    let head = rx.recv().await.unwrap();
    assert_eq!(waiting(head, &mut rx).ok().unwrap().len(), max);
    let rest = rx.recv().await.unwrap();
    assert_eq!(rest.seq, Seq(1_000 + max as u64));
}

/// After an event, a connection's next comes no sooner than the event interval, and what came
/// meanwhile is folded into it; the first event after a quiet spell goes at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_closer_than_the_interval_fold_into_the_next_message_sent_after_it() {
    let interval = Duration::from_millis(400);
    let live = LiveSettings::default().with_event_interval(interval);
    let s = Server::start(Config::default().with_live(live)).await;
    let mut bob = s.listen(&s.bob).await;
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = tokio::task::spawn_blocking(move || {
        for _ in 0..2 {
            let event = next_event(&mut bob).unwrap();
            tx.send((std::time::Instant::now(), event)).unwrap();
        }
    });
    let pushed = std::time::Instant::now();
    let first = s.push_case(&s.alice, &s.alice_staff).await;
    let rx = tokio::task::spawn_blocking(move || {
        let got = rx.recv_timeout(PATIENCE).expect("the first event");
        (got, rx)
    });
    let ((first_at, first_event), rx) = rx.await.unwrap();
    assert_eq!(first_event.docs, vec![first]);
    assert!(
        first_at - pushed < interval,
        "the first event after a quiet spell is not held back"
    );
    let second = s.push_case(&s.alice, &s.alice_staff).await;
    let third = s.push_case(&s.alice, &s.alice_staff).await;
    reader.await.unwrap();
    let (next_at, next) = rx.recv_timeout(PATIENCE).expect("the next event");
    let mut both = vec![second, third];
    both.sort();
    assert_eq!(next.docs, both, "one message for both pushes");
    assert!(next.seq > first_event.seq);
    assert!(
        next_at - first_at >= interval - Duration::from_millis(50),
        "sent {:?} after the first",
        next_at - first_at
    );
}

/// Bob's staff record (North, as Alice).
fn ready_staff(s: &Server) -> (Staff, Principal) {
    match auth::authenticate(&*s.store, &s.bob).unwrap() {
        Authenticated::Ok(p) => (p.staff.clone(), p),
        other => panic!("{other:?}"),
    }
}
