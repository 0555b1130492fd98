-- SPDX-License-Identifier: GPL-2.0-or-later
-- Migration 0 -> 1: the initial schema. Released: never edit, append a new migration.
CREATE TABLE platforms (
  id                 TEXT PRIMARY KEY,
  ek_public          BLOB NOT NULL,
  ek_certificate     BLOB NOT NULL,
  ak_public          BLOB NOT NULL,
  ak_name            BLOB NOT NULL,
  signing_key_public BLOB,
  state              TEXT NOT NULL CHECK (state IN ('active', 'revoked')),
  created_at         INTEGER NOT NULL,
  last_seen_at       INTEGER NOT NULL
) STRICT;

CREATE TABLE challenges (
  id              TEXT PRIMARY KEY,
  kind            TEXT NOT NULL CHECK (kind IN ('authenticate', 'download-nonce')),
  platform_id     TEXT NOT NULL,
  expected_hash   BLOB NOT NULL,
  nonce           BLOB NOT NULL,
  associated_data BLOB NOT NULL,
  created_at      INTEGER NOT NULL,
  expires_at      INTEGER NOT NULL,
  used_at         INTEGER
) STRICT;
CREATE INDEX challenges_expiry ON challenges (expires_at);

CREATE TABLE sessions (
  token_hash  BLOB PRIMARY KEY,
  platform_id TEXT NOT NULL REFERENCES platforms (id),
  created_at  INTEGER NOT NULL,
  expires_at  INTEGER NOT NULL
) STRICT;
CREATE INDEX sessions_platform ON sessions (platform_id);
CREATE INDEX sessions_expiry ON sessions (expires_at);

CREATE TABLE packages (
  pk                 INTEGER PRIMARY KEY,
  package_id         TEXT NOT NULL UNIQUE,
  source_platform_id TEXT NOT NULL REFERENCES platforms (id),
  format_version     TEXT NOT NULL,
  created_at         INTEGER NOT NULL,
  uploaded_at        INTEGER NOT NULL,
  sha256             BLOB NOT NULL,
  size               INTEGER NOT NULL,
  custody            TEXT NOT NULL CHECK (custody IN ('recovery-code', 'escrow'))
) STRICT;
CREATE INDEX packages_source ON packages (source_platform_id, pk);

CREATE TABLE package_bodies (
  package_pk INTEGER PRIMARY KEY REFERENCES packages (pk) ON DELETE CASCADE,
  body       BLOB NOT NULL
) STRICT;

CREATE TABLE package_keys (
  package_pk INTEGER NOT NULL REFERENCES packages (pk) ON DELETE CASCADE,
  ordinal    INTEGER NOT NULL,
  key_id     TEXT NOT NULL,
  label      TEXT NOT NULL,
  usage      TEXT NOT NULL,
  PRIMARY KEY (package_pk, ordinal)
) STRICT;

CREATE TABLE approvals (
  id              INTEGER PRIMARY KEY,
  old_platform_id TEXT NOT NULL,
  new_platform_id TEXT NOT NULL,
  all_packages    INTEGER NOT NULL CHECK (all_packages IN (0, 1)),
  reason          TEXT NOT NULL,
  created_by      TEXT NOT NULL,
  created_at      INTEGER NOT NULL,
  expires_at      INTEGER NOT NULL,
  confirmed_by    TEXT,
  state           TEXT NOT NULL CHECK (state IN ('pending', 'active', 'used', 'revoked')),
  used_at         INTEGER
) STRICT;
CREATE INDEX approvals_new ON approvals (new_platform_id, state);

CREATE TABLE approval_packages (
  approval_id INTEGER NOT NULL REFERENCES approvals (id) ON DELETE CASCADE,
  package_id  TEXT NOT NULL,
  PRIMARY KEY (approval_id, package_id)
) STRICT;

CREATE TABLE operators (
  name             TEXT PRIMARY KEY,
  role             TEXT NOT NULL CHECK (role IN ('helpdesk', 'auditor', 'admin')),
  cert_fingerprint TEXT NOT NULL UNIQUE,
  created_at       INTEGER NOT NULL,
  revoked_at       INTEGER
) STRICT;

CREATE TABLE audit_log (
  seq       INTEGER PRIMARY KEY,
  time      INTEGER NOT NULL,
  actor     TEXT NOT NULL,
  action    TEXT NOT NULL,
  object    TEXT NOT NULL,
  outcome   TEXT NOT NULL,
  detail    TEXT NOT NULL,
  prev_hash BLOB NOT NULL,
  hash      BLOB NOT NULL
) STRICT;
CREATE INDEX audit_time ON audit_log (time);
CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
  BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END;
CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
  BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END;
