-- SPDX-License-Identifier: GPL-2.0-or-later
-- Migration 4 -> 5: what each platform last said about itself in Authenticate Complete
-- (hostname, OS, DMI, TPM, owner label), so that an operator can find a platform by name
-- (`ma-admin platforms find`). One row per platform, replaced on each report. Never identity:
-- the platform is its EK. NULL: not reported. Values are checked before they are stored
-- (at most 256 characters of UTF-8, no control characters).
CREATE TABLE platform_inventory (
  platform_id      TEXT PRIMARY KEY REFERENCES platforms (id) ON DELETE CASCADE,
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
  reported_at      INTEGER NOT NULL
) STRICT;
