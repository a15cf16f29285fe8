//! The convergence model test: several devices make random edits, syncs, restarts, partitions and
//! syncs whose answer is lost on the way back; once the network heals and everyone syncs, every
//! device and a fresh device hold identical records, and every edit whose call returned is there.
//!
//! proptest shrinks a failure to a minimal schedule, prints it, and keeps its seed in a
//! `proptest-regressions/` file beside this test; commit that file, and every later run replays it
//! first.

use casenote_client_core::{Device, HttpTransport, Transport, TransportError};
use casenote_protocol::record::{Identity, NoteKind};
use casenote_protocol::wire::WhoAmI;
use casenote_protocol::CaseId;
use proptest::prelude::*;
use std::cell::Cell;
use std::path::PathBuf;

/// Every model device's store key (devices are reopened after simulated crashes).
fn model_key() -> casenote_client_core::StoreKey {
    casenote_client_core::StoreKey::from_bytes([0x6d; 32])
}

const DEVICES: usize = 3;
const STAFF: [&str; DEVICES] = ["Priya Shah", "Mark Ellison", "Ruth Adebayo"];

#[derive(Clone, Debug)]
enum Op {
    AppendPlan(usize),
    InsertAboutMe(usize, usize),
    AddNote(usize, bool),
    SetPathway(usize, u8),
    Sync(usize),
    /// The server stores the request, but its answer never reaches the device.
    SyncAnswerLost(usize),
    Restart(usize),
    Partition(usize),
    Heal(usize),
}

fn op() -> impl Strategy<Value = Op> {
    let dev = 0..DEVICES;
    prop_oneof![
        3 => dev.clone().prop_map(Op::AppendPlan),
        2 => (dev.clone(), any::<usize>()).prop_map(|(d, p)| Op::InsertAboutMe(d, p)),
        2 => (dev.clone(), any::<bool>()).prop_map(|(d, f)| Op::AddNote(d, f)),
        1 => (dev.clone(), 1u8..4).prop_map(|(d, v)| Op::SetPathway(d, v)),
        4 => dev.clone().prop_map(Op::Sync),
        1 => dev.clone().prop_map(Op::SyncAnswerLost),
        1 => dev.clone().prop_map(Op::Restart),
        1 => dev.clone().prop_map(Op::Partition),
        1 => dev.prop_map(Op::Heal),
    ]
}

/// A transport that can lose the answer after the server has acted on the request.
struct LosesAnswer {
    inner: HttpTransport,
    lose: Cell<bool>,
}

impl Transport for LosesAnswer {
    fn sync(&self, body: Vec<u8>) -> Result<Vec<u8>, TransportError> {
        let answer = self.inner.sync(body)?;
        if self.lose.replace(false) {
            return Err(TransportError::Unreachable {
                url: "test".into(),
                detail: "the answer was lost".into(),
            });
        }
        Ok(answer)
    }
    fn whoami(&self) -> Result<WhoAmI, TransportError> {
        self.inner.whoami()
    }
}

struct World {
    _tmp: tempfile::TempDir,
    _rt: tokio::runtime::Runtime,
    url: String,
    tokens: Vec<String>,
    dirs: Vec<PathBuf>,
    devices: Vec<Option<Device>>,
    partitioned: [bool; DEVICES],
    case: CaseId,
    markers: Vec<String>,
}

impl World {
    fn new() -> World {
        let tmp = tempfile::tempdir().unwrap();
        let store = casenote_server::open(&tmp.path().join("server")).unwrap();
        let demo =
            casenote_server::cli::demo::load(store.as_ref(), casenote_server::now_ms()).unwrap();
        let tokens: Vec<String> = STAFF
            .iter()
            .map(|name| {
                demo.tokens
                    .iter()
                    .find(|t| t.staff == *name)
                    .unwrap()
                    .token
                    .clone()
            })
            .collect();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        rt.spawn(casenote_server::run(
            listener,
            store,
            casenote_server::Config::default(),
            std::future::pending(),
        ));
        let dirs: Vec<PathBuf> = (0..DEVICES)
            .map(|i| tmp.path().join(format!("device-{i}")))
            .collect();
        let devices: Vec<Option<Device>> = dirs
            .iter()
            .zip(&tokens)
            .map(|(dir, token)| {
                let d = Device::open(dir, &model_key()).unwrap();
                d.login(&url, token).unwrap();
                Some(d)
            })
            .collect();
        let case = devices[0]
            .as_ref()
            .unwrap()
            .case_new(&Identity {
                name: "Model Person".into(),
                ..Default::default()
            })
            .unwrap();
        let mut world = World {
            _tmp: tmp,
            _rt: rt,
            url,
            tokens,
            dirs,
            devices,
            partitioned: [false; DEVICES],
            case,
            markers: Vec::new(),
        };
        for i in 0..DEVICES {
            world.sync(i, false);
        }
        world
    }

