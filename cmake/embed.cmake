# SPDX-License-Identifier: GPL-2.0-or-later
# tpmma_embed_file(<out_var> INPUT <file> SYMBOL <name> NAMESPACE <ns> HEADER <dir/x.h>)
# Compiles a data file (an XSD, SQL) into the library at build time: sets <out_var> to the
# generated .cc, which the caller adds to its target's sources. HEADER declares the symbols.
set(TPMMA_EMBED_SCRIPT ${CMAKE_CURRENT_LIST_DIR}/embed_file.cmake)

function(tpmma_embed_file out_var)
  cmake_parse_arguments(E "" "INPUT;SYMBOL;NAMESPACE;HEADER" "" ${ARGN})
  get_filename_component(name ${E_INPUT} NAME)
  string(MAKE_C_IDENTIFIER ${name} stem)
  set(output ${CMAKE_CURRENT_BINARY_DIR}/${stem}.cc)
  add_custom_command(
    OUTPUT ${output}
    COMMAND ${CMAKE_COMMAND} -DINPUT=${E_INPUT} -DOUTPUT=${output} -DSYMBOL=${E_SYMBOL}
            -DNAMESPACE=${E_NAMESPACE} -DHEADER=${E_HEADER} -P ${TPMMA_EMBED_SCRIPT}
    DEPENDS ${E_INPUT} ${TPMMA_EMBED_SCRIPT}
    COMMENT "Embedding ${name}"
    VERBATIM)
  set(${out_var} ${output} PARENT_SCOPE)
endfunction()
