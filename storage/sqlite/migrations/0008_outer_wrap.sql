-- SPDX-License-Identifier: GPL-2.0-or-later
-- Migration 7 -> 8: which MA storage key holds a package's outer wrap, and that wrap when it
-- is no longer the one in the signed document (docs/operations.md, "MA key lifecycle").
-- `ma-admin ma-key reencipher` moves the outer wrap of every package from a retiring key to
-- the current one; the document stays as the platform signed it, so the new wrap is kept
-- beside it. wrap_key_id NULL: stored before this migration (the MA's key at the time;
-- ma-server and ma-admin fill it in). wrap_duplicate / wrap_seed NULL: the document's own.
ALTER TABLE packages ADD COLUMN wrap_key_id TEXT;
ALTER TABLE packages ADD COLUMN wrap_duplicate BLOB;
ALTER TABLE packages ADD COLUMN wrap_seed BLOB;
CREATE INDEX packages_by_wrap_key ON packages (wrap_key_id, pk);
