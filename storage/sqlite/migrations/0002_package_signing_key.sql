-- SPDX-License-Identifier: GPL-2.0-or-later
-- Migration 1 -> 2: the key each package's signature was verified with at upload
-- (TPM2B_PUBLIC), so a later signing key of the platform does not orphan older packages.
-- NULL: older rows.
ALTER TABLE packages ADD COLUMN signing_key BLOB;
