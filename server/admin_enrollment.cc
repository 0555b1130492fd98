// SPDX-License-Identifier: GPL-2.0-or-later
#include "server/admin_enrollment.h"

#include <openssl/evp.h>
#include <openssl/x509.h>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "server/ek_identity.h"
#include "server/ek_trust.h"
#include "tpm/marshal.h"

namespace tpmma::server {
namespace {

using nlohmann::json;
using storage::PlatformRegistration;
using storage::RegistrationKind;

constexpr size_t kMaxFileBytes = 16 * 1024 * 1024;
constexpr size_t kMaxReportedLines = 20;

Bytes Sha256(ByteView data) {
  Bytes out(32);
  unsigned int len = 0;
  EVP_Digest(data.data(), data.size(), out.data(), &len, EVP_sha256(), nullptr);
  return out;
}

std::string Trim(std::string_view s) {
  const auto first = s.find_first_not_of(" \t\r");
  if (first == std::string_view::npos) return {};
  const auto last = s.find_last_not_of(" \t\r");
  return std::string(s.substr(first, last - first + 1));
}

std::vector<std::string> SplitFields(std::string_view line) {
  std::vector<std::string> out;
  size_t start = 0;
  while (true) {
    const size_t comma = line.find(',', start);
    out.push_back(Trim(line.substr(start, comma - start)));
    if (comma == std::string_view::npos) return out;
    start = comma + 1;
  }
}

Result<Bytes> ParseDigest(const std::string& hex, std::string_view column) {
  auto digest = HexDecode(hex);
  if (!digest || digest->size() != 32) {
    return Error(Code::kInvalidArgument,
                 fmt::format("{} must be 64 hex digits (a SHA-256), got \"{}\"", column, hex));
  }
  return digest;
}

// Column indexes from the header row; -1 when absent.
struct Columns {
  int key_id = -1;
  int cert = -1;
  int label = -1;
};

Result<Columns> ParseHeader(const std::vector<std::string>& fields) {
  Columns c;
  for (size_t i = 0; i < fields.size(); ++i) {
    int* slot = fields[i] == "ek_key_id"        ? &c.key_id
                : fields[i] == "ek_cert_sha256" ? &c.cert
                : fields[i] == "label"          ? &c.label
                                                : nullptr;
    if (slot == nullptr || *slot != -1) {
      return Error(Code::kInvalidArgument,
                   fmt::format("header: column \"{}\" is {}; the columns are ek_key_id or "
                               "ek_cert_sha256, and label",
                               fields[i], slot == nullptr ? "unknown" : "named twice"));
    }
    *slot = static_cast<int>(i);
  }
  if (c.key_id == -1 && c.cert == -1) {
    return Error(Code::kInvalidArgument,
                 "header: the first line must name the columns, with ek_key_id or ek_cert_sha256");
  }
  return c;
}

Result<PlatformRegistration> ParseRow(const std::vector<std::string>& fields, const Columns& c,
                                      size_t header_size, int64_t now) {
  if (fields.size() != header_size) {
    return Error(Code::kInvalidArgument,
                 fmt::format("{} field(s), the header has {}", fields.size(), header_size));
  }
  auto field = [&](int i) { return i < 0 ? std::string() : fields[static_cast<size_t>(i)]; };
  const std::string key_id = field(c.key_id), cert = field(c.cert);
  if (key_id.empty() == cert.empty()) {
    return Error(Code::kInvalidArgument, "give exactly one of ek_key_id and ek_cert_sha256");
  }
  PlatformRegistration r;
  r.kind = key_id.empty() ? RegistrationKind::kEkCertSha256 : RegistrationKind::kEkKeyId;
  TPMMA_ASSIGN_OR_RETURN(r.digest, key_id.empty() ? ParseDigest(cert, "ek_cert_sha256")
                                                  : ParseDigest(key_id, "ek_key_id"));
  r.label = field(c.label);
  r.created_at = now;
  return r;
}

Result<PlatformRegistration> FromEkPublic(const AdminContext& ctx, const std::string& file) {
  TPMMA_ASSIGN_OR_RETURN(Bytes bytes, ctx.env->ReadFile(file, kMaxFileBytes));
  auto ek = tpm::Unmarshal<TPM2B_PUBLIC>(bytes);
  if (!ek) return Error(ek.error().WithContext(file + " (a TPM2B_PUBLIC, tpm2_createek -u)"));
  PlatformRegistration r;
  r.kind = RegistrationKind::kEkKeyId;
  TPMMA_ASSIGN_OR_RETURN(r.digest, EkKeyId(ek->publicArea));
  return r;
}

Result<PlatformRegistration> FromEkCertificate(const AdminContext& ctx, const std::string& file) {
  TPMMA_ASSIGN_OR_RETURN(Bytes bytes, ctx.env->ReadFile(file, kMaxFileBytes));
  // As read from NV: the MA hashes the certificate without the padding after its DER length.
  if (auto der = TrimEkCertificatePadding(bytes)) bytes = std::move(*der);
  TPMMA_ASSIGN_OR_RETURN(std::vector<X509Ptr> certs, ParseCertificates(bytes, file));
  if (certs.size() != 1) {
    return Error(Code::kInvalidArgument, file + ": holds more than one certificate");
  }
  unsigned char* der = nullptr;
  const int len = i2d_X509(certs[0].get(), &der);
  if (len <= 0) return Error(Code::kCryptoError, file + ": cannot encode the certificate");
  PlatformRegistration r;
  r.kind = RegistrationKind::kEkCertSha256;
  r.digest = Sha256(ByteView(der, static_cast<size_t>(len)));
  OPENSSL_free(der);
  return r;
}

json RegistrationJson(const PlatformRegistration& r) {
  return {
      {"kind", std::string(ToString(r.kind))}, {"digest", HexEncode(r.digest)}, {"label", r.label}};
}

}  // namespace

Result<std::vector<PlatformRegistration>> ParseRegistrationCsv(std::string_view text,
                                                               const std::string& origin,
                                                               int64_t now) {
  std::vector<PlatformRegistration> out;
  std::vector<std::string> errors;
  std::optional<Columns> columns;
  size_t header_size = 0, line_no = 0, bad = 0;
  for (size_t pos = 0; pos <= text.size();) {
    size_t end = text.find('\n', pos);
    if (end == std::string_view::npos) end = text.size();
    const std::string line = Trim(text.substr(pos, end - pos));
    pos = end + 1;
    ++line_no;
    if (line.empty() || line.front() == '#') continue;
    const std::vector<std::string> fields = SplitFields(line);
    auto fail = [&](const Status& st) {
      if (++bad <= kMaxReportedLines) {
        errors.push_back(fmt::format("{}:{}: {}", origin, line_no, st.message()));
      }
    };
    if (!columns) {
      auto h = ParseHeader(fields);
      if (!h)
        return Error(Code::kInvalidArgument,
                     fmt::format("{}:{}: {}", origin, line_no, h.error().message()));
      columns = *h;
      header_size = fields.size();
      continue;
    }
    if (line.find('"') != std::string::npos) {
      fail(Status(Code::kInvalidArgument, "quoted fields are not supported"));
      continue;
    }
    auto r = ParseRow(fields, *columns, header_size, now);
    if (r) {
      out.push_back(std::move(*r));
    } else {
      fail(r.error());
    }
  }
  if (!columns) return Error(Code::kInvalidArgument, origin + ": empty, no header row");
  if (bad > 0) {
    std::string msg = fmt::format("{} bad line(s), nothing registered: ", bad);
    for (size_t i = 0; i < errors.size(); ++i) msg += (i ? "; " : "") + errors[i];
    if (bad > errors.size()) msg += fmt::format("; and {} more", bad - errors.size());
    return Error(Code::kInvalidArgument, std::move(msg));
  }
  if (out.empty()) return Error(Code::kInvalidArgument, origin + ": no platforms after the header");
  return out;
}

Status RegisterPlatforms(const AdminContext& ctx, const RegisterOptions& o) {
  const int given = !o.ek_public.empty() + !o.ek_cert.empty() + !o.csv.empty();
  if (given != 1) {
    return Status(Code::kInvalidArgument, "give exactly one of --ek-public, --ek-cert and --csv");
  }
  if (!o.csv.empty() && !o.label.empty()) {
    return Status(Code::kInvalidArgument, "--label is for one platform; a CSV file has its own");
  }
  std::vector<PlatformRegistration> regs;
  std::string source;
  if (!o.csv.empty()) {
    TPMMA_ASSIGN_OR_RETURN(Bytes text, ctx.env->ReadFile(o.csv, kMaxFileBytes));
    TPMMA_ASSIGN_OR_RETURN(
        regs, ParseRegistrationCsv(
                  std::string_view(reinterpret_cast<const char*>(text.data()), text.size()), o.csv,
                  ctx.env->NowUnixSeconds()));
    source = o.csv;
  } else {
    TPMMA_ASSIGN_OR_RETURN(PlatformRegistration r, o.ek_public.empty()
                                                       ? FromEkCertificate(ctx, o.ek_cert)
                                                       : FromEkPublic(ctx, o.ek_public));
    r.label = o.label;
    r.created_at = ctx.env->NowUnixSeconds();
    regs.push_back(std::move(r));
    source = o.ek_public.empty() ? o.ek_cert : o.ek_public;
  }
  const std::string object = regs.size() == 1 ? HexEncode(regs[0].digest) : source;
  storage::AuditEvent ev{ctx.env->NowUnixSeconds(),
                         ctx.actor,
                         "RegisterPlatforms",
                         object,
                         "ok",
                         fmt::format("{} platform(s) from {}", regs.size(), source)};
  TPMMA_ASSIGN_OR_RETURN(size_t added, ctx.vault->RegisterPlatforms(regs, ev));
  json list = json::array();
  for (const auto& r : regs) list.push_back(RegistrationJson(r));
  if (ctx.json) {
    std::fprintf(ctx.out, "%s\n",
                 json{{"ok", true}, {"added", added}, {"registrations", list}}.dump(2).c_str());
    return Status::Ok();
  }
  for (const auto& r : regs) {
    std::fprintf(ctx.out, "%s %s %s\n", std::string(ToString(r.kind)).c_str(),
                 HexEncode(r.digest).c_str(), r.label.c_str());
  }
  std::fprintf(ctx.out, "Registered %zu platform(s), %zu already registered.\n", added,
               regs.size() - added);
  return Status::Ok();
}

Status ListRegistrations(const AdminContext& ctx) {
  TPMMA_ASSIGN_OR_RETURN(auto regs, ctx.vault->ListRegistrations());
  json list = json::array();
  for (const auto& r : regs) list.push_back(RegistrationJson(r));
  if (ctx.json) {
    std::fprintf(ctx.out, "%s\n", json{{"ok", true}, {"registrations", list}}.dump(2).c_str());
    return Status::Ok();
  }
  for (const auto& r : regs) {
    std::fprintf(ctx.out, "%-14s %s %s\n", std::string(ToString(r.kind)).c_str(),
                 HexEncode(r.digest).c_str(), r.label.c_str());
  }
  std::fprintf(ctx.out, "%zu registration(s)\n", regs.size());
  return Status::Ok();
}

Status AcceptPlatform(const AdminContext& ctx, const std::string& id) {
  storage::AuditEvent ev{ctx.env->NowUnixSeconds(),
                         ctx.actor,
                         "AcceptPlatform",
                         id,
                         "ok",
                         "pending platform accepted (enrollment policy approve-first)"};
  TPMMA_RETURN_IF_ERROR(ctx.vault->AcceptPlatform(id, ev));
  if (ctx.json) {
    std::fprintf(ctx.out, "%s\n", json{{"ok", true}, {"accepted", id}}.dump(2).c_str());
  } else {
    std::fprintf(ctx.out, "Accepted platform %s: its next Authenticate opens a session.\n",
                 id.c_str());
  }
  return Status::Ok();
}

}  // namespace tpmma::server
