// SPDX-License-Identifier: GPL-2.0-or-later
// The one translation unit that defines gSOAP's global namespaces[] table (the generated
// .nsmap defines it, so a second include would not link).
#include "soapH.h"

#include "MigrationAuthorityBinding.nsmap"
