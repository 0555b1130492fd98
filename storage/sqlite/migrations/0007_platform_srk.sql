-- SPDX-License-Identifier: GPL-2.0-or-later
-- Migration 6 -> 7: the platform's SRK as its AK certified it in Authenticate Complete
-- (TPM2B_PUBLIC) and when, so that the helpdesk sees the new TPM's certified SRK before it
-- approves a restore to it. NULL: the platform never sent one (an older lms).
ALTER TABLE platforms ADD COLUMN srk_public BLOB;
ALTER TABLE platforms ADD COLUMN srk_certified_at INTEGER;
