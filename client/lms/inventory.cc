// SPDX-License-Identifier: GPL-2.0-or-later
#include "client/lms/inventory.h"

#include <sys/utsname.h>
#include <unistd.h>

#include <array>
#include <utility>

#include "storage/vault.h"

namespace tpmma::lms {
namespace {

constexpr size_t kMaxFileBytes = 64 * 1024;

// Trimmed of surrounding whitespace; cut to kMaxInventoryField bytes at a character
// boundary; empty (left out) if the MA would refuse it anyway.
std::string Clean(std::string_view v) {
  const auto space = [](char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; };
  while (!v.empty() && space(v.front())) v.remove_prefix(1);
  while (!v.empty() && space(v.back())) v.remove_suffix(1);
  if (v.size() > storage::kMaxInventoryField) {
    size_t n = storage::kMaxInventoryField;
    while (n > 0 && (static_cast<unsigned char>(v[n]) & 0xC0) == 0x80) --n;
    v = v.substr(0, n);
  }
  if (!storage::CheckInventoryText("value", v).ok()) return {};
  return std::string(v);
}

std::string ReadValue(Env& env, const std::string& path) {
  auto bytes = env.ReadFile(path, kMaxFileBytes);
  if (!bytes) return {};
  return Clean(std::string_view(reinterpret_cast<const char*>(bytes->data()), bytes->size()));
}

// PRETTY_NAME="Debian GNU/Linux 12 (bookworm)" (os-release(5): shell-style, maybe quoted).
std::string PrettyName(Env& env, const std::string& path) {
  auto bytes = env.ReadFile(path, kMaxFileBytes);
  if (!bytes) return {};
  std::string_view text(reinterpret_cast<const char*>(bytes->data()), bytes->size());
  constexpr std::string_view kKey = "PRETTY_NAME=";
  while (!text.empty()) {
    const size_t eol = text.find('\n');
    std::string_view line = text.substr(0, eol);
    text = eol == std::string_view::npos ? std::string_view() : text.substr(eol + 1);
    if (!line.starts_with(kKey)) continue;
    line.remove_prefix(kKey.size());
    if (line.size() >= 2 && (line.front() == '"' || line.front() == '\'') &&
        line.back() == line.front()) {
      line = line.substr(1, line.size() - 2);
    }
    return Clean(line);
  }
  return {};
}

}  // namespace

ma::PlatformInventory CollectInventory(Env& env, esys::Tpm* tpm, std::string_view owner_label,
                                       const InventorySources& sources) {
  ma::PlatformInventory inv;
  std::array<char, 256> host{};
  if (gethostname(host.data(), host.size() - 1) == 0) inv.hostname = Clean(host.data());
  struct utsname uts {};
  if (uname(&uts) == 0) inv.kernel_release = Clean(uts.release);
  inv.os_name = PrettyName(env, sources.os_release);
  inv.machine_id = ReadValue(env, sources.machine_id);
  const std::pair<std::string*, const char*> dmi[] = {{&inv.system_vendor, "sys_vendor"},
                                                      {&inv.product_name, "product_name"},
                                                      {&inv.serial_number, "product_serial"},
                                                      {&inv.asset_tag, "chassis_asset_tag"}};
  for (const auto& [field, file] : dmi) *field = ReadValue(env, sources.dmi_dir + "/" + file);
  if (tpm != nullptr) {
    if (auto info = tpm->Info(); info) {
      inv.tpm_manufacturer = Clean(info->manufacturer);
      inv.tpm_vendor = Clean(info->vendor);
      inv.tpm_firmware = Clean(info->FirmwareString());
    }
  }
  inv.owner_label = Clean(owner_label);
  return inv;
}

Status CheckOwnerLabel(std::string_view label) {
  return storage::CheckInventoryText("the owner label", label);
}

std::string InventoryText(const ma::PlatformInventory& i, std::string_view indent) {
  const std::pair<const char*, const std::string*> rows[] = {{"hostname", &i.hostname},
                                                             {"owner label", &i.owner_label},
                                                             {"os", &i.os_name},
                                                             {"kernel", &i.kernel_release},
                                                             {"vendor", &i.system_vendor},
                                                             {"product", &i.product_name},
                                                             {"serial", &i.serial_number},
                                                             {"asset tag", &i.asset_tag},
                                                             {"machine-id", &i.machine_id},
                                                             {"TPM", &i.tpm_manufacturer},
                                                             {"TPM vendor", &i.tpm_vendor},
                                                             {"TPM firmware", &i.tpm_firmware}};
  std::string out;
  for (const auto& [name, value] : rows) {
    if (value->empty()) continue;
    std::string label = name;
    label.resize(13, ' ');
    out += std::string(indent) + label + *value + "\n";
  }
  return out;
}

}  // namespace tpmma::lms
