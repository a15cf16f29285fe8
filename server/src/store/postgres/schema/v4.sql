-- A document's changes in order (issue 18): a node catching its copy of a document up with
-- what another node wrote since, or reading one document's history, reads its changes after a
-- sequence. Through the (doc_id, hash) index that was every change of the document, under the
-- write lock on two nodes, growing with the document's history; this index finds only those
-- after the sequence. (Built in the migration's transaction: on a large log the writes wait
-- for it once, at the upgrade.)
CREATE INDEX change_log_by_doc ON change_log (doc_id, seq);
