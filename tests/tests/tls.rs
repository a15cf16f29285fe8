//! TLS end to end, through real processes (issue 13): a server that terminates TLS itself with a
//! certificate from a throwaway CA made here, devices that trust that CA (`login --ca-file`) and
//! sync and listen over https and wss, devices that do not and are refused, and devices that
//! refuse plain http to anything but loopback unless told otherwise.

mod common;

use casenote_client_core::live;
use casenote_client_core::tls::{Endpoint, ServerOptions};
use common::*;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A throwaway CA and a server certificate it signed, as PEM files.
struct Pki {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

/// Makes a CA called `name` in `dir` and a certificate for 127.0.0.1 and localhost signed by it.
fn pki(dir: &Path, name: &str) -> Pki {
    std::fs::create_dir_all(dir).unwrap();
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name.push(DnType::CommonName, name);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().unwrap();
    let mut leaf = CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let cert = leaf.signed_by(&key, &issuer).unwrap();
    let files = Pki {
        ca: dir.join("ca.pem"),
        cert: dir.join("server.pem"),
        key: dir.join("server.key"),
    };
    std::fs::write(&files.ca, ca_cert.pem()).unwrap();
    std::fs::write(&files.cert, cert.pem()).unwrap();
    std::fs::write(&files.key, key.serialize_pem()).unwrap();
    files
}

/// Starts a server on `data` at `addr` terminating TLS with `pki`'s certificate.
fn tls_server(data: &Path, addr: &str, pki: &Pki) -> Server {
    let (cert, key) = (pki.cert.to_str().unwrap(), pki.key.to_str().unwrap());
    Server::start_with(data, addr, &["--tls-cert", cert, "--tls-key", key])
}

fn login_args<'a>(url: &'a str, ca: &'a Path, token: &'a str) -> Vec<&'a str> {
    vec![
        "login",
        "--server",
        url,
        "--ca-file",
        ca.to_str().unwrap(),
        "--token",
        token,
    ]
}

