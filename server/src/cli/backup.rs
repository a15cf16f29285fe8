//! `admin backup --out FILE` and `restore --from FILE`, the command line of [`crate::backup`].
//!
//! A backup is written to `FILE.tmp`, read back and checked whole ([`backup::check`]: every
//! record decodes, the trailer's SHA-256 matches), fsynced, and only then renamed to FILE (and
//! the directory fsynced): a backup cut short (a server that stopped, a full disk) never sits
//! under the final name. From a running server (`--server URL`) it streams the admin API's
//! answer to the file, saying on stderr how far it got every few seconds; from a stopped store
//! (`--data DIR`, `--postgres URL`) it runs the same traversal here.

use super::admin::{refusal, Place, Remote, Target};
use super::store::StoreArgs;
use crate::backup::{self, Restored, Summary};
use crate::model::By;
use crate::now_ms;
use anyhow::Context;
use casenote_protocol::limits;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How often a long backup says how far it got.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// Takes a backup where `target` says, into `out`.
pub fn save(target: &Target, out: &Path) -> anyhow::Result<(Summary, u64)> {
    let tmp = tmp_of(out);
    let done = match target.place()? {
        Place::Server(server) => fetch(&server, &tmp),
        Place::Store(args) => local(&args, &tmp),
    }
    .and_then(|()| finish(&tmp, out));
    if done.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    done
}

fn tmp_of(out: &Path) -> PathBuf {
    let mut name = out.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    out.with_file_name(name)
}

/// Streams the admin API's backup into `tmp`.
fn fetch(server: &Remote<'_>, tmp: &Path) -> anyhow::Result<()> {
    let base = server.base();
    // No overall timeout (a large store takes as long as it takes); a stall ends it.
    let stall = Duration::from_millis(limits::ADMIN_CLIENT_TIMEOUT_MS);
    let builder = ureq::AgentBuilder::new()
        .timeout_connect(stall)
        .timeout_read(stall)
        .timeout_write(stall);
    let resp = server
        .post(builder, "backup")
        .call()
        .map_err(|e| refusal(base, e))?;
    let mut file = create(tmp)?;
    let mut body = resp.into_reader();
    let mut buf = vec![0u8; limits::BACKUP_STREAM_CHUNK_BYTES];
    let (started, mut said, mut bytes) = (Instant::now(), Instant::now(), 0u64);
    loop {
        let n = body.read(&mut buf).with_context(|| {
            format!("the backup from {base} broke off after {bytes} bytes; nothing was kept")
        })?;
        if n == 0 {
            break;
        }
        file.write_all(&buf[..n])
            .with_context(|| format!("could not write {}", tmp.display()))?;
        bytes += n as u64;
        if said.elapsed() >= PROGRESS_EVERY {
            eprintln!(
                "casenote-server: backup: {} MiB so far ({} s)",
                bytes / (1024 * 1024),
                started.elapsed().as_secs()
            );
            said = Instant::now();
        }
    }
    file.flush()?;
    Ok(())
}

/// The same backup of a stopped store, taken here.
fn local(args: &StoreArgs, tmp: &Path) -> anyhow::Result<()> {
    let store = args.open_existing()?.store();
    let header = backup::begin(&*store, By::Cli, now_ms())?;
    let mut file = std::io::BufWriter::new(create(tmp)?);
    backup::write(&*store, header, &mut file)?;
    file.flush()?;
    Ok(())
}

fn create(path: &Path) -> anyhow::Result<std::fs::File> {
    std::fs::File::create(path).with_context(|| format!("could not create {}", path.display()))
}

/// Checks `tmp` whole, makes it durable and renames it to `out`.
fn finish(tmp: &Path, out: &Path) -> anyhow::Result<(Summary, u64)> {
    let file = std::fs::File::open(tmp)?;
    file.sync_all()?;
    let summary = backup::check(std::io::BufReader::new(&file))
        .context("the backup did not check out; nothing was kept")?;
    let bytes = file.metadata()?.len();
    std::fs::rename(tmp, out).with_context(|| format!("could not rename to {}", out.display()))?;
    let dir = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    std::fs::File::open(dir)?.sync_all()?;
    Ok((summary, bytes))
}

/// What `admin backup` prints.
pub fn render_saved(summary: &Summary, bytes: u64, out: &Path) -> String {
    let c = &summary.copied;
    format!(
        "backup of log {} up to change {}: {} changes, {} documents, {} devices, {} audit \
         entries; {} bytes in {}",
        summary.header.log_id,
        summary.header.cut.upto,
        c.changes,
        c.docs,
        c.devices,
        c.audit_entries,
        bytes,
        out.display()
    )
}

/// `restore --from FILE`: into the empty store `args` names (created if missing).
pub fn restore(from: &Path, args: &StoreArgs) -> anyhow::Result<Restored> {
    if !from.is_file() {
        anyhow::bail!("there is no backup file {}", from.display());
    }
    let store = args.open()?.store();
    let restored = backup::restore(from, &*store, By::Cli, now_ms())
        .with_context(|| format!("nothing usable was restored into {}", args.describe()))?;
    Ok(restored)
}

/// What `restore` prints.
pub fn render_restored(r: &Restored) -> String {
    let c = &r.summary.copied;
    format!(
        "restored {} changes, {} documents, {} devices, {} audit entries (the backup of log {} \
         up to change {}); the log id is now {}: every device will reset at its next sync and \
         re-send what the backup lacks",
        c.changes,
        c.docs,
        c.devices,
        c.audit_entries,
        r.summary.header.log_id,
        r.summary.header.cut.upto,
        r.log_id
    )
}
