// SPDX-License-Identifier: GPL-2.0-or-later
// An invariant a harness insists on: a crash both libFuzzer and the replay test report.
#pragma once

#include <cstdio>
#include <cstdlib>

#define TPMMA_FUZZ_CHECK(cond)                                                               \
  do {                                                                                       \
    if (!(cond)) {                                                                           \
      std::fprintf(stderr, "%s:%d: fuzz invariant broken: %s\n", __FILE__, __LINE__, #cond); \
      std::abort();                                                                          \
    }                                                                                        \
  } while (0)
