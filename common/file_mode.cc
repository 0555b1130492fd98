// SPDX-License-Identifier: GPL-2.0-or-later
#include "common/file_mode.h"

#include <sys/stat.h>

#include <cstdio>

namespace tpmma {

Status CheckOwnerOnlyFile(const std::string& path, std::string_view what) {
  return CheckOwnerOnlySecret(path, std::string(what) + " private key");
}

Status CheckOwnerOnlySecret(const std::string& path, std::string_view what) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) {
    return Status(Code::kIoError, "cannot stat " + std::string(what) + " " + path);
  }
  if ((st.st_mode & 077) != 0) {
    char mode[8];
    std::snprintf(mode, sizeof(mode), "%04o", static_cast<unsigned>(st.st_mode & 07777));
    return Status(Code::kPermissionDenied, std::string(what) + " " + path +
                                               " is accessible by group or others (mode " + mode +
                                               "); run: chmod 600 " + path);
  }
  return Status::Ok();
}

}  // namespace tpmma
