-- SPDX-License-Identifier: GPL-2.0-or-later
-- PostgreSQL migration 0 -> 1: the schema SQLite's migrations 1-6 built, in PostgreSQL's
-- terms, plus what several writers need (audit_head). Released: never edit, append a new
-- migration. Text keys are COLLATE "C" so that ordering and paging compare bytes, as SQLite
-- does, whatever the database's locale. The genesis record and vault_meta's vault_id are
-- written by the migration code (storage/postgres/migrations.cc), which can hash.
CREATE TABLE schema_version (
  id          BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (id),
  application TEXT NOT NULL CHECK (application = 'tpm-ma vault'),
  version     INTEGER NOT NULL
);
INSERT INTO schema_version (application, version) VALUES ('tpm-ma vault', 0);

CREATE TABLE platforms (
  id                 TEXT COLLATE "C" PRIMARY KEY,
  ek_public          BYTEA NOT NULL,
  ek_certificate     BYTEA NOT NULL,
  ak_public          BYTEA NOT NULL,
  ak_name            BYTEA NOT NULL,
  signing_key_public BYTEA,
  state              TEXT NOT NULL CHECK (state IN ('active', 'revoked', 'pending')),
  created_at         BIGINT NOT NULL,
  last_seen_at       BIGINT NOT NULL,
  ek_key_id          BYTEA
);
CREATE INDEX platforms_by_ek_key_id ON platforms (ek_key_id);

CREATE TABLE platform_registrations (
  kind       TEXT COLLATE "C" NOT NULL CHECK (kind IN ('ek-key-id', 'ek-cert-sha256')),
  digest     BYTEA NOT NULL CHECK (octet_length(digest) = 32),
  label      TEXT NOT NULL,
  created_at BIGINT NOT NULL,
  PRIMARY KEY (kind, digest)
);

CREATE TABLE platform_inventory (
  platform_id      TEXT COLLATE "C" PRIMARY KEY REFERENCES platforms (id) ON DELETE CASCADE,
  hostname         TEXT,
  os_name          TEXT,
  kernel_release   TEXT,
  system_vendor    TEXT,
  product_name     TEXT,
  serial_number    TEXT,
  asset_tag        TEXT,
  machine_id       TEXT,
  tpm_manufacturer TEXT,
  tpm_vendor       TEXT,
  tpm_firmware     TEXT,
  owner_label      TEXT,
  reported_at      BIGINT NOT NULL
);

-- The id is BYTEA: an opaque token the caller chose, any bytes (TEXT must be valid UTF-8).
CREATE TABLE challenges (
  id              BYTEA PRIMARY KEY,
  kind            TEXT NOT NULL CHECK (kind IN ('authenticate', 'download-nonce')),
  platform_id     TEXT COLLATE "C" NOT NULL,
  expected_hash   BYTEA NOT NULL,
  nonce           BYTEA NOT NULL,
  associated_data BYTEA NOT NULL,
  created_at      BIGINT NOT NULL,
  expires_at      BIGINT NOT NULL,
  used_at         BIGINT
);
CREATE INDEX challenges_expiry ON challenges (expires_at);

CREATE TABLE sessions (
  token_hash  BYTEA PRIMARY KEY,
  platform_id TEXT COLLATE "C" NOT NULL REFERENCES platforms (id),
  created_at  BIGINT NOT NULL,
  expires_at  BIGINT NOT NULL
);
CREATE INDEX sessions_platform ON sessions (platform_id);
CREATE INDEX sessions_expiry ON sessions (expires_at);

CREATE TABLE packages (
  pk                 BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  package_id         TEXT COLLATE "C" NOT NULL UNIQUE,
  source_platform_id TEXT COLLATE "C" NOT NULL REFERENCES platforms (id),
  format_version     TEXT NOT NULL,
  created_at         BIGINT NOT NULL,
  uploaded_at        BIGINT NOT NULL,
  sha256             BYTEA NOT NULL,
  size               BIGINT NOT NULL,
  custody            TEXT NOT NULL CHECK (custody IN ('recovery-code', 'escrow')),
  signing_key        BYTEA
);
CREATE INDEX packages_source ON packages (source_platform_id, pk);

CREATE TABLE package_bodies (
  package_pk BIGINT PRIMARY KEY REFERENCES packages (pk) ON DELETE CASCADE,
  body       BYTEA NOT NULL
);

CREATE TABLE package_keys (
  package_pk BIGINT NOT NULL REFERENCES packages (pk) ON DELETE CASCADE,
  ordinal    BIGINT NOT NULL,
  key_id     TEXT NOT NULL,
  label      TEXT NOT NULL,
  usage      TEXT NOT NULL,
  PRIMARY KEY (package_pk, ordinal)
);

CREATE TABLE approvals (
  id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  old_platform_id TEXT COLLATE "C" NOT NULL,
  new_platform_id TEXT COLLATE "C" NOT NULL,
  all_packages    BOOLEAN NOT NULL,
  reason          TEXT NOT NULL,
  created_by      TEXT NOT NULL,
  created_at      BIGINT NOT NULL,
  expires_at      BIGINT NOT NULL,
  confirmed_by    TEXT,
  state           TEXT NOT NULL CHECK (state IN ('pending', 'active', 'used', 'revoked')),
  used_at         BIGINT
);
CREATE INDEX approvals_new ON approvals (new_platform_id, state);

