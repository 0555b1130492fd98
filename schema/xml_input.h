// SPDX-License-Identifier: GPL-2.0-or-later
// Internal to tpmma_package: which bytes the package reader hands to libxml2. The reader
// checks bytes (UTF-8, no DOCTYPE) and signs/digests bytes, so libxml2 must parse exactly
// those bytes as UTF-8 and nothing else (issue #13: a signed package re-encoded as UTF-16
// without a BOM passed the UTF-8 check, since NUL is a valid UTF-8 byte, and libxml2 read it
// as UTF-16 from its first four bytes).
#pragma once

#include "common/bytes.h"
#include "common/status.h"

namespace tpmma::schema::internal {

// kMalformed unless `bytes` are strict UTF-8 (no overlongs, surrogates or values past
// U+10FFFF) without NUL, start with no byte order mark other than UTF-8's, and any XML
// declaration names no encoding other than UTF-8. The message says what was found.
Status CheckXmlIsUtf8(ByteView bytes);

}  // namespace tpmma::schema::internal
