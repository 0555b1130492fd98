// SPDX-License-Identifier: GPL-2.0-or-later
// `lms ek public --out FILE`: the EK public (TPM2B_PUBLIC, as tpm2_readpublic -o writes it)
// of the EK lms authenticates with, for the MA's administrator to register a TPM that has no
// EK certificate (`ma-admin platforms register --ek-public FILE` under the enrollment policy
// "registered"). Its own file: `lms ek fetch` (cli_ek.cc) shares the `ek` command group.
#include <openssl/sha.h>
#include <openssl/x509.h>

#include "client/lms/cli.h"
#include "client/ma/platform.h"
#include "common/openssl.h"
#include "tpm/public.h"

namespace tpmma::lms::cli {
namespace {

// The `ek` group, made by whichever ek command registers first.
CLI::App* EkGroup(CLI::App& app) {
  for (CLI::App* sub : app.get_subcommands([](CLI::App* s) { return s->get_name() == "ek"; })) {
    return sub;
  }
  CLI::App* ek = AddSubcommand(app, "ek", "This TPM's endorsement key (EK)");
  ek->require_subcommand(1);
  return ek;
}

// SHA-256 of the EK's SubjectPublicKeyInfo: the EK key id the MA registers and prints.
Result<std::string> EkKeyIdHex(const TPMT_PUBLIC& ek) {
  TPMMA_ASSIGN_OR_RETURN(EvpPkeyPtr key, tpm::PublicToEvp(ek));
  unsigned char* der = nullptr;
  const int n = i2d_PUBKEY(key.get(), &der);
  if (n <= 0) return Error(OpensslError("i2d_PUBKEY"));
  Bytes id(SHA256_DIGEST_LENGTH);
  SHA256(der, static_cast<size_t>(n), id.data());
  OPENSSL_free(der);
  return HexEncode(id);
}

}  // namespace

Command AddEkPublicCommand(CLI::App& app, const Globals& g) {
  auto out = std::make_shared<std::string>();
  CLI::App* c = AddSubcommand(*EkGroup(app), "public",
                              "Write the EK public (TPM2B_PUBLIC) lms authenticates with, for "
                              "`ma-admin platforms register --ek-public FILE`");
  c->add_option("--out", *out, "where to write it (\"-\": stdout)")->required();
  return {c, [&g, out]() -> int {
            auto lms = OpenLms(g);
            if (!lms) return Fail(g, lms.error());
            // No progress lines: ChooseEkOrNone's is about authenticating; the JSON and the
            // text say whether this TPM has a certificate.
            auto tpm = (*lms)->OpenForMa();
            if (!tpm) return Fail(g, tpm.error());
            auto chosen = ChooseEkOrNone(**lms, **tpm, {});
            if (!chosen) return Fail(g, chosen.error());
            auto ek = (*tpm)->CreateEk(*chosen->ek_template);
            if (!ek) return Fail(g, ek.error());
            auto info = (*tpm)->ReadPublic(*ek);
            if (!info) return Fail(g, info.error());
            auto key_id = EkKeyIdHex(info->public_area.publicArea);
            if (!key_id) return Fail(g, key_id.error());
            Status written = WriteOutput(g, *out, info->marshalled, kPublicFileMode);
            if (!written.ok()) return Fail(g, written);
            const std::string name = chosen->ek_template->name;
            return Succeed(g,
                           {{"ek_template", name},
                            {"ek_key_id", *key_id},
                            {"has_certificate", !chosen->certificate.empty()},
                            {"out", *out}},
                           *out == "-"
                               ? std::string()
                               : "EK public (" + name +
                                     (chosen->certificate.empty() ? ", no EK certificate in NV"
                                                                  : ", its certificate is in NV") +
                                     ") written to " + *out + "\nEK key id  " + *key_id +
                                     "\nregister it at the MA with `ma-admin platforms "
                                     "register --ek-public " +
                                     *out + "`\n");
          }};
}

}  // namespace tpmma::lms::cli
