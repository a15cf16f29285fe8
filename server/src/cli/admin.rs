//! Where an admin act runs, and how its outcome is shown: [`Target`] is `--data DIR` or
//! `--postgres URL` (a stopped store, performed here as [`By::Cli`]) or `--server URL` with an
//! admin token (performed by the running server, `POST /v1/admin/{path}`, as that admin). Both
//! paths give an [`Outcome`], rendered by [`render`] alone, so `admin list --json` prints the same
//! whichever way it ran.
//!
//! The admin token comes from `CASENOTE_ADMIN_TOKEN` (kept out of the process list) or
//! `--admin-token`. The HTTP client is ureq (blocking, already in the tree through client-core),
//! reaching the server through client-core's `tls::Endpoint` as a device does: `https://` with
//! the built-in roots or only `--ca-file`'s CA, plain `http://` refused for anything but
//! loopback unless `--allow-insecure-http` (the admin token would cross the network in clear).

use super::store::StoreArgs;
use crate::admin::act::{self, Act, Outcome};
use crate::model::By;
use crate::{now_ms, Store};
use anyhow::Context;
use casenote_client_core::tls::{Endpoint, ServerOptions};
use casenote_protocol::{limits, ErrorBody};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// `--data DIR`, `--postgres URL`, or `--server URL` with `--admin-token TOKEN`.
#[derive(clap::Args, Clone, Debug)]
pub struct Target {
    /// The data directory of a stopped sled store.
    #[arg(long, value_name = "DIR")]
    pub data: Option<PathBuf>,
    /// A PostgreSQL database (or CASENOTE_POSTGRES_URL).
    #[arg(
        long,
        value_name = "URL",
        env = "CASENOTE_POSTGRES_URL",
        hide_env_values = true
    )]
    pub postgres: Option<String>,
    /// A running server, `https://HOST[:PORT]` (or `http://127.0.0.1:PORT` on this machine):
    /// the act runs there, with the admin token.
    #[arg(long, value_name = "URL")]
    pub server: Option<String>,
    /// With --server: trust only the CA certificate(s) in this PEM file (the organisation's own
    /// CA) instead of the built-in public roots.
    #[arg(long, value_name = "FILE", requires = "server")]
    pub ca_file: Option<PathBuf>,
    /// With --server: allow plain http to an address that is not this machine's loopback (the
    /// admin token and what the act returns then cross the network unencrypted).
    #[arg(long, requires = "server")]
    pub allow_insecure_http: bool,
    /// The admin token for --server (or CASENOTE_ADMIN_TOKEN, which keeps it out of the process
    /// list); `admin --data DIR admin-token issue --name N` makes the first one.
    #[arg(
        long,
        value_name = "TOKEN",
        env = "CASENOTE_ADMIN_TOKEN",
        hide_env_values = true
    )]
    pub admin_token: Option<String>,
}

/// How a stopped store is opened for an act.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Open {
    /// It must exist already (`admin`, `export`, `audit show`).
    Existing,
    /// As it is, healing nothing (`audit verify`).
    Inspect,
}

/// Where an act runs: a running server, or a stopped store.
pub enum Place<'a> {
    Server(Remote<'a>),
    Store(StoreArgs),
}

