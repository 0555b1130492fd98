-- SPDX-License-Identifier: GPL-2.0-or-later
-- PostgreSQL migration 2 -> 3 (SQLite's 7 -> 8): which MA storage key holds a package's
-- outer wrap, and that wrap once `ma-admin ma-key reencipher` has moved it off the one in
-- the signed document. NULL wrap_key_id: stored before this migration; NULL wrap_duplicate /
-- wrap_seed: the document's own wrap.
ALTER TABLE packages ADD COLUMN wrap_key_id TEXT COLLATE "C";
ALTER TABLE packages ADD COLUMN wrap_duplicate BYTEA;
ALTER TABLE packages ADD COLUMN wrap_seed BYTEA;
CREATE INDEX packages_by_wrap_key ON packages (wrap_key_id, pk);
