//! Which store a command works on: `--data DIR` (the embedded sled store) or `--postgres URL`
//! (a PostgreSQL database that several server nodes may share), exactly one of the two.
//!
//! The URL may come from `CASENOTE_POSTGRES_URL` instead, so that a password in it never shows
//! in the process list. PostgreSQL's schema migrations run when a command opens the database.
//! A PostgreSQL store is opened before any async runtime starts: its client drives each
//! connection on the calling thread, which may not be a runtime's.

use crate::store::copy::{self, Copied};
use crate::store::postgres::PgStore;
use crate::store::sled::SledStore;
use crate::store::Store;
use std::path::PathBuf;
use std::sync::Arc;

/// `--data DIR` or `--postgres URL`.
#[derive(clap::Args, Clone, Debug)]
#[group(required = true, multiple = false)]
pub struct StoreArgs {
    /// The data directory of the embedded sled store (created if missing).
    #[arg(long, value_name = "DIR")]
    pub data: Option<PathBuf>,
    /// A PostgreSQL database, `postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE` (or
    /// CASENOTE_POSTGRES_URL); several server nodes may share it.
    #[arg(
        long,
        value_name = "URL",
        env = "CASENOTE_POSTGRES_URL",
        hide_env_values = true
    )]
    pub postgres: Option<String>,
}

/// An open store, with what only its backend has.
pub enum Opened {
    Sled(Arc<SledStore>),
    Postgres(Arc<PgStore>),
}

impl Opened {
    pub fn store(&self) -> Arc<dyn Store> {
        match self {
            Opened::Sled(s) => s.clone(),
            Opened::Postgres(s) => s.clone(),
        }
    }
}

impl StoreArgs {
    /// Opens the store; a loss found (and healed) on the way is said on stderr too, since the
    /// offline commands have no log. A sled store opened here has no free-space floor (`serve`
    /// sets its own): revoking a lost device must work on a nearly full disk.
    pub fn open(&self) -> anyhow::Result<Opened> {
        let opened = self.open_plain()?;
        adopt_agreements(&*opened.store());
        Ok(opened)
    }

    fn open_plain(&self) -> anyhow::Result<Opened> {
        if let Some(url) = &self.postgres {
            return Ok(Opened::Postgres(Arc::new(PgStore::open(url)?)));
        }
        let store = crate::store::sled::open(self.dir()?)?;
        store.set_free_bytes_min(0);
        if let Some(damage) = store.damage() {
            eprintln!(
                "casenote-server: warning: the store had lost writes it acknowledged ({}); it \
                 now has a new log id, so every device will send back what it holds on its \
                 next sync",
                damage.findings.join("; ")
            );
        }
        Ok(Opened::Sled(store))
    }

    /// Opens a store that must already exist (`admin`, `export`, `audit show`): a mistyped
    /// `--data` is an error naming the directory, not a new empty store that then answers "no
    /// such staff". `serve` and `demo` create a store where there is none.
    pub fn open_existing(&self) -> anyhow::Result<Opened> {
        self.existing_dir()?;
        self.open()
    }

    /// Opens the store to check it, healing nothing (a sled store's damage is reported by the
    /// check, not mended by the open).
    pub fn inspect(&self) -> anyhow::Result<Opened> {
        if let Some(url) = &self.postgres {
            return Ok(Opened::Postgres(Arc::new(PgStore::open(url)?)));
        }
        Ok(Opened::Sled(Arc::new(SledStore::inspect(
            self.existing_dir()?,
        )?)))
    }

    /// `verify`: the whole store checked (the backend's own checks, then every document loaded
    /// from its log); the summary, or the first problem. Progress goes to stderr.
    pub fn verify(&self) -> anyhow::Result<Result<String, String>> {
        let opened = self.inspect()?;
        let summary = match &opened {
            Opened::Sled(s) => s.verify().map(|v| v.to_string()),
            Opened::Postgres(s) => s.verify().map(|v| v.to_string()),
        };
        let summary = match summary {
            Ok(summary) => summary,
            Err(e) => return Ok(Err(e.to_string())),
        };
        let mut said = |done, total| eprintln!("verify: {done} of {total} documents load");
        Ok(
            match crate::validate::every_document_loads(&*opened.store(), &mut said)? {
                Ok(_) => Ok(format!("{summary}; every document loads from its log")),
                Err(why) => Err(crate::store::VerifyError::Damaged(why).to_string()),
            },
        )
    }

    /// Where the store is, for the log: the directory, or the database's name (never the URL,
    /// which may hold a password).
    pub fn describe(&self) -> String {
        match (&self.data, &self.postgres) {
            (Some(dir), _) => dir.display().to_string(),
            (None, Some(url)) => url
                .parse::<postgres::Config>()
                .ok()
                .and_then(|c| c.get_dbname().map(|d| format!("PostgreSQL database {d}")))
                .unwrap_or_else(|| "a PostgreSQL database".into()),
            (None, None) => String::new(),
        }
    }

    /// The sled store's directory, which must hold a store already (sled's `db` file); `None` of
    /// an empty path for a PostgreSQL store, which is opened by its URL.
    fn existing_dir(&self) -> anyhow::Result<&std::path::Path> {
        if self.postgres.is_some() {
            return Ok(std::path::Path::new(""));
        }
        let dir = self.dir()?;
        if !crate::store::sled::exists(dir) {
            anyhow::bail!(
                "there is no casenote store in {}; check --data (`serve` or `demo` creates one)",
                dir.display()
            );
        }
        Ok(dir)
    }

    fn dir(&self) -> anyhow::Result<&std::path::Path> {
        self.data
            .as_deref()
            .ok_or_else(|| anyhow::anyhow!("give --data DIR or --postgres URL"))
    }
}

/// A store written before agreements existed records the sharing it always had
/// ([`crate::controllers::adopt_at_open`]). A store that cannot write now still reads that way, so
/// a failure is said and the open goes on.
fn adopt_agreements(store: &dyn crate::store::Store) {
    match crate::controllers::adopt_at_open(store, crate::now_ms()) {
        Ok(0) => {}
        Ok(n) => eprintln!(
            "casenote-server: recorded {n} data-sharing agreement(s) between the organisations \
             that shared before agreements existed (see `admin agreement list`)"
        ),
        Err(e) => eprintln!(
            "casenote-server: warning: could not record the agreements in force before this \
             version ({e}); they are read as in force until it can"
        ),
    }
}

/// `migrate --data DIR --postgres URL`: the sled store in DIR (which no server may hold open)
/// copied into the empty database at URL.
pub fn migrate(data: &std::path::Path, url: &str) -> anyhow::Result<Copied> {
    if !data.join("db").is_file() {
        anyhow::bail!(
            "there is no casenote store in {}; check --data",
            data.display()
        );
    }
    let from = SledStore::inspect(data)?;
    if let Some(damage) = from.damage() {
        anyhow::bail!(
            "the sled store lost writes it had acknowledged ({}); run `casenote-server verify \
             --data DIR`, and serve it once so that it heals, before moving it",
            damage.findings.join("; ")
        );
    }
    let to = PgStore::open(url)?;
    Ok(copy::copy(&from, &to)?)
}
