//! A fault-injecting TCP proxy on loopback: it forwards connections to a server and, by a seeded
//! schedule, cuts some of them part-way through the request or part-way through the response.

use rand::{Rng, SeedableRng};
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;

/// What the proxy has done so far.
#[derive(Default)]
pub struct Counts {
    pub connections: AtomicUsize,
    pub cut_requests: AtomicUsize,
    pub cut_responses: AtomicUsize,
}

pub struct FaultProxy {
    pub url: String,
    pub counts: Arc<Counts>,
    /// While set, every connection is refused at once (a partition).
    pub partitioned: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
}

impl FaultProxy {
    /// Proxies to `upstream` (host:port). Each connection is cut with probability `cut` in the
    /// request and `cut` in the response, after a random number of bytes.
    pub fn start(upstream: String, seed: u64, cut: f64) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let counts = Arc::new(Counts::default());
        let partitioned = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let rng = Arc::new(Mutex::new(rand::rngs::StdRng::seed_from_u64(seed)));
        let (c, p, s) = (counts.clone(), partitioned.clone(), stop.clone());
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
                let (cut_up, cut_down) = {
                    let mut r = rng.lock().unwrap();
                    let up = r.gen_bool(cut).then(|| r.gen_range(1..400));
                    let down = r.gen_bool(cut).then(|| r.gen_range(1..400));
                    (up, down)
                };
                let (c1, c2) = (c.clone(), c.clone());
                let (client2, server2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                thread::spawn(move || {
                    pipe(client, server, cut_up, move || {
                        c1.cut_requests.fetch_add(1, Ordering::SeqCst);
                    })
                });
                thread::spawn(move || {
                    pipe(server2, client2, cut_down, move || {
                        c2.cut_responses.fetch_add(1, Ordering::SeqCst);
                    })
                });
            }
        });
        FaultProxy {
            url,
            counts,
            partitioned,
            stop,
        }
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.url.trim_start_matches("http://"));
    }
}

/// Copies `from` to `to`; after `cut_after` bytes, if set, closes both ends.
fn pipe(mut from: TcpStream, mut to: TcpStream, cut_after: Option<usize>, on_cut: impl FnOnce()) {
    let mut buf = [0u8; 8192];
    let mut sent = 0usize;
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let n = match cut_after {
            Some(limit) if sent + n >= limit => {
                let _ = to.write_all(&buf[..limit - sent]);
                on_cut();
                let _ = from.shutdown(Shutdown::Both);
                let _ = to.shutdown(Shutdown::Both);
                return;
            }
            _ => n,
        };
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
        sent += n;
    }
    let _ = to.shutdown(Shutdown::Write);
}
