-- SPDX-License-Identifier: GPL-2.0-or-later
-- Migration 2 -> 3: the EK key each platform was enrolled with (SHA-256 of its
-- SubjectPublicKeyInfo), whatever EK public area carried it, so that revocation and
-- enrolment bind to the TPM's key rather than to the Name of one encoding of it.
-- NULL: rows from before; ma-server fills them in at start-up (server/ek_identity.h).
ALTER TABLE platforms ADD COLUMN ek_key_id BLOB;
CREATE INDEX platforms_by_ek_key_id ON platforms (ek_key_id);
