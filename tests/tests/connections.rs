//! Nobody can starve everyone else at the connection level (issue 11): connections that never
//! finish a request, a kept-alive connection left idle, and one device opening live channel after
//! live channel do not keep other devices out. Real server processes under a real open-file
//! limit (`prlimit`), real sockets.

mod common;
use casenote_protocol::limits;
use common::*;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};
use tungstenite::{Message, WebSocket};

/// A safety net so that a broken test fails instead of hanging; never a measurement.
const PATIENCE: Duration = Duration::from_secs(60);

/// Whether the server closed `s` (end of stream or a reset) before `deadline`; whatever the
/// server sends first (an error answer) is read and ignored.
fn closed_by_server(mut s: &TcpStream, deadline: Instant) -> bool {
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        s.set_read_timeout(Some(left)).unwrap();
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return false
            }
            Err(_) => return true,
        }
    }
}

#[test]
fn connections_that_never_finish_a_request_do_not_keep_devices_out_past_the_fd_limit() {
    // 1,100 stalled connections against a server allowed 1,024 open files (issue 11).
    const STALLED: usize = 1_100;
    allow_open_files(STALLED as u64 + 512);
    let (tmp, data, staff) = demo_borough();
    let server = Server::start_with_fd_limit(&data, 1_024);
    let dev = device(&tmp, &server, &staff, "dev", "Mark Ellison");
    let case = dev.ok(&["case", "new", "--name", "Crowded Server Person"]);
    let token = token_of(&staff, "Priya Shah");
    let addr: SocketAddr = server.addr().parse().unwrap();

    // A kept-alive connection that finished one request and then says nothing more.
    let mut kept_alive = TcpStream::connect(addr).unwrap();
    kept_alive
        .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut answer = [0u8; 12];
    kept_alive.read_exact(&mut answer).unwrap();
    assert_eq!(&answer, b"HTTP/1.1 200");

    // Half of them send part of a request line, half send nothing at all; no token anywhere.
    let mut stalled: Vec<TcpStream> = Vec::new();
    for i in 0..STALLED {
        match TcpStream::connect_timeout(&addr, Duration::from_secs(5)) {
            Ok(mut s) => {
                if i % 2 == 0 {
                    let _ = s.write_all(b"GET /v1/who");
                }
                stalled.push(s);
            }
            Err(e) => {
                eprintln!("connection {i} of {STALLED} could not be made: {e}");
                break;
            }
        }
    }
    eprintln!("{} stalled connections open", stalled.len());

    // A device's requests are answered.
    let started = Instant::now();
    let agent = ureq::AgentBuilder::new().timeout(PATIENCE).build();
    let whoami = agent
        .get(&format!("{}/v1/whoami", server.url))
        .set("authorization", &format!("Bearer {token}"))
        .call();
    eprintln!(
        "whoami answered after {:?}: {:?}",
        started.elapsed(),
        whoami.as_ref().map(|r| r.status())
    );
    assert_eq!(
        whoami.map(|r| r.status()).map_err(|e| e.to_string()),
        Ok(200),
        "a device's whoami failed while {} connections stalled",
        stalled.len()
    );
    let started = Instant::now();
    dev.ok(&["plan", "append", &case, "--text", " seen despite the crowd"]);
    let out = dev.run(&["sync", "--json"]);
    eprintln!("sync finished after {:?}", started.elapsed());
    assert!(
        out.status.success(),
        "a device's sync failed while connections stalled: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The server itself closes every stalled connection and the idle kept-alive one.
    let deadline = Instant::now() + PATIENCE;
    assert!(
        closed_by_server(&kept_alive, deadline),
        "an idle kept-alive connection was never closed"
    );
    let still_open = stalled
        .iter()
        .filter(|s| !closed_by_server(s, deadline))
        .count();
    eprintln!(
        "the stalled connections were closed {:?} after the device's sync",
        started.elapsed()
    );
    assert_eq!(still_open, 0, "stalled connections the server never closed");
    let health = agent.get(&format!("{}/health", server.url)).call().unwrap();
    assert_eq!(health.status(), 200);
}

#[test]
fn one_device_trickling_sync_after_sync_does_not_keep_other_devices_out() {
    // More uploads than the server has connections for under 1,024 open files.
    const UPLOADS: usize = 1_000;
    allow_open_files(UPLOADS as u64 + 512);
    let (tmp, data, staff) = demo_borough();
    let server = Server::start_with_fd_limit(&data, 1_024);
    let dev = device(&tmp, &server, &staff, "dev", "Mark Ellison");
    let case = dev.ok(&["case", "new", "--name", "Patient Server Person"]);
    let greedy = token_of(&staff, "Priya Shah");
    let addr: SocketAddr = server.addr().parse().unwrap();

    // One device starts sync after sync with a 1 MiB body, and sends a byte of each now and
    // then: never stalled long enough to be timed out.
    let mut uploads: Vec<TcpStream> = Vec::new();
    for i in 0..UPLOADS {
        match TcpStream::connect_timeout(&addr, Duration::from_secs(5)) {
            Ok(mut s) => {
                let _ = write!(
                    s,
                    "POST /v1/sync HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {greedy}\r\n\
                     Content-Type: application/cbor\r\nContent-Length: 1048576\r\n\r\n"
                );
                uploads.push(s);
            }
            Err(e) => {
                eprintln!("upload {i} of {UPLOADS} could not connect: {e}");
                break;
            }
        }
    }
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let trickler = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                for s in &mut uploads {
                    let _ = s.write_all(&[0xa0]);
                }
                std::thread::sleep(Duration::from_secs(2));
            }
            uploads
        })
    };

    let started = Instant::now();
    dev.ok(&["plan", "append", &case, "--text", " heard over the trickle"]);
    let out = dev.run(&["sync", "--json"]);
    eprintln!(
        "another device's sync finished after {:?}: {:?}",
        started.elapsed(),
        out.status.code()
    );
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let uploads = trickler.join().unwrap();
    assert!(
        out.status.success(),
        "another device's sync failed while one device held {} uploads open: {}",
        uploads.len(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Opens the live channel as `token`; `Err(status)` if the server refuses the upgrade.
fn live(addr: SocketAddr, token: &str) -> Result<WebSocket<TcpStream>, u16> {
    use tungstenite::client::IntoClientRequest;
    let mut req = format!("ws://{addr}/v1/live")
        .into_client_request()
        .unwrap();
    req.headers_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    let stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    match tungstenite::client::client(req, stream) {
        Ok((ws, _)) => Ok(ws),
        Err(tungstenite::HandshakeError::Failure(tungstenite::Error::Http(resp))) => {
            Err(resp.status().as_u16())
        }
        Err(e) => panic!("live channel handshake: {e}"),
    }
}

/// Reads until the server closes `ws`; the close reason, or `None` if the server ended the
/// connection without one (or it was still open at the patience deadline: `Some("open")`).
fn close_reason(ws: &mut WebSocket<TcpStream>) -> Option<String> {
    loop {
        match ws.read() {
            Ok(Message::Close(frame)) => return frame.map(|f| f.reason.to_string()),
            Ok(_) => continue,
            Err(tungstenite::Error::Io(e))
                if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) =>
            {
                return Some("open".into())
            }
            Err(_) => return None,
        }
    }
}

/// Whether `ws` is open: a ping is answered with a pong.
fn answers_ping(ws: &mut WebSocket<TcpStream>) -> bool {
    if ws
        .send(Message::Ping(b"are you there".to_vec().into()))
        .is_err()
    {
        return false;
    }
    loop {
        match ws.read() {
            Ok(Message::Pong(p)) if p.as_ref() == b"are you there" => return true,
            Ok(Message::Close(_)) | Err(_) => return false,
            Ok(_) => continue,
        }
    }
}

#[test]
fn one_device_opening_live_channel_after_live_channel_does_not_keep_another_device_off_it() {
    // Enough open files that the live channel's own cap, not the process's, is what is reached.
    let attempts = limits::LIVE_CONNECTIONS_MAX + 1;
    allow_open_files(attempts as u64 + 512);
    let (_tmp, data, staff) = demo_borough();
    let server = Server::start_with_fd_limit(&data, 2 * attempts as u64 + 1_024);
    let addr: SocketAddr = server.addr().parse().unwrap();
    let greedy = token_of(&staff, "Priya Shah");
    let other = token_of(&staff, "Mark Ellison");

    let mut opened: Vec<WebSocket<TcpStream>> = Vec::new();
    let mut refused = None;
    for _ in 0..attempts {
        match live(addr, &greedy) {
            Ok(ws) => opened.push(ws),
            Err(status) => {
                refused = Some(status);
                break;
            }
        }
    }
    eprintln!(
        "one device opened {} live connections; then {refused:?}",
        opened.len()
    );

    // Another device still gets its live channel.
    let other_live = live(addr, &other);
    assert!(
        other_live.is_ok(),
        "another device was refused the live channel ({:?}) after one device opened {}",
        other_live.err(),
        opened.len()
    );

    // The greedy device's newest connection still works; its oldest were closed to make room
    // for its newer ones.
    let newest = opened.last_mut().expect("at least one connection");
    assert!(answers_ping(newest), "the newest connection was closed");
    let oldest = opened.first_mut().unwrap();
    assert_eq!(
        close_reason(oldest).as_deref(),
        Some(casenote_protocol::wire::LIVE_CLOSE_REPLACED),
        "the oldest connection was not replaced"
    );
}
