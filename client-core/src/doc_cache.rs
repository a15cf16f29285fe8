//! Documents kept in memory once loaded, so that an edit or a sync does not load the whole
//! document again from its snapshot and chunks.
//!
//! Loading replays a document's whole history (parse, verify, hash and apply every change): with
//! 20 devices editing shared plans (W5) it was about half of all the work (bench/README.md, "A
//! cheaper device sync path"). The cache holds documents exactly as a load of the store would
//! give them: a document goes in when it is loaded from the store, and again after a commit
//! that stored its new changes (with the chunk number the next save takes). Any other commit
//! that touches a document's content records drops it, as does anything that changes the
//! store's files from outside this handle (a release, a wipe, a rewrite, a failed write).
//!
//! A load that raced a commit never goes in: every commit moves the cache's generation, and a
//! loaded document is kept only if the generation is the one seen before the store was read.
//! A reader gets a copy; a writer (holding the device's document-write lock) takes the document
//! itself out, and its commit puts it back, so an edit neither copies nor drops a whole history.
//!
//! Bounded by [`limits::DEVICE_DOCS_CACHED_MAX`] documents and
//! [`limits::DEVICE_DOCS_CACHED_BYTES_MAX`] of their stored size; the least recently used go
//! first. A document's stored size is counted at its load and grown by what each commit writes.

use automerge::AutoCommit;
use casenote_protocol::{limits, DocId};
use std::collections::HashMap;

/// A cached document: the document (`None` while a writer has it), the next chunk number, and
/// its stored size (an estimate).
struct Entry {
    doc: Option<AutoCommit>,
    next_chunk: u64,
    bytes: usize,
    used: u64,
}

/// The documents kept in memory. Used under the store's mutex.
#[derive(Default)]
pub struct DocCache {
    docs: HashMap<DocId, Entry>,
    /// Moves at every commit and every clear: a load that saw another value does not go in.
    generation: u64,
    /// A clock for least-recently-used.
    tick: u64,
}

impl DocCache {
    /// The generation now: passed back to [`DocCache::insert_loaded`].
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// A copy of a cached document and its next chunk number.
    pub fn get(&mut self, id: DocId) -> Option<(AutoCommit, u64)> {
        self.tick += 1;
        let e = self.docs.get_mut(&id)?;
        e.used = self.tick;
        Some((e.doc.clone()?, e.next_chunk))
    }

    /// A cached document itself, taken out for a writer, and its next chunk number; the writer's
    /// commit puts it back ([`Kept`]).
    pub fn take(&mut self, id: DocId) -> Option<(AutoCommit, u64)> {
        let e = self.docs.get_mut(&id)?;
        Some((e.doc.take()?, e.next_chunk))
    }

    /// Keeps a document just loaded from the store, unless a commit or a clear came between.
    pub fn insert_loaded(
        &mut self,
        id: DocId,
        doc: &AutoCommit,
        next_chunk: u64,
        bytes: usize,
        seen: u64,
    ) {
        if seen == self.generation {
            self.put(id, doc.clone(), next_chunk, bytes);
        }
    }

    /// A commit landed: every document in `touched` is dropped, then every document in `kept`
    /// (as it now stands in the store, with the bytes the commit wrote for it and whether those
    /// replaced all its earlier records) goes in.
    pub fn committed(&mut self, touched: &[DocId], kept: Vec<Kept>) {
        self.generation += 1;
        let sizes: Vec<usize> = kept
            .iter()
            .map(|k| match self.docs.get(&k.id) {
                Some(e) if !k.replaced => e.bytes + k.written,
                _ => k.written,
            })
            .collect();
        for id in touched {
            self.docs.remove(id);
        }
        for (k, bytes) in kept.into_iter().zip(sizes) {
            self.put(k.id, k.doc, k.next_chunk, bytes);
        }
    }

    /// Forgets every document (the store's files may have changed beneath this handle).
    pub fn clear(&mut self) {
        self.generation += 1;
        self.docs.clear();
    }

