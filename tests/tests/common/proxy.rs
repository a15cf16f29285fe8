//! A fault-injecting TCP proxy on loopback: it forwards connections to a server and, by a seeded
//! schedule, cuts some of them part-way through a request or part-way through a response. The
//! decision is taken for every chunk forwarded, so a client that keeps its connections alive
//! meets faults as often as one that does not. A partition refuses new connections and kills the
//! open ones.

use rand::{Rng, SeedableRng};
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;

/// What the proxy has done so far.
#[derive(Default)]
pub struct Counts {
    pub connections: AtomicUsize,
    pub cut_requests: AtomicUsize,
    pub cut_responses: AtomicUsize,
    pub partitions: AtomicUsize,
}

pub struct FaultProxy {
    pub url: String,
    pub counts: Arc<Counts>,
    partitioned: Arc<AtomicBool>,
    open: Arc<Mutex<Vec<TcpStream>>>,
    stop: Arc<AtomicBool>,
}

impl FaultProxy {
    /// Proxies to `upstream` (host:port); each chunk forwarded is cut with probability `cut`.
    pub fn start(upstream: String, seed: u64, cut: f64) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let counts = Arc::new(Counts::default());
        let partitioned = Arc::new(AtomicBool::new(false));
        let open = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let next_seed = Arc::new(AtomicU64::new(seed));
        let (c, p, o, s) = (
            counts.clone(),
            partitioned.clone(),
            open.clone(),
            stop.clone(),
        );
        thread::spawn(move || {
            for client in listener.incoming() {
                if s.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(client) = client else { continue };
                c.connections.fetch_add(1, Ordering::SeqCst);
                if p.load(Ordering::SeqCst) {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                }
                let Ok(server) = TcpStream::connect(&upstream) else {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                };
                {
                    let mut open = o.lock().unwrap();
                    open.push(client.try_clone().unwrap());
                    open.push(server.try_clone().unwrap());
                }
                let up_seed = next_seed.fetch_add(1, Ordering::SeqCst);
                let down_seed = next_seed.fetch_add(1, Ordering::SeqCst);
                let (c1, c2) = (c.clone(), c.clone());
                let (client2, server2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                thread::spawn(move || {
                    pipe(client, server, up_seed, cut, || {
                        c1.cut_requests.fetch_add(1, Ordering::SeqCst);
                    })
                });
                thread::spawn(move || {
                    pipe(server2, client2, down_seed, cut, || {
                        c2.cut_responses.fetch_add(1, Ordering::SeqCst);
                    })
                });
            }
        });
        FaultProxy {
            url,
            counts,
            partitioned,
            open,
            stop,
        }
    }

    /// Starts or ends a partition: while it lasts no connection gets through, open ones included.
    pub fn partition(&self, on: bool) {
        if on && !self.partitioned.swap(true, Ordering::SeqCst) {
            self.counts.partitions.fetch_add(1, Ordering::SeqCst);
            for s in self.open.lock().unwrap().drain(..) {
                let _ = s.shutdown(Shutdown::Both);
            }
        } else if !on {
            self.partitioned.store(false, Ordering::SeqCst);
        }
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.url.trim_start_matches("http://"));
    }
}

/// Copies `from` to `to`; each chunk is, with probability `cut`, forwarded only in part and then
/// both ends are closed.
fn pipe(mut from: TcpStream, mut to: TcpStream, seed: u64, cut: f64, on_cut: impl FnOnce()) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut buf = [0u8; 8192];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if rng.gen_bool(cut) {
            let keep = rng.gen_range(0..n);
            let _ = to.write_all(&buf[..keep]);
            on_cut();
            let _ = from.shutdown(Shutdown::Both);
            let _ = to.shutdown(Shutdown::Both);
            return;
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}