impl Target {
    /// Where the options say the act runs.
    pub fn place(&self) -> anyhow::Result<Place<'_>> {
        if let Some(server) = &self.server {
            if self.data.is_some() || self.postgres.is_some() {
                anyhow::bail!(
                    "give --server URL or a store (--data DIR, or --postgres URL or CASENOTE_POSTGRES_URL), \
                     not both"
                );
            }
            let token = self.admin_token.as_deref().context(
                "--server needs an admin token: set CASENOTE_ADMIN_TOKEN (or --admin-token)",
            )?;
            let endpoint = endpoint(server, self.ca_file.as_deref(), self.allow_insecure_http)?;
            return Ok(Place::Server(Remote { endpoint, token }));
        }
        let args = StoreArgs {
            data: self.data.clone(),
            postgres: self.postgres.clone(),
        };
        if args.data.is_some() == args.postgres.is_some() {
            anyhow::bail!("give exactly one of --data DIR, --postgres URL or --server URL");
        }
        Ok(Place::Store(args))
    }

    /// Runs `act` where the target says and returns its outcome.
    pub fn perform(&self, act: Act, open: Open) -> anyhow::Result<Outcome> {
        let args = match self.place()? {
            Place::Server(server) => return remote(&server, &act),
            Place::Store(args) => args,
        };
        let opened = match open {
            Open::Existing => args.open_existing()?,
            Open::Inspect => args.inspect()?,
        };
        let store: Arc<dyn Store> = opened.store();
        // A read flushes nothing: flushing a store opened to inspect it would write a new
        // high-water mark over the loss the next open must find.
        let writes = !act.reads_only();
        let outcome = act::perform(&*store, By::Cli, act, now_ms())?;
        if writes {
            store.flush()?;
        }
        Ok(outcome)
    }
}

/// A running server's admin API: its checked address and whom to trust for it, and the admin
/// token.
pub struct Remote<'a> {
    endpoint: Endpoint,
    token: &'a str,
}

impl Remote<'_> {
    /// The server's address, without a trailing slash.
    pub fn base(&self) -> &str {
        self.endpoint.url()
    }

    /// `POST /v1/admin/{path}` with the admin token, on an agent `builder` configures (its
    /// timeouts) that trusts what the endpoint says.
    pub fn post(&self, builder: ureq::AgentBuilder, path: &str) -> ureq::Request {
        builder
            .tls_config(self.endpoint.tls_config())
            .build()
            .post(&format!("{}/v1/admin/{path}", self.base()))
            .set("Authorization", &format!("Bearer {}", self.token))
    }
}

/// `--server` checked as a device checks its server: a well-formed address, plain http only to
/// loopback unless allowed, the CA file readable PEM.
fn endpoint(
    server: &str,
    ca_file: Option<&Path>,
    allow_insecure_http: bool,
) -> anyhow::Result<Endpoint> {
    let ca_pem = match ca_file {
        Some(path) => Some(
            read_bounded(path, limits::DEVICE_CA_PEM_BYTES_MAX as u64)
                .with_context(|| format!("cannot read the CA file {}", path.display()))?,
        ),
        None => None,
    };
    let options = ServerOptions {
        ca_pem,
        allow_insecure_http,
    };
    Endpoint::new(server, options).map_err(|e| match e {
        casenote_client_core::Error::InsecureHttp { .. } => {
            anyhow::anyhow!("--server: {e} (--allow-insecure-http)")
        }
        e => anyhow::anyhow!("--server: {e}"),
    })
}

/// A file's bytes, refused when it holds more than `max`.
fn read_bounded(path: &Path, max: u64) -> anyhow::Result<Vec<u8>> {
    use std::io::Read;
    let mut bytes = Vec::new();
    std::fs::File::open(path)?
        .take(max + 1)
        .read_to_end(&mut bytes)?;
    anyhow::ensure!(bytes.len() as u64 <= max, "it is larger than {max} bytes");
    Ok(bytes)
}

/// Sends `act` to the admin API of `server` and returns the outcome it answered.
fn remote(server: &Remote<'_>, act: &Act) -> anyhow::Result<Outcome> {
    let timeout = std::time::Duration::from_millis(limits::ADMIN_CLIENT_TIMEOUT_MS);
    let answer = server
        .post(ureq::AgentBuilder::new().timeout(timeout), act.path())
        .send_json(act);
    match answer {
        Ok(resp) => resp.into_json::<Outcome>().with_context(|| {
            format!(
                "the server at {} answered something unreadable",
                server.base()
            )
        }),
        Err(e) => Err(refusal(server.base(), e)),
    }
}

