// SPDX-License-Identifier: GPL-2.0-or-later
#include "client/lms/mrk_handle.h"

#include <charconv>

#include "client/lms/keystore.h"
#include "common/text.h"

namespace tpmma::lms {

Result<MrkHandleProbe> ProbeMrkHandle(esys::Tpm& tpm, uint32_t handle, ByteView mrk_name) {
  MrkHandleProbe out;
  TPMMA_ASSIGN_OR_RETURN(bool exists, tpm.HandleExists(handle));
  if (!exists) return out;
  TPMMA_ASSIGN_OR_RETURN(esys::Object held, tpm.FromPersistent(handle));
  TPMMA_ASSIGN_OR_RETURN(esys::PublicInfo info, tpm.ReadPublic(held));
  out.name = info.name;
  out.holder = out.name.size() == mrk_name.size() &&
                       std::equal(out.name.begin(), out.name.end(), mrk_name.begin())
                   ? HandleHolder::kThisMrk
                   : HandleHolder::kOther;
  return out;
}

Status CheckMrkHandleFree(esys::Tpm& tpm, uint32_t handle, ByteView mrk_name) {
  TPMMA_ASSIGN_OR_RETURN(MrkHandleProbe probe, ProbeMrkHandle(tpm, handle, mrk_name));
  if (probe.holder != HandleHolder::kOther) return Status::Ok();
  return Status(Code::kAlreadyExists,
                "persistent handle " + HandleText(handle) + " holds another object (Name " +
                    HexEncode(probe.name) +
                    "), not this store's MRK; choose another handle with --mrk-handle, or free "
                    "it if nothing needs it (tpm2_evictcontrol -C o -c " +
                    HandleText(handle) + ")");
}

Status PersistMrk(esys::Tpm& tpm, const esys::Object& mrk, ByteView mrk_name, uint32_t handle) {
  TPMMA_RETURN_IF_ERROR(CheckMrkHandleFree(tpm, handle, mrk_name));
  TPMMA_ASSIGN_OR_RETURN(MrkHandleProbe probe, ProbeMrkHandle(tpm, handle, mrk_name));
  if (probe.holder == HandleHolder::kThisMrk) return Status::Ok();
  TPMMA_ASSIGN_OR_RETURN(esys::Object persistent, tpm.Persist(mrk, handle));
  (void)persistent;  // closing the ESYS_TR leaves the key in NV
  return Status::Ok();
}

Status EvictMrk(esys::Tpm& tpm, uint32_t handle, ByteView mrk_name) {
  TPMMA_ASSIGN_OR_RETURN(MrkHandleProbe probe, ProbeMrkHandle(tpm, handle, mrk_name));
  if (probe.holder != HandleHolder::kThisMrk) return Status::Ok();
  TPMMA_ASSIGN_OR_RETURN(esys::Object held, tpm.FromPersistent(handle));
  return tpm.EvictPersistent(std::move(held));
}

std::string HandleText(uint32_t handle) {
  return Hex32(handle);
}

Result<uint32_t> ParseMrkHandle(std::string_view text) {
  if (text == "none") return 0u;
  std::string_view digits = text;
  if (digits.starts_with("0x") || digits.starts_with("0X")) digits.remove_prefix(2);
  uint64_t v = 0;
  auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), v, 16);
  if (digits.empty() || ec != std::errc() || end != digits.data() + digits.size() ||
      !IsPersistentHandle(static_cast<int64_t>(v)) || v > 0xffffffffULL) {
    return Error(Code::kInvalidArgument,
                 "--mrk-handle '" + std::string(text) +
                     "': give a persistent handle 0x81000000..0x817FFFFF (default 0x81000100), "
                     "or 'none'");
  }
  return static_cast<uint32_t>(v);
}

}  // namespace tpmma::lms