fn json_lines(out: &[u8]) -> Vec<Value> {
    String::from_utf8_lossy(out)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

#[test]
fn devices_trusting_the_trusts_ca_sync_and_hear_the_live_channel_over_tls() {
    let (tmp, data, staff) = demo_borough();
    let pki = pki(&tmp.path().join("pki"), "Castlebridge Trust CA");
    let server = tls_server(&data, "127.0.0.1:0", &pki);
    assert!(server.url.starts_with("https://"), "{}", server.url);

    let priya = Cli::new(tmp.path().join("priya"));
    let said = priya.ok(&login_args(
        &server.url,
        &pki.ca,
        &token_of(&staff, "Priya Shah"),
    ));
    assert!(said.contains(&server.url), "{said}");
    let mark = Cli::new(tmp.path().join("mark"));
    let mark_token = token_of(&staff, "Mark Ellison");
    mark.ok(&login_args(&server.url, &pki.ca, &mark_token));
    let case = priya.ok(&["case", "new", "--name", "Tls Person"]);
    assert!(priya.sync()["changes_up"].as_u64() >= Some(1));
    mark.sync();

    // The live channel over wss, with the same CA, as a device's library opens it.
    let endpoint = Endpoint::new(
        &server.url,
        ServerOptions {
            ca_pem: Some(std::fs::read(&pki.ca).unwrap()),
            ..ServerOptions::default()
        },
    )
    .unwrap();
    let mut channel = live::connect_to(&endpoint, &mark_token).expect("live channel over wss");
    let hello = channel
        .next(Duration::from_secs(30))
        .unwrap()
        .expect("hello");

    // Mark's CLI watches through the live channel (wss) while Priya files a note.
    let watcher = mark
        .command(&["sync", "--watch", "--for", "10s"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(2000));
    priya.ok(&["note", "add", &case, "--text", "Seen over TLS."]);
    assert_eq!(priya.sync()["changes_up"].as_u64(), Some(1));

    let deadline = Instant::now() + Duration::from_secs(30);
    let event = loop {
        match channel
            .next(Duration::from_secs(1))
            .expect("live channel open")
        {
            Some(e) if e.seq > hello.seq => break e,
            _ => assert!(Instant::now() < deadline, "no live event after the sync"),
        }
    };
    assert!(event.seq > hello.seq);
    channel.close();

    let out = watcher.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let syncs = json_lines(&out.stdout);
    // The watch's first sync found nothing new; a later one, poked by the live channel, the note.
    assert_eq!(
        syncs.first().map(|s| s["changes_down"].clone()),
        Some(0.into())
    );
    assert!(
        syncs
            .iter()
            .skip(1)
            .any(|s| s["changes_down"].as_u64() >= Some(1)),
        "the note never came down the live channel's poke: {syncs:?}"
    );
    let show = mark.show(&case);
    let notes = show["notes"].as_array().unwrap();
    assert!(
        notes
            .iter()
            .any(|n| n["content"]["text"] == "Seen over TLS."),
        "Mark's device lacks the note: {show}"
    );
}

#[test]
fn a_device_that_does_not_trust_the_servers_ca_is_refused_and_loses_nothing() {
    let (tmp, data, staff) = demo_borough();
    let pki_ok = pki(&tmp.path().join("pki"), "Castlebridge Trust CA");
    let stranger = pki(&tmp.path().join("other"), "Some Other CA");
    let server = tls_server(&data, "127.0.0.1:0", &pki_ok);
    let token = token_of(&staff, "Priya Shah");

    // No CA file: the built-in public roots do not know the trust's CA.
    let lost = Cli::new(tmp.path().join("no-ca"));
    let (code, err) = lost.fails(&["login", "--server", &server.url, "--token", &token]);
    assert_eq!(code, 3, "{err}");
    assert!(
        err.contains("could not be trusted") && err.contains("--ca-file"),
        "{err}"
    );
    assert!(!lost.store.exists(), "a refused sign-in made a store");
    // Another CA's file: refused the same.
    let (code, err) = lost.fails(&login_args(&server.url, &stranger.ca, &token));
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("could not be trusted"), "{err}");
    assert!(!lost.store.exists(), "a refused sign-in made a store");

    // A signed-in device whose server turns up with a certificate it does not trust keeps its
    // edits, and sends them once the server is the one it trusts again.
    let priya = Cli::new(tmp.path().join("priya"));
    priya.ok(&login_args(&server.url, &pki_ok.ca, &token));
    let case = priya.ok(&["case", "new", "--name", "Kept Person"]);
    let addr = server.addr();
    drop(server);
    let impostor = tls_server(&data, &addr, &stranger);
    let (code, err) = priya.fails(&["sync"]);
    assert_eq!(code, 3, "{err}");
    assert!(
        err.contains("could not be trusted") && err.contains("kept"),
        "{err}"
    );
    // Signing in again with the wrong CA changes nothing either.
    let (code, _) = priya.fails(&login_args(
        &impostor.url,
        &stranger.ca.with_extension("x"),
        &token,
    ));
    assert_eq!(code, 2);
    let status = priya.json(&["status", "--json"]);
    assert!(status["unsynced_docs"].as_u64() >= Some(1), "{status}");
    drop(impostor);
    let server = tls_server(&data, &addr, &pki_ok);
    assert!(priya.sync()["changes_up"].as_u64() >= Some(1));
    let mark = Cli::new(tmp.path().join("mark"));
    mark.ok(&login_args(
        &server.url,
        &pki_ok.ca,
        &token_of(&staff, "Mark Ellison"),
    ));
    mark.sync();
    assert_eq!(mark.show(&case)["record"]["name"], "Kept Person");
}

#[test]
fn a_ca_file_that_is_missing_empty_or_not_a_certificate_is_a_clear_error() {
    let (tmp, data, staff) = demo_borough();
    let pki = pki(&tmp.path().join("pki"), "Castlebridge Trust CA");
    let server = tls_server(&data, "127.0.0.1:0", &pki);
    let token = token_of(&staff, "Priya Shah");
    let empty = tmp.path().join("empty.pem");
    std::fs::write(&empty, "").unwrap();
    let garbage = tmp.path().join("garbage.pem");
    std::fs::write(
        &garbage,
        "-----BEGIN CERTIFICATE-----\n@@@\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let missing = tmp.path().join("missing.pem");
    let device = Cli::new(tmp.path().join("priya"));
    for (file, says) in [
        (&missing, "cannot read the CA file"),
        (&empty, "holds no certificate"),
        (&garbage, "not valid PEM"),
        (&pki.key, "holds no certificate"),
    ] {
        let (code, err) = device.fails(&login_args(&server.url, file, &token));
        assert_eq!(code, 2, "{file:?}: {err}");
        assert!(
            err.contains(says) && !err.contains("panicked"),
            "{file:?}: {err}"
        );
        assert!(
            !device.store.exists(),
            "{file:?}: a refused sign-in made a store"
        );
    }
}

#[test]
fn serve_refuses_a_missing_unreadable_or_mismatched_certificate_or_key() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("server");
    let one = pki(&tmp.path().join("one"), "One CA");
    let two = pki(&tmp.path().join("two"), "Two CA");
    let missing = tmp.path().join("missing.pem");
    let p = |p: &Path| p.to_str().unwrap().to_string();
    for (args, says) in [
        (vec!["--tls-cert".to_string(), p(&one.cert)], "--tls-key"),
        (vec!["--tls-key".to_string(), p(&one.key)], "--tls-cert"),
        (
            vec![
                "--tls-cert".into(),
                p(&missing),
                "--tls-key".into(),
                p(&one.key),
            ],
            "cannot read --tls-cert",
        ),
        (
            vec![
                "--tls-cert".into(),
                p(&one.key),
                "--tls-key".into(),
                p(&one.key),
            ],
            "holds no certificate",
        ),
        (
            vec![
                "--tls-cert".into(),
                p(&one.cert),
                "--tls-key".into(),
                p(&one.cert),
            ],
            "holds no private key",
        ),
        (
            vec![
                "--tls-cert".into(),
                p(&one.cert),
                "--tls-key".into(),
                p(&two.key),
            ],
            "does not go with",
        ),
    ] {
        let out = Command::new(SERVER_BIN)
            .args([
                "serve",
                "--data",
                data.to_str().unwrap(),
                "--listen",
                "127.0.0.1:0",
            ])
            .args(&args)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} served");
        assert!(
            err.contains(says) && !err.contains("panicked"),
            "{args:?}: {err}"
        );
    }
}

