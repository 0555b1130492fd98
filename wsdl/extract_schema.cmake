# SPDX-License-Identifier: GPL-2.0-or-later
# cmake -DWSDL=in.wsdl -DXSD=out.xsd -P extract_schema.cmake
# Copies the <xsd:schema> element out of the WSDL's <wsdl:types>. The schema declares every
# prefix it uses (xsd, ma) on wsdl:definitions, so they are re-declared on the copy.
file(READ ${WSDL} text)
string(FIND "${text}" "<xsd:schema " begin)
string(FIND "${text}" "</xsd:schema>" end)
if(begin EQUAL -1 OR end EQUAL -1)
  message(FATAL_ERROR "no <xsd:schema> in ${WSDL}")
endif()
math(EXPR len "${end} - ${begin} + 13")
string(SUBSTRING "${text}" ${begin} ${len} schema)
string(REPLACE "<xsd:schema "
  "<xsd:schema xmlns:xsd=\"http://www.w3.org/2001/XMLSchema\" xmlns:ma=\"urn:tpm-ma:migration:1\" "
  schema "${schema}")
file(WRITE ${XSD} "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<!-- Generated from migration.wsdl; do not edit. -->\n${schema}\n")
