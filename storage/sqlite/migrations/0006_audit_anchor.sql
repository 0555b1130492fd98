-- SPDX-License-Identifier: GPL-2.0-or-later
-- Migration 5 -> 6: what anchors the audit log (docs/reliability.md, "The audit chain").
-- vault_meta holds the vault's identity, a random id named by the genesis record and by
-- every signed checkpoint, so that a checkpoint of one vault never vouches for another.
-- audit_segments records each archived stretch of the log (ma-admin audit archive): its
-- seqs, the hash of its last record (the next record's prev_hash) and the SHA-256 of the
-- archive file. Only records inside a recorded segment may be deleted; the genesis record
-- itself is appended by the migration code (storage/sqlite/migrations.cc), which can hash.
CREATE TABLE vault_meta (
  key   TEXT PRIMARY KEY,
  value BLOB NOT NULL
) STRICT;
INSERT INTO vault_meta (key, value) VALUES ('vault_id', randomblob(16));
CREATE TRIGGER vault_meta_no_update BEFORE UPDATE ON vault_meta
  BEGIN SELECT RAISE(ABORT, 'vault_meta is write-once'); END;
CREATE TRIGGER vault_meta_no_delete BEFORE DELETE ON vault_meta
  BEGIN SELECT RAISE(ABORT, 'vault_meta is write-once'); END;

CREATE TABLE audit_segments (
  last_seq       INTEGER PRIMARY KEY,
  first_seq      INTEGER NOT NULL,
  last_hash      BLOB NOT NULL,
  archived_at    INTEGER NOT NULL,
  archive_sha256 BLOB NOT NULL
) STRICT;
CREATE TRIGGER audit_segments_no_update BEFORE UPDATE ON audit_segments
  BEGIN SELECT RAISE(ABORT, 'audit_segments is append-only'); END;
CREATE TRIGGER audit_segments_no_delete BEFORE DELETE ON audit_segments
  BEGIN SELECT RAISE(ABORT, 'audit_segments is append-only'); END;

DROP TRIGGER audit_log_no_delete;
CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
  WHEN OLD.seq > (SELECT coalesce(max(last_seq), 0) FROM audit_segments)
  BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END;
