#!/usr/bin/python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""Stand-ins for the vendors' online EK certificate services, for lms_ek_fetch_test.

Serves over TLS on 127.0.0.1 (a free port, written to --port-file once listening):

  /intel/<mode>/<element>  Intel PTT: JSON {"pubhash": ..., "certificate": base64url(DER)}
  /amd/<mode>/<element>    AMD fTPM: the DER certificate itself

<element> is derived here, independently of lms, from the public key of each --serve
certificate, the way the vendors file them (tpm2-tools tools/tpm2_getekcertificate.c,
tpm2-tools issue 3158):
  Intel: base64url(SHA-256(modulus || 01 00 01)) with '=' sent as %3D; ECC: of x || y
  AMD:   hex(SHA-256(00 00 22 22 || exponent as 4 bytes || modulus)[:16]);
         ECC: 00 00 44 44 || x || y
Anything else is a 404. <mode>: ok (the certificate of that key), other (--other's
certificate instead), garbage (a broken reply), big (a 100 KiB reply).
"""
import argparse
import base64
import hashlib
import http.server
import json
import os
import re
import ssl
import subprocess
import sys


def openssl(*args, data=None):
    return subprocess.run(["openssl", *args], input=data, capture_output=True,
                          check=True).stdout


def hashed_bytes(cert_der, vendor):
    text = openssl("x509", "-inform", "DER", "-noout", "-pubkey", data=cert_der)
    spki_text = openssl("pkey", "-pubin", "-noout", "-text", data=text).decode()
    if "Modulus:" in spki_text:
        modulus = openssl("rsa", "-pubin", "-noout", "-modulus", data=text).decode()
        n = bytes.fromhex(modulus.strip().split("=", 1)[1])
        e = int(re.search(r"Exponent: (\d+)", spki_text).group(1))
        if vendor == "intel":
            assert e == 65537
            return n + b"\x01\x00\x01"
        return b"\x00\x00\x22\x22" + e.to_bytes(4, "big") + n
    # EC P-256: the SubjectPublicKeyInfo ends in the uncompressed point 04 || x || y.
    der = openssl("pkey", "-pubin", "-outform", "DER", data=text)
    point = der[-65:]
    assert point[0] == 4
    return (b"" if vendor == "intel" else b"\x00\x00\x44\x44") + point[1:]


def element(cert_der, vendor):
    digest = hashlib.sha256(hashed_bytes(cert_der, vendor)).digest()
    if vendor == "intel":
        return base64.urlsafe_b64encode(digest).decode().replace("=", "%3D")
    return digest[:16].hex()


def b64url(der):
    return base64.urlsafe_b64encode(der).decode().rstrip("=")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--tls-cert", required=True)
    p.add_argument("--tls-key", required=True)
    p.add_argument("--port-file", required=True)
    p.add_argument("--serve", action="append", default=[], help="DER certificate to serve")
    p.add_argument("--other", help="DER certificate sent in mode 'other'")
    args = p.parse_args()

    certs = [open(f, "rb").read() for f in args.serve]
    other = open(args.other, "rb").read() if args.other else None
    routes = {}
    for der in certs:
        for vendor in ("intel", "amd"):
            routes[(vendor, element(der, vendor))] = der

    class Handler(http.server.BaseHTTPRequestHandler):
        def reply(self, status, body, ctype):
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):
            parts = self.path.split("/")
            if len(parts) != 4 or parts[0] != "" or (parts[1], parts[3]) not in routes:
                return self.reply(404, b"not found\n", "text/plain")
            vendor, mode, elem = parts[1], parts[2], parts[3]
            der = routes[(vendor, elem)]
            if mode == "other" and other is not None:
                der = other
            elif mode == "garbage":
                body = b'{"pubhash": "' if vendor == "intel" else b"this is no certificate"
                return self.reply(200, body, "application/octet-stream")
            elif mode == "big":
                pad = b"A" * (100 * 1024)
                body = b'{"certificate": "' + pad + b'"}' if vendor == "intel" else pad
                return self.reply(200, body, "application/octet-stream")
            elif mode != "ok":
                return self.reply(404, b"no such mode\n", "text/plain")
            if vendor == "intel":
                body = json.dumps({"pubhash": elem, "certificate": b64url(der)}).encode()
                return self.reply(200, body, "application/json")
            return self.reply(200, der, "application/pkix-cert")

        def log_message(self, fmt, *a):
            sys.stderr.write("ek_service_standin: " + (fmt % a) + "\n")

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(args.tls_cert, args.tls_key)
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    tmp = args.port_file + ".tmp"
    with open(tmp, "w") as f:
        f.write(str(server.server_address[1]))
    os.rename(tmp, args.port_file)
    server.serve_forever()


if __name__ == "__main__":
    main()