/// A non-loopback address of this machine (the first `hostname -I` prints).
fn local_address() -> String {
    let out = Command::new("hostname")
        .arg("-I")
        .output()
        .expect("run hostname -I");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .find(|a| !a.starts_with("127.") && !a.contains(':'))
        .expect("this machine has a non-loopback IPv4 address")
        .to_string()
}

#[test]
fn a_device_refuses_plain_http_to_a_non_loopback_address_unless_told_to_allow_it() {
    let (tmp, data, staff) = demo_borough();
    let server = Server::start_on(&data, "0.0.0.0:0");
    let port = server.url.rsplit(':').next().unwrap().to_string();
    let url = format!("http://{}:{port}", local_address());
    let token = token_of(&staff, "Priya Shah");

    let priya = Cli::new(tmp.path().join("priya"));
    let (code, err) = priya.fails(&["login", "--server", &url, "--token", &token]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("unencrypted")
            && err.contains("https://")
            && err.contains("--allow-insecure-http"),
        "{err}"
    );
    assert!(!priya.store.exists(), "a refused login made a store");

    // Refused before any connection: an address where nothing answers is refused the same.
    let (code, err) = priya.fails(&[
        "login",
        "--server",
        "http://10.255.255.1:9",
        "--token",
        &token,
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("unencrypted"), "{err}");

    // Told explicitly, the device signs in and syncs over plain http.
    priya.ok(&[
        "login",
        "--server",
        &url,
        "--allow-insecure-http",
        "--token",
        &token,
    ]);
    priya.sync();
}

#[test]
fn a_tls_server_closes_a_silent_handshake_and_still_stops_cleanly_on_sigterm() {
    use std::io::Read;
    let (tmp, data, staff) = demo_borough();
    let pki = pki(&tmp.path().join("pki"), "Castlebridge Trust CA");
    let server = tls_server(&data, "127.0.0.1:0", &pki);
    let priya = Cli::new(tmp.path().join("priya"));
    priya.ok(&login_args(
        &server.url,
        &pki.ca,
        &token_of(&staff, "Priya Shah"),
    ));

    // A peer that connects and never starts its handshake is closed, as one that never sends a
    // request head is (HTTP_HEADER_READ_TIMEOUT_MS), and holds nobody else up meanwhile.
    let mut silent = std::net::TcpStream::connect(server.addr()).unwrap();
    silent
        .set_read_timeout(Some(Duration::from_secs(120)))
        .unwrap();
    priya.sync();
    let mut buf = [0u8; 16];
    let read = silent.read(&mut buf);
    let closed = match &read {
        Ok(0) => true,
        Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
        Ok(_) => false,
    };
    assert!(closed, "a peer that said nothing was not closed: {read:?}");

    // SIGTERM with a wss live channel and a half-open handshake: the server still drains and
    // exits 0.
    let endpoint = Endpoint::new(
        &server.url,
        ServerOptions {
            ca_pem: Some(std::fs::read(&pki.ca).unwrap()),
            ..ServerOptions::default()
        },
    )
    .unwrap();
    let mut channel =
        live::connect_to(&endpoint, &token_of(&staff, "Mark Ellison")).expect("wss channel");
    channel
        .next(Duration::from_secs(30))
        .unwrap()
        .expect("hello");
    let _half_open = std::net::TcpStream::connect(server.addr()).unwrap();
    let status = server.stop();
    assert!(status.success(), "{status:?}");
}

/// `casenote-server admin --server URL ...` with the admin token in CASENOTE_ADMIN_TOKEN.
fn admin_over(url: &str, token: &str, args: &[&str]) -> std::process::Output {
    let mut all = vec!["admin", "--server", url];
    all.extend_from_slice(args);
    Command::new(SERVER_BIN)
        .args(all)
        .env("CASENOTE_ADMIN_TOKEN", token)
        .output()
        .expect("run casenote-server")
}

#[test]
fn the_admin_client_trusts_the_trusts_ca_and_refuses_plain_http_off_loopback() {
    let (tmp, data, _staff) = demo_borough();
    let issued = admin(&data, &["admin-token", "issue", "--name", "ops"]);
    let pki = pki(&tmp.path().join("pki"), "Castlebridge Trust CA");
    let other = pki_other(&tmp);
    let server = tls_server(&data, "127.0.0.1:0", &pki);
    let ca = pki.ca.to_str().unwrap();

    // With the trust's CA: an act runs on the live server over https.
    let out = admin_over(&server.url, &issued, &["--ca-file", ca, "list"]);
    assert!(
        out.status.success(),
        "admin over https with --ca-file: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("Castlebridge"));

    // Without it (the public roots), or with another CA: refused, nothing done.
    for extra in [vec![], vec!["--ca-file", other.to_str().unwrap()]] {
        let mut args = extra.clone();
        args.extend(["org", "add", "--name", "Never Added"]);
        let out = admin_over(&server.url, &issued, &args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success(),
            "an untrusted server was used: {extra:?}"
        );
        assert!(err.to_lowercase().contains("certificate"), "{err}");
    }
    let out = admin_over(&server.url, &issued, &["--ca-file", ca, "list"]);
    assert!(!String::from_utf8_lossy(&out.stdout).contains("Never Added"));

    // Plain http off loopback: refused before any connection, unless allowed.
    let out = admin_over("http://10.255.255.1:9", &issued, &["list"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("unencrypted"),
        "{err}"
    );
    assert!(err.contains("--allow-insecure-http"), "{err}");
    let missing = tmp.path().join("no-such-ca.pem");
    let out = admin_over(
        &server.url,
        &issued,
        &["--ca-file", missing.to_str().unwrap(), "list"],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("CA file"), "{err}");
}

/// Another CA's certificate, which the server's certificate was not signed by.
fn pki_other(tmp: &tempfile::TempDir) -> PathBuf {
    pki(&tmp.path().join("other"), "Some Other CA").ca
}
