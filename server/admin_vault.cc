// SPDX-License-Identifier: GPL-2.0-or-later
#include "server/admin_vault.h"

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "common/bytes.h"
#include "server/admin_text.h"
#include "server/vault_open.h"
#include "storage/postgres_vault.h"
#include "storage/sqlite_backup.h"
#include "storage/sqlite_vault.h"

namespace tpmma::server {

using nlohmann::json;

namespace {

Status RefusePostgres(const Config& cfg, std::string_view what) {
  if (cfg.vault_url.empty()) return Status();
  return Status(Code::kUnsupported, Cat("this MA's vault is PostgreSQL (vault.url): ", what,
                                        " (docs/operations.md, \"Backing up and restoring\")"));
}

json ReportJson(const storage::SqliteFileReport& r) {
  return {{"schema_version", r.schema_version},  {"vault_id", HexEncode(r.chain.vault_id)},
          {"first_seq", r.chain.first_seq},      {"head_seq", r.chain.last_seq},
          {"head_hash", HexEncode(r.head_hash)}, {"pages", r.pages}};
}

void PrintReport(const AdminContext& ctx, const storage::SqliteFileReport& r) {
  Line(ctx, Cat("  vault id:     ", HexEncode(r.chain.vault_id)));
  Line(ctx, Cat("  schema:       ", r.schema_version, ", ", r.pages, " pages"));
  Line(ctx, Cat("  audit chain:  verified, records ", r.chain.first_seq, "..", r.chain.last_seq));
  Line(ctx, Cat("  head hash:    ", HexEncode(r.head_hash)));
}

void Add(std::vector<std::pair<std::string, std::string>>& out, std::string what,
         const std::string& path) {
  if (!path.empty()) out.emplace_back(std::move(what), path);
}

void AddKey(std::vector<std::pair<std::string, std::string>>& out, const std::string& what,
            const TpmKeyConfig& k) {
  if (k.custody == "none") return;
  Add(out, what + " private key", k.private_key);
  Add(out, what + " certificate", k.certificate);
  Add(out, what + " TPM public", k.tpm_public);
  Add(out, what + " TPM private", k.tpm_private);
}

// Opened only now: a SqliteVault would create a missing file, and a backup of a vault that
// is not there must fail instead.
Status AppendAdminAudit(const AdminContext& ctx, const Config& cfg,
                        const storage::AuditEvent& event) {
  TPMMA_ASSIGN_OR_RETURN(auto vault, OpenVault(cfg, ctx.env));
  auto seq = vault->AppendAudit(event);
  return seq ? Status() : seq.error();
}

}  // namespace

std::vector<std::pair<std::string, std::string>> FilesToBackUp(const Config& cfg) {
  std::vector<std::pair<std::string, std::string>> out;
  AddKey(out, "MA key " + cfg.ma.key_id, cfg.ma);
  for (const TpmKeyConfig& k : cfg.ma_retiring) AddKey(out, "retiring MA key " + k.key_id, k);
  AddKey(out, "escrow key " + cfg.escrow.key_id, cfg.escrow);
  for (const TpmKeyConfig& k : cfg.escrow_retired) AddKey(out, "retired escrow key " + k.key_id, k);
  Add(out, "audit checkpoint key", cfg.audit_checkpoint_key);
  Add(out, "audit checkpoint directory", cfg.audit_checkpoint_dir);
  Add(out, "TLS private key", cfg.tls_private_key);
  Add(out, "TLS certificate", cfg.tls_certificate);
  Add(out, "operator client CA", cfg.tls_client_ca);
  Add(out, "vault password file", cfg.vault_password_file);
  for (const std::string& p : cfg.ek_roots) Add(out, "EK roots", p);
  for (const std::string& p : cfg.ek_intermediates) Add(out, "EK intermediates", p);
  for (const std::string& p : cfg.ek_templates) Add(out, "EK template", p);
  return out;
}

Status BackupVault(const AdminContext& ctx, const Config& cfg, const std::string& out) {
  TPMMA_RETURN_IF_ERROR(RefusePostgres(cfg, "back it up with pg_dump -Fc"));
  auto report = storage::BackupSqliteVault(cfg.vault_path, out);
  if (!report) return report.error();
  // After the snapshot, so the backup does not hold it: the live log says a copy of every
  // package left through this host, and who took it.
  TPMMA_RETURN_IF_ERROR(
      AppendAdminAudit(ctx, cfg,
                       AdminEvent(ctx, "Vault.Backup", ForAudit(out),
                                  Cat("online backup through audit seq ", report->chain.last_seq)))
          .WithContext("backup written, but not audited"));
  if (ctx.json) {
    json j = ReportJson(*report);
    j["ok"] = true;
    j["backup"] = out;
    Print(ctx, j);
    return Status();
  }
  Line(ctx, Cat("Backed up ", cfg.vault_path, " to ", out, " (checked):"));
  PrintReport(ctx, *report);
  Line(ctx, "Keep these with it; the vault alone does not bring the MA back:");
  for (const auto& [what, path] : FilesToBackUp(cfg)) Line(ctx, Cat("  ", what, ": ", path));
  Line(ctx, "  and the state directory's config.toml and ca/ (the MA and operator CAs)");
  return Status();
}

Status RestoreVault(const AdminContext& ctx, const Config& cfg, const std::string& from,
                    bool force) {
  TPMMA_RETURN_IF_ERROR(RefusePostgres(cfg, "restore it with pg_restore"));
  auto report = storage::RestoreSqliteVault(from, cfg.vault_path, force);
  if (!report) return report.error();
  TPMMA_RETURN_IF_ERROR(
      AppendAdminAudit(
          ctx, cfg,
          AdminEvent(ctx, "Vault.Restore", ForAudit(from),
                     Cat("restored from a backup ending at audit seq ", report->chain.last_seq)))
          .WithContext("restored, but not audited"));
  if (ctx.json) {
    json j = ReportJson(*report);
    j["ok"] = true;
    j["vault"] = cfg.vault_path;
    Print(ctx, j);
    return Status();
  }
  Line(ctx, Cat("Restored ", from, " as ", cfg.vault_path, " (checked):"));
  PrintReport(ctx, *report);
  Line(ctx,
       "Records after the backup's head are gone: `ma-admin audit verify --checkpoint` "
       "against a later checkpoint says so.");
  return Status();
}

namespace {

// Hands the source's rows on, counting them and keeping its vault id and last audit record:
// the copy must end exactly where the checked source does, or the transaction rolls back.
class SourceSink final : public storage::CopySink {
 public:
  explicit SourceSink(storage::CopySink* next) : counting_(next) {}
  Status BeginTable(const storage::CopyTable& table) override {
    return counting_.BeginTable(table);
  }
  Status Row(const storage::CopyTable& table, const storage::CopyRow& row) override {
    TPMMA_RETURN_IF_ERROR(counting_.Row(table, row));
    if (table.name == "audit_log") {
      last_seq_ = std::get<int64_t>(row[0]);
      last_hash_ = std::get<Bytes>(row[8]);
    } else if (table.name == "vault_meta" && std::get<std::string>(row[0]) == "vault_id") {
      vault_id_ = std::get<Bytes>(row[1]);
    }
    return Status();
  }
  // The rows exported are the ones checked: the source did not move in between.
  Status Matches(const storage::SqliteFileReport& checked) const {
    if (last_seq_ != checked.chain.last_seq || last_hash_ != checked.head_hash ||
        vault_id_ != checked.chain.vault_id) {
      return Status(Code::kConflict,
                    "the SQLite vault changed while it was copied (is ma-server running?)");
    }
    return Status();
  }
  const storage::CopyCounts& counts() const { return counting_.counts(); }