/// What the admin API's refusal (or an unreachable server) means, in words.
pub(super) fn refusal(base: &str, e: ureq::Error) -> anyhow::Error {
    match e {
        ureq::Error::Status(status, resp) => match resp.into_json::<ErrorBody>().ok() {
            Some(b) => anyhow::anyhow!("{} ({}, HTTP {status})", b.message, b.code),
            None => anyhow::anyhow!("the server at {base} answered HTTP {status}"),
        },
        e => anyhow::Error::new(e).context(format!("could not reach {base}")),
    }
}

/// The text (or JSON, with `json`) an outcome prints. `AuditBroken` prints its message; the caller
/// then exits 1.
pub fn render(outcome: &Outcome, json: bool) -> String {
    use super::{render_case, render_directory, render_quarantine};
    match outcome {
        Outcome::Org(o) => o.org_id.to_string(),
        Outcome::Team(t) => t.team_id.to_string(),
        Outcome::Staff(s) => s.staff_id.to_string(),
        Outcome::StaffTeam {
            staff_id,
            team_id,
            on,
            ..
        } => format!(
            "staff member {staff_id} is {}on team {team_id}",
            if *on { "" } else { "not " }
        ),
        Outcome::StaffRevoked { staff_id, devices } => format!(
            "revoked staff member {staff_id} and {} device(s)",
            devices.len()
        ),
        Outcome::TokenIssued {
            staff_id,
            device_id,
            token,
        } => match json {
            true => serde_json::json!({"staff_id": staff_id, "device_id": device_id,
                                       "token": token})
            .to_string(),
            false => token.clone(),
        },
        Outcome::DeviceRevoked { device_id } => format!("revoked device {device_id}"),
        Outcome::CaseTeam {
            case_id,
            team_id,
            on,
            ..
        } => format!(
            "team {team_id} is {}on case {case_id}",
            if *on { "" } else { "not " }
        ),
        Outcome::Case(c) => render_case(c, json),
        Outcome::RestrictedAccess {
            doc_id,
            team_id,
            granted,
            ..
        } => format!(
            "team {team_id} may {}see restricted document {doc_id}",
            if *granted { "" } else { "not " }
        ),
        Outcome::Directory(d) => render_directory(d, json),
        Outcome::Restored(r) => format!(
            "log id is now {} (was {}): every device will reset and re-send what it holds on its next sync",
            r.new, r.old
        ),
        Outcome::Quarantine { entries } => render_quarantine(entries, json),
        Outcome::AdminTokenIssued { admin_id, token } => match json {
            true => serde_json::json!({"admin_id": admin_id, "token": token}).to_string(),
            false => token.clone(),
        },
        Outcome::AdminTokenRevoked { admin_id } => format!("revoked admin token {admin_id}"),
        Outcome::AuditIntact { entries } => format!("audit log intact: {entries} entries"),
        Outcome::AuditBroken { message } => message.clone(),
        Outcome::AuditEntries { entries } => crate::audit::render(entries, json),
        Outcome::Exported(e) => format!(
            "{} documents: {} notes, {} restricted; {} changes with provenance",
            e.documents, e.notes, e.restricted, e.changes
        ),
        Outcome::SarOpened(r) => super::sar::render_opened(r),
        Outcome::SarList { requests } => super::sar::render_list(requests, json),
        Outcome::SarFulfilled(f) => super::sar::render_fulfilled(f, "record built"),
        Outcome::Agreement { agreement, .. } => super::controllers::render_agreement(agreement, "in force"),
        Outcome::AgreementEnded { agreement } => super::controllers::render_agreement(agreement, "ended"),
        Outcome::Agreements { agreements, objections } => super::controllers::render_list(agreements, objections, json),
        Outcome::Objection { case_id, objection, .. } => super::controllers::render_objection(case_id, objection),
        Outcome::TeamMoved(m) => super::controllers::render_moved(m),
        Outcome::Retention(s) => super::retention::render_one(s, json),
        Outcome::RetentionList(listed) => super::retention::render_list(listed, json),
        Outcome::NoteMisfiled(m) => super::note::render(m),
        Outcome::BreakGlassList { records } => super::break_glass::render_list(records, json),
        Outcome::BreakGlassReviewed(r) => super::break_glass::render_reviewed(r),
    }
}