CREATE TABLE approval_packages (
  approval_id BIGINT NOT NULL REFERENCES approvals (id) ON DELETE CASCADE,
  package_id  TEXT COLLATE "C" NOT NULL,
  PRIMARY KEY (approval_id, package_id)
);

CREATE TABLE operators (
  name             TEXT COLLATE "C" PRIMARY KEY,
  role             TEXT NOT NULL CHECK (role IN ('helpdesk', 'auditor', 'admin')),
  cert_fingerprint TEXT COLLATE "C" NOT NULL UNIQUE,
  created_at       BIGINT NOT NULL,
  revoked_at       BIGINT
);

-- The audit chain. UNIQUE on seq and on prev_hash: two writers that read the same head
-- could never both commit (they do not: they lock audit_head), so a fork is impossible even
-- for a writer that skipped the lock.
CREATE TABLE audit_log (
  seq       BIGINT PRIMARY KEY CHECK (seq > 0),
  time      BIGINT NOT NULL,
  actor     TEXT NOT NULL,
  action    TEXT NOT NULL,
  object    TEXT NOT NULL,
  outcome   TEXT NOT NULL,
  detail    TEXT NOT NULL,
  prev_hash BYTEA NOT NULL UNIQUE CHECK (octet_length(prev_hash) = 32),
  hash      BYTEA NOT NULL CHECK (octet_length(hash) = 32)
);
CREATE INDEX audit_time ON audit_log (time);

-- The chain's head: one row that always exists (seq 0 and 32 zero bytes before the first
-- record), locked FOR UPDATE by every append in the transaction that inserts the record.
-- Locking "the last record" instead would lock nothing on an empty log, and the archive
-- deletes records.
CREATE TABLE audit_head (
  id   BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (id),
  seq  BIGINT NOT NULL,
  hash BYTEA NOT NULL
);
INSERT INTO audit_head (seq, hash) VALUES (0, decode(repeat('00', 32), 'hex'));

CREATE TABLE vault_meta (
  key   TEXT COLLATE "C" PRIMARY KEY,
  value BYTEA NOT NULL
);

CREATE TABLE audit_segments (
  last_seq       BIGINT PRIMARY KEY,
  first_seq      BIGINT NOT NULL,
  last_hash      BYTEA NOT NULL,
  archived_at    BIGINT NOT NULL,
  archive_sha256 BYTEA NOT NULL
);

-- Append-only, as SQLite's triggers of migrations 1 and 6 (CheckAuditChain compares these
-- functions' text and the triggers with what this migration made).
CREATE FUNCTION tpmma_refuse() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION '% is %', TG_TABLE_NAME, TG_ARGV[0] USING ERRCODE = 'integrity_constraint_violation';
END
$$;

-- Only records inside a recorded segment may be deleted (ArchiveAudit).
CREATE FUNCTION tpmma_audit_log_delete() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF OLD.seq <= (SELECT coalesce(max(last_seq), 0) FROM audit_segments) THEN
    RETURN OLD;
  END IF;
  RAISE EXCEPTION 'audit_log is append-only' USING ERRCODE = 'integrity_constraint_violation';
END
$$;

-- The head moves one record at a time, onto a record that is in the log.
CREATE FUNCTION tpmma_audit_head_advance() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF NEW.id AND NEW.seq = OLD.seq + 1 AND EXISTS (SELECT 1 FROM audit_log WHERE seq = NEW.seq AND hash = NEW.hash) THEN
    RETURN NEW;
  END IF;
  RAISE EXCEPTION 'audit_head only advances to the record appended after it' USING ERRCODE = 'integrity_constraint_violation';
END
$$;

CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
  FOR EACH ROW EXECUTE FUNCTION tpmma_refuse('append-only');
CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
  FOR EACH ROW EXECUTE FUNCTION tpmma_audit_log_delete();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
  FOR EACH STATEMENT EXECUTE FUNCTION tpmma_refuse('append-only');
CREATE TRIGGER audit_head_advance BEFORE UPDATE ON audit_head
  FOR EACH ROW EXECUTE FUNCTION tpmma_audit_head_advance();
CREATE TRIGGER audit_head_no_delete BEFORE DELETE ON audit_head
  FOR EACH ROW EXECUTE FUNCTION tpmma_refuse('never deleted');
CREATE TRIGGER audit_head_no_truncate BEFORE TRUNCATE ON audit_head
  FOR EACH STATEMENT EXECUTE FUNCTION tpmma_refuse('never deleted');
CREATE TRIGGER audit_segments_no_update BEFORE UPDATE ON audit_segments
  FOR EACH ROW EXECUTE FUNCTION tpmma_refuse('append-only');
CREATE TRIGGER audit_segments_no_delete BEFORE DELETE ON audit_segments
  FOR EACH ROW EXECUTE FUNCTION tpmma_refuse('append-only');
CREATE TRIGGER audit_segments_no_truncate BEFORE TRUNCATE ON audit_segments
  FOR EACH STATEMENT EXECUTE FUNCTION tpmma_refuse('append-only');
CREATE TRIGGER vault_meta_no_update BEFORE UPDATE ON vault_meta
  FOR EACH ROW EXECUTE FUNCTION tpmma_refuse('write-once');
CREATE TRIGGER vault_meta_no_delete BEFORE DELETE ON vault_meta
  FOR EACH ROW EXECUTE FUNCTION tpmma_refuse('write-once');
CREATE TRIGGER vault_meta_no_truncate BEFORE TRUNCATE ON vault_meta
  FOR EACH STATEMENT EXECUTE FUNCTION tpmma_refuse('write-once');
