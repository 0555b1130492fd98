-- SPDX-License-Identifier: GPL-2.0-or-later
-- PostgreSQL migration 1 -> 2 (SQLite's 6 -> 7): the platform's SRK as its AK certified it
-- in Authenticate Complete (TPM2B_PUBLIC) and when. NULL: the platform never sent one.
ALTER TABLE platforms ADD COLUMN srk_public BYTEA;
ALTER TABLE platforms ADD COLUMN srk_certified_at BIGINT;
