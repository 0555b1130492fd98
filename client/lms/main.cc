// SPDX-License-Identifier: GPL-2.0-or-later
// lms: the Local Migration Service on endpoints. Everything is in the tpmma_lms library
// (cli.h); see README.md for the commands, the store layout and the exit codes.
#include "client/lms/cli.h"

int main(int argc, char** argv) {
  return tpmma::lms::cli::Run(argc, argv);
}