    fn put(&mut self, id: DocId, doc: AutoCommit, next_chunk: u64, bytes: usize) {
        self.docs.remove(&id);
        if bytes > limits::DEVICE_DOCS_CACHED_BYTES_MAX {
            return;
        }
        self.tick += 1;
        self.docs.insert(
            id,
            Entry {
                doc: Some(doc),
                next_chunk,
                bytes,
                used: self.tick,
            },
        );
        while self.docs.len() > limits::DEVICE_DOCS_CACHED_MAX
            || self.docs.values().map(|e| e.bytes).sum::<usize>()
                > limits::DEVICE_DOCS_CACHED_BYTES_MAX
        {
            let Some(oldest) = self
                .docs
                .iter()
                .min_by_key(|(_, e)| e.used)
                .map(|(id, _)| *id)
            else {
                break;
            };
            self.docs.remove(&oldest);
        }
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.docs.len()
    }
}

/// A document a commit stored, to keep in the cache once the commit has landed.
pub struct Kept {
    pub id: DocId,
    pub doc: AutoCommit,
    pub next_chunk: u64,
    /// Bytes the commit wrote for it (its new chunk, or its new snapshot).
    pub written: usize,
    /// The commit replaced every earlier record of it (a compaction into one snapshot).
    pub replaced: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_load_that_raced_a_commit_is_not_kept() {
        let mut cache = DocCache::default();
        let id = DocId::new_random();
        let seen = cache.generation();
        cache.committed(&[id], Vec::new());
        cache.insert_loaded(id, &AutoCommit::new(), 3, 10, seen);
        assert!(cache.get(id).is_none(), "a load from before a commit");
        let seen = cache.generation();
        cache.insert_loaded(id, &AutoCommit::new(), 3, 10, seen);
        assert_eq!(cache.get(id).map(|(_, n)| n), Some(3));
    }

    #[test]
    fn a_document_taken_by_a_writer_is_not_copied_until_its_commit_puts_it_back() {
        let mut cache = DocCache::default();
        let id = DocId::new_random();
        let g = cache.generation();
        cache.insert_loaded(id, &AutoCommit::new(), 2, 100, g);
        let (doc, next) = cache.take(id).expect("cached");
        assert_eq!(next, 2);
        assert!(cache.get(id).is_none() && cache.take(id).is_none(), "taken");
        let kept = Kept {
            id,
            doc,
            next_chunk: 3,
            written: 10,
            replaced: false,
        };
        cache.committed(&[id], vec![kept]);
        assert_eq!(cache.get(id).map(|(_, n)| n), Some(3));
        assert_eq!(
            cache.docs[&id].bytes, 110,
            "its stored size grew by the chunk"
        );
    }

    #[test]
    fn the_cache_keeps_its_bounds_dropping_the_least_recently_used() {
        let mut cache = DocCache::default();
        let ids: Vec<DocId> = (0..limits::DEVICE_DOCS_CACHED_MAX + 5)
            .map(|_| DocId::new_random())
            .collect();
        for id in &ids {
            let g = cache.generation();
            cache.insert_loaded(*id, &AutoCommit::new(), 0, 1, g);
            // The first stays in use.
            assert!(cache.get(ids[0]).is_some());
        }
        assert_eq!(cache.len(), limits::DEVICE_DOCS_CACHED_MAX);
        assert!(cache.get(ids[1]).is_none(), "the least recently used left");
        let big = DocId::new_random();
        let g = cache.generation();
        cache.insert_loaded(
            big,
            &AutoCommit::new(),
            0,
            limits::DEVICE_DOCS_CACHED_BYTES_MAX + 1,
            g,
        );
        assert!(cache.get(big).is_none(), "a document over the byte bound");
        // A commit's bytes add to what the document had.
        let id = ids[0];
        cache.committed(
            &[id],
            vec![Kept {
                id,
                doc: AutoCommit::new(),
                next_chunk: 1,
                written: limits::DEVICE_DOCS_CACHED_BYTES_MAX,
                replaced: false,
            }],
        );
        assert!(cache.get(id).is_none(), "grown past the byte bound");
    }
}
