-- SPDX-License-Identifier: GPL-2.0-or-later
-- Migration 3 -> 4: the enrollment policy (server config [enrollment]).
-- pending = 1: a platform that authenticated under "approve-first" and awaits an operator
-- (`ma-admin platforms accept`); it gets no session until then. A column of its own because
-- the CHECK on platforms.state cannot be altered in SQLite without rebuilding the table.
ALTER TABLE platforms ADD COLUMN pending INTEGER NOT NULL DEFAULT 0 CHECK (pending IN (0, 1));
-- Platforms an administrator registered for the "registered" policy, before they first
-- authenticate: by the SHA-256 of the EK key's SubjectPublicKeyInfo (ek-key-id) or of the
-- DER EK certificate (ek-cert-sha256).
CREATE TABLE platform_registrations (
  kind       TEXT NOT NULL CHECK (kind IN ('ek-key-id', 'ek-cert-sha256')),
  digest     BLOB NOT NULL CHECK (length(digest) = 32),
  label      TEXT NOT NULL,
  created_at INTEGER NOT NULL,
  PRIMARY KEY (kind, digest)
) STRICT;
