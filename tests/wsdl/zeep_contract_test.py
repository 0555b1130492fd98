#!/usr/bin/python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""Checks migration.wsdl the way a stock SOAP client sees it (python3-zeep, Debian).

usage: zeep_contract_test.py WSDL XSD [--out DIR]

Loads the WSDL from file (no network), checks its WS-I shape (one element part per
message, literal bodies, documented TPM fields), the seven operations and their input
elements, builds a request for each with zeep and validates its body against the schema
extracted from the WSDL (lxml). With --out, writes the full SOAP envelopes zeep produced
as DIR/<Operation>[-<variant>].xml so the C++ test can feed them to the gSOAP service.
Exit status 0 means every check passed.
"""
import argparse
import os
import sys
import tempfile

import zeep
from lxml import etree

NS = "urn:tpm-ma:migration:1"
SOAP_ENV = "http://schemas.xmlsoap.org/soap/envelope/"

EXPECTED_INPUTS = {
    "Authenticate": "AuthenticateRequest",
    "Upload": "UploadRequest",
    "Download": "DownloadRequest",
    "Query": "QueryRequest",
    "Delete": "DeleteRequest",
    "GetMAServiceInfo": "GetMAServiceInfoRequest",
    "GetMAKey": "GetMAKeyRequest",
}

BLOB = bytes.fromhex("0004002300") + bytes(30)
CERT = bytes.fromhex("3082010230") + bytes(20)
TOKEN = "c2Vzc2lvbi10b2tlbi0wMTIzNDU2Nzg5QUJDREVG"
UUID = "3f2b8c1e-7a4d-4e2b-9c1f-0a1b2c3d4e5f"
PLATFORM = "000b" + "ab" * 32
NAME = bytes.fromhex("0022000b") + bytes(32)

# (operation, variant, kwargs)
REQUESTS = [
    ("Authenticate", "Begin", dict(Begin=dict(
        EKPublic=BLOB, EKCertificate=CERT, EKIntermediateCertificate=[CERT], AKPublic=BLOB))),
    ("Authenticate", "Complete", dict(Complete=dict(
        ChallengeId=bytes(range(16)), Proof=bytes(range(32)),
        PackageSigningKey=dict(Public=BLOB, CertifyInfo=BLOB, CertifySignature=BLOB)))),
    ("Upload", None, dict(SessionToken=TOKEN, Package=b"<MigrationPackage/>")),
    ("Download", "Prepare", dict(SessionToken=TOKEN, PackageId=UUID,
                                 Prepare=dict(DestinationParentName=NAME))),
    ("Download", "Complete", dict(SessionToken=TOKEN, PackageId=UUID, Complete=dict(
        Nonce=bytes(range(32)), DestinationParentPublic=BLOB, CertifyInfo=BLOB,
        CertifySignature=BLOB))),
    ("Query", None, dict(SessionToken=TOKEN, Filter=dict(SourcePlatformId=PLATFORM,
                                                         LabelContains="vpn"),
                         PageSize=100)),
    ("Delete", None, dict(SessionToken=TOKEN, PackageId=UUID)),
    ("GetMAServiceInfo", None, dict()),
    ("GetMAKey", None, dict(KeyId="ma-2026-1")),
]

failures = []


def check(cond, what):
    if not cond:
        failures.append(what)
        print("FAIL:", what)


WSDL = "http://schemas.xmlsoap.org/wsdl/"
WSDL_SOAP = "http://schemas.xmlsoap.org/wsdl/soap/"
XSD = "http://www.w3.org/2001/XMLSchema"


def check_wsdl_structure(doc):
    """WS-I Basic Profile shape and the documentation promise, read from the raw WSDL."""
    ns = {"wsdl": WSDL, "soap": WSDL_SOAP, "xsd": XSD}
    for msg in doc.iterfind("wsdl:message", ns):
        parts = msg.findall("wsdl:part", ns)
        name = msg.get("name")
        check(len(parts) == 1, "message %s has one part" % name)
        check(all(p.get("element") and not p.get("type") for p in parts),
              "message %s part refers to an element" % name)
        if name != "MAFault":
            check(parts[0].get("name") == "parameters", "message %s part is 'parameters'" % name)
    for body in doc.iterfind(".//soap:body", ns):
        check(body.get("use") == "literal" and body.get("namespace") is None,
              "soap:body is literal without namespace")
    binding = doc.find("wsdl:binding/soap:binding", ns)
    check(binding is not None and binding.get("style") == "document", "binding style document")
    check(binding is not None and
          binding.get("transport") == "http://schemas.xmlsoap.org/soap/http",
          "binding transport is SOAP over HTTP")
    address = doc.find("wsdl:service/wsdl:port/soap:address", ns)
    check(address is not None and doc.find("wsdl:service", ns).get("name") ==
          "MigrationAuthorityService", "service MigrationAuthorityService")
    # Every TPM structure field says which structure it holds.
    for el in doc.iterfind(".//xsd:element", ns):
        if el.get("type") in ("ma:TpmBlob",):
            text = "".join(el.itertext())
            check(any(t in text for t in ("TPM2B_", "TPMT_", "TPMS_")),
                  "element %s documents its TPM structure" % el.get("name"))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("wsdl")
    ap.add_argument("xsd")
    ap.add_argument("--out")
    args = ap.parse_args()

    check_wsdl_structure(etree.parse(args.wsdl))
    schema = etree.XMLSchema(etree.parse(args.xsd))
    client = zeep.Client(wsdl=args.wsdl)
    service = client.service._binding.name.text
    check(etree.QName(service).localname == "MigrationAuthorityBinding", "binding name is " + service)

    binding = client.service._binding
    ops = binding._operations
    check(set(ops) == set(EXPECTED_INPUTS), "operations are %s" % sorted(ops))
    for name, element in EXPECTED_INPUTS.items():
        op = ops.get(name)
        if op is None:
            continue
        qname = op.input.body.qname
        check(qname == etree.QName(NS, element), "%s input element is %s" % (name, qname))
        check(op.soapaction == "%s#%s" % (NS, name), "%s soapAction %s" % (name, op.soapaction))
        check(op.style == "document", name + " is document style")
        faults = list(op.faults)
        check(faults == ["MAFault"], "%s faults are %s" % (name, faults))

    out = args.out or tempfile.mkdtemp(prefix="tpmma-zeep-")
    seen = set()
    for op, variant, kwargs in REQUESTS:
        seen.add(op)
        label = op + ("-" + variant if variant else "")
        envelope = client.create_message(client.service, op, **kwargs)
        body = envelope.find("{%s}Body" % SOAP_ENV)
        check(body is not None and len(body) == 1, label + " has one body element")
        if body is None or len(body) != 1:
            continue
        payload = body[0]
        check(payload.tag == "{%s}%s" % (NS, EXPECTED_INPUTS[op]), label + " body element")
        if not schema.validate(etree.ElementTree(payload)):
            check(False, "%s does not validate: %s" % (label, schema.error_log))
        with open(os.path.join(out, label + ".xml"), "wb") as f:
            f.write(etree.tostring(envelope, xml_declaration=True, encoding="UTF-8"))
    check(seen == set(EXPECTED_INPUTS), "a request for every operation")

    # The schema must refuse what zeep would otherwise send for a bad caller value.
    bad = client.create_message(client.service, "Delete", SessionToken=TOKEN,
                                PackageId="not-a-uuid")
    check(not schema.validate(etree.ElementTree(bad.find("{%s}Body" % SOAP_ENV)[0])),
          "bad PackageId is refused by the schema")

    if failures:
        print("%d check(s) failed" % len(failures))
        return 1
    print("all zeep contract checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
