// SPDX-License-Identifier: GPL-2.0-or-later
// The PostgreSQL vault's schema: its version (table schema_version), refusing a database
// that is another program's or newer than this build, and migrating forward, one instance at
// a time. Internal to storage/.
#pragma once

#include <libpq-fe.h>

#include <string>

#include "common/status.h"

namespace tpmma::storage::postgres {

// The version this build writes: the number of migrations it has.
int SchemaVersion();

// Takes the database from its version to SchemaVersion(), each migration in its own
// transaction under an advisory lock, so that instances starting together migrate once.
// kVersionTooNew if newer; kInvalidArgument if the schema holds tables but no
// schema_version (another program's). `where` names the database in messages.
Status Migrate(PGconn* c, const std::string& where);

// For an import (`ma-admin vault migrate`), inside the caller's transaction: under the same
// advisory lock, refuses a database that holds any table (kAlreadyExists if it is a vault
// already, kInvalidArgument if another program's), then creates the whole schema but writes
// neither a vault id nor a genesis record: both are write-once and come from the source.
Status CreateSchemaForImportLocked(PGconn* c, const std::string& where);

}  // namespace tpmma::storage::postgres