 private:
  storage::CountingSink counting_;
  int64_t last_seq_ = 0;
  Bytes last_hash_, vault_id_;
};

// After COMMIT, through a PostgresVault as ma-server would open it.
Status VerifyTarget(const AdminContext& ctx, const MigrateOptions& o,
                    const storage::SqliteFileReport& source) {
  TPMMA_ASSIGN_OR_RETURN(auto vault, OpenPostgresVault(o.to, o.password_file, 1, ctx.env));
  TPMMA_ASSIGN_OR_RETURN(storage::AuditChainReport chain, vault->CheckAuditChain());
  TPMMA_ASSIGN_OR_RETURN(storage::AuditHead head, vault->GetAuditHead());
  if (chain.vault_id != source.chain.vault_id || head.seq != source.chain.last_seq ||
      head.hash != source.head_hash) {
    return Status(Code::kCorruption, "the PostgreSQL vault's head is not the SQLite vault's");
  }
  return Status();
}

void PrintMigration(const AdminContext& ctx, const std::string& where,
                    const storage::SqliteFileReport& source, const storage::CopyCounts& from,
                    const storage::PostgresImportReport& to) {
  if (ctx.json) {
    json tables = json::object();
    for (size_t i = 0; i < to.counts.size(); ++i) {
      tables[to.counts[i].first] = {{"source", from[i].second}, {"target", to.counts[i].second}};
    }
    Print(ctx, {{"ok", true},
                {"target", where},
                {"vault_id", HexEncode(source.chain.vault_id)},
                {"head_seq", to.chain.last_seq},
                {"head_hash", HexEncode(to.head_hash)},
                {"tables", tables}});
    return;
  }
  Line(ctx, Cat("Copied the SQLite vault into ", where, " (one transaction), verified:"));
  Line(ctx, Cat("  vault id:     ", HexEncode(source.chain.vault_id)));
  Line(ctx, Cat("  audit chain:  verified on PostgreSQL, head seq ", to.chain.last_seq, " hash ",
                HexEncode(to.head_hash), " (the same as SQLite's)"));
  Line(ctx, "  table                    source   target");
  for (size_t i = 0; i < to.counts.size(); ++i) {
    Line(ctx, fmt::format("  {:<24} {:>6}   {:>6}", to.counts[i].first, from[i].second,
                          to.counts[i].second));
  }
  Line(ctx, "Next: set [vault] url (and password_file) in config.toml, then start ma-server.");
}

}  // namespace

Status MigrateVault(const AdminContext& ctx, const Config& cfg, const MigrateOptions& o) {
  if (!cfg.vault_url.empty()) {
    return Status(Code::kUnsupported, "this MA's vault is PostgreSQL already (vault.url)");
  }
  TPMMA_ASSIGN_OR_RETURN(storage::PostgresVaultOptions options,
                         PostgresOptionsFor(o.to, o.password_file, ctx.env));
  TPMMA_ASSIGN_OR_RETURN(std::string where, storage::PostgresVault::DescribeConnInfo(o.to));
  TPMMA_RETURN_IF_ERROR(storage::CheckSqliteVaultNotInUse(cfg.vault_path));
  TPMMA_ASSIGN_OR_RETURN(storage::SqliteFileReport source,
                         storage::CheckSqliteVaultFile(cfg.vault_path));
  if (source.chain.genesis_seq > 1) {
    // A PostgreSQL vault's chain starts with its genesis (AuditChainWalk::Genesis::kFirst).
    return Status(Code::kUnsupported,
                  Cat("this vault was upgraded to schema 6 with ", source.chain.genesis_seq - 1,
                      " audit records before its genesis record; PostgreSQL vaults begin with "
                      "theirs, so it cannot be migrated yet"));
  }
  storage::CopyCounts from;
  auto imported = storage::PostgresVault::ImportIntoEmpty(
      o.to, options, [&](storage::CopySink& sink) -> Status {
        SourceSink src(&sink);
        TPMMA_RETURN_IF_ERROR(storage::ExportSqliteVault(cfg.vault_path, src));
        from = src.counts();
        return src.Matches(source);
      });
  if (!imported) return imported.error().WithContext("vault migrate to " + where);
  TPMMA_RETURN_IF_ERROR(
      VerifyTarget(ctx, o, source).WithContext("copied, but the check after COMMIT failed"));
  PrintMigration(ctx, where, source, from, *imported);
  return Status();
}

}  // namespace tpmma::server