    fn dev(&self, i: usize) -> &Device {
        self.devices[i].as_ref().unwrap()
    }

    fn sync(&mut self, i: usize, lose_answer: bool) {
        if self.partitioned[i] {
            return;
        }
        let t = LosesAnswer {
            inner: HttpTransport::new(&self.url, &self.tokens[i]),
            lose: Cell::new(lose_answer),
        };
        match self.dev(i).sync_with(&t) {
            Ok(_) => {}
            Err(casenote_client_core::Error::Transport(TransportError::Unreachable { .. }))
                if lose_answer => {}
            Err(e) => panic!("device {i} failed to sync: {e}"),
        }
    }

    fn marker(&self, what: &str) -> String {
        format!("<{what}-{}>", self.markers.len())
    }

    fn apply(&mut self, op: &Op) {
        let case = self.case;
        match *op {
            Op::AppendPlan(i) => {
                let m = self.marker("plan");
                if self.dev(i).plan_append(case, &m).is_ok() {
                    self.markers.push(m);
                }
            }
            Op::InsertAboutMe(i, at) => {
                let m = self.marker("about");
                // Insert only at a marker boundary, so no marker is split by another.
                let shown = self.dev(i).show(case).unwrap();
                let text = shown["record"]["about_me"].as_str().unwrap();
                let boundaries: Vec<usize> = std::iter::once(0)
                    .chain(
                        text.char_indices()
                            .filter(|(_, c)| *c == '>')
                            .map(|(b, _)| text[..=b].chars().count()),
                    )
                    .collect();
                let pos = boundaries[at % boundaries.len()];
                self.dev(i).about_me_splice(case, pos, 0, &m).unwrap();
                self.markers.push(m);
            }
            Op::AddNote(i, file) => {
                let m = self.marker("note");
                let note = self
                    .dev(i)
                    .note_add(case, NoteKind::Visit, &m, None)
                    .unwrap();
                if file {
                    self.dev(i).note_file(note).unwrap();
                }
                self.markers.push(m);
            }
            Op::SetPathway(i, v) => self
                .dev(i)
                .plan_set(case, "pathway", &v.to_string())
                .unwrap(),
            Op::Sync(i) => self.sync(i, false),
            Op::SyncAnswerLost(i) => self.sync(i, true),
            Op::Restart(i) => {
                self.devices[i] = None;
                self.devices[i] = Some(Device::open(&self.dirs[i], &model_key()).unwrap());
            }
            Op::Partition(i) => self.partitioned[i] = true,
            Op::Heal(i) => self.partitioned[i] = false,
        }
    }

    fn settle(&mut self) {
        self.partitioned = [false; DEVICES];
        for _ in 0..3 {
            for i in 0..DEVICES {
                self.sync(i, false);
            }
        }
    }
}

fn cases() -> u32 {
    if std::env::var_os("CASENOTE_SLOW_TESTS").is_some() {
        48
    } else {
        8
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), max_shrink_iters: 200, ..ProptestConfig::default() })]

    #[test]
    fn every_replica_converges_and_keeps_every_edit_that_returned(ops in prop::collection::vec(op(), 5..40)) {
        let mut world = World::new();
        for op in &ops {
            world.apply(op);
        }
        world.settle();
        let first = world.dev(0).show(world.case).unwrap();
        for i in 1..DEVICES {
            prop_assert_eq!(&world.dev(i).show(world.case).unwrap(), &first, "device {} differs from device 0", i);
        }
        let fresh_dir = world._tmp.path().join("fresh");
        let fresh = Device::open(&fresh_dir, &model_key()).unwrap();
        // A new store on device 0's token: a reinstalled app pulling everything afresh.
        fresh.login(&world.url, &world.tokens[0]).unwrap();
        fresh.sync().unwrap();
        prop_assert_eq!(&fresh.show(world.case).unwrap(), &first, "the server's copy differs");
        let text = first.to_string();
        for m in &world.markers {
            prop_assert!(text.contains(m.as_str()), "{} was lost", m);
        }
    }
}
