// SPDX-License-Identifier: GPL-2.0-or-later
// `lms ek fetch`: the EK certificate from the TPM vendor's online service (ek_fetch.h).
#include <cstdio>

#include "client/lms/cli.h"
#include "client/lms/ek_fetch.h"
#include "common/text.h"
#include "tpm/esys/esys.h"

namespace tpmma::lms::cli {

namespace {

using nlohmann::json;

struct EkFetchArgs {
  std::string vendor, alg = "rsa", url, ca_file, out;
  int timeout = 30;
};

int RunEkFetch(const Globals& g, const EkFetchArgs& a) {
  // The TPM alone (no SRK is made) and the store's directory (which may be new).
  auto tpm = esys::Tpm::Open(g.tcti);
  if (!tpm) return Fail(g, tpm.error());
  KeyStore store(g.store, g.env);
  auto progress = [&g](std::string_view line) {
    if (g.json || g.quiet) return;
    std::fprintf(stderr, "lms: %.*s\n", static_cast<int>(line.size()), line.data());
  };
  EkFetchOptions options{.vendor = ParseEkVendor(a.vendor),
                         .ecc = a.alg == "ecc",
                         .base_url = a.url,
                         .ca_file = a.ca_file,
                         .timeout_s = a.timeout};
  auto r = FetchEkCertificate(**tpm, store, options, progress);
  if (!r) return Fail(g, r.error());
  if (!a.out.empty()) {
    Status written = WriteOutput(g, a.out, r->certificate, kPublicFileMode);
    if (!written.ok()) return Fail(g, written.WithContext("--out"));
  }
  const std::string vendor(EkVendorName(r->vendor));
  return Succeed(g,
                 {{"vendor", vendor},
                  {"manufacturer", r->manufacturer},
                  {"ek_template", r->ek_template},
                  {"url", r->url},
                  {"subject", r->subject},
                  {"issuer", r->issuer},
                  {"not_after", Utc(r->not_after)},
                  {"stored_at", r->stored_at}},
                 "EK certificate fetched from the " + vendor + " EK service\nurl          " +
                     r->url + "\nek           " + r->ek_template + " (TPM manufacturer \"" +
                     r->manufacturer + "\")\nsubject      " + r->subject + "\nissuer       " +
                     r->issuer + "\nnot after    " + Utc(r->not_after) + "\nkept in      " +
                     r->stored_at + " (lms authenticate uses it from now on)\n");
}

}  // namespace

Command AddEkCommand(CLI::App& app, const Globals& g) {
  CLI::App* ek =
      AddSubcommand(app, "ek", "This TPM's endorsement key: its certificate, its public area");
  ek->require_subcommand(1);
  auto a = std::make_shared<EkFetchArgs>();
  CLI::App* fetch = AddSubcommand(
      *ek, "fetch",
      "Fetch this TPM's EK certificate from the vendor's online service (Intel PTT, AMD "
      "fTPM: firmware TPMs that keep none in NV), check it certifies this TPM's EK, and keep "
      "it in the store for lms authenticate");
  fetch
      ->add_option("--vendor", a->vendor,
                   "intel or amd (default: from the TPM's manufacturer, INTC or AMD)")
      ->check(CLI::IsMember({"intel", "amd"}));
  fetch
      ->add_option("--alg", a->alg,
                   "rsa: the RSA 2048 EK (TCG template L-1, what firmware services certify), or "
                   "ecc: the ECC P-256 EK (L-2)")
      ->check(CLI::IsMember({"rsa", "ecc"}))
      ->capture_default_str();
  fetch->add_option("--url", a->url,
                    "base URL of the service (https:// only; default "
                    "https://ekop.intel.com/ekcertservice/ or https://ftpm.amd.com/pki/aia/)");
  fetch->add_option("--ca-file", a->ca_file,
                    "PEM file trusted for the service's TLS certificate (default: the system "
                    "trust store)");
  fetch->add_option("--out", a->out, "also write the certificate (DER) to this file");
  fetch->add_option("--timeout", a->timeout, "seconds for each network step")
      ->check(CLI::Range(1, 300))
      ->capture_default_str();
  // `ek` is a group (`ek public` is cli_ek_public.cc): the command is `ek fetch`.
  return {fetch, [&g, a]() -> int { return RunEkFetch(g, *a); }};
}

}  // namespace tpmma::lms::cli
