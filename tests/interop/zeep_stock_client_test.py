#!/usr/bin/python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""A stock SOAP client that no one here wrote (python3-zeep) calls the real ma-server over
TLS, knowing only the WSDL: GetMAServiceInfo and GetMAKey, before and after an MA key rotation
(RetiringMAKeyId). The MA key it gets back is
checked independently with python3-cryptography: the TPM2B_PUBLIC must carry the same RSA
key as the MA certificate, and the Name must be nameAlg || SHA-256(TPMT_PUBLIC).

usage: zeep_stock_client_test.py WSDL MA_ADMIN MA_SERVER
"""
import hashlib
import os
import struct
import subprocess
import sys
import unittest

import requests
import zeep
import zeep.exceptions
from cryptography import x509

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ma_server_fixture import MaServer  # noqa: E402

WSDL, MA_ADMIN, MA_SERVER = sys.argv[1:4]
del sys.argv[1:4]


def stock_service(server):
    """zeep from the WSDL alone, over real TLS to `server` (its MA CA from ma-admin init)."""
    session = requests.Session()
    # Environment CA bundles (REQUESTS_CA_BUNDLE) and proxies would override ours.
    session.trust_env = False
    session.verify = server.ca
    client = zeep.Client(WSDL, transport=zeep.Transport(session=session))
    return client.create_service('{urn:tpm-ma:migration:1}MigrationAuthorityBinding', server.url)


class StockClientTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.server = MaServer(MA_ADMIN, MA_SERVER)
        cls.service = stock_service(cls.server)

    @classmethod
    def tearDownClass(cls):
        rc = cls.server.stop()
        assert rc == 0, f'ma-server exited with {rc} after SIGTERM'

    def test_service_info(self):
        info = self.service.GetMAServiceInfo()
        self.assertIn('urn:tpm-ma:migration:1', list(info.ProtocolVersion))
        ops = set(info.Operation)
        self.assertEqual(ops, {'Authenticate', 'Upload', 'Download', 'Query', 'Delete',
                               'GetMAServiceInfo', 'GetMAKey'})
        self.assertGreater(info.Limits.MaxPackageBytes, 0)
        # The storage key first, then the escrow key ma-admin init makes by default.
        self.assertEqual(list(info.MAKeyId), ['ma-1', 'escrow-1'])
        self.assertEqual(list(info.CustodyMode), ['RecoveryCode', 'Escrow'])

    def test_escrow_key_is_a_plain_decryption_key_certified_as_published(self):
        key = self.service.GetMAKey(KeyId='escrow-1')
        self.assertEqual(key.KeyId, 'escrow-1')
        cert = x509.load_der_x509_certificate(key.Certificate)
        with open(self.server.escrow_cert, 'rb') as f:
            self.assertEqual(cert, x509.load_pem_x509_certificate(f.read()))
        area = key.Public[2:]
        alg, name_alg, attrs = struct.unpack_from('>HHI', area, 0)
        self.assertEqual((alg, name_alg), (0x0001, 0x000B))
        restricted, decrypt, sign = 1 << 16, 1 << 17, 1 << 18
        self.assertEqual(attrs & (restricted | decrypt | sign), decrypt)
        self.assertEqual(int.from_bytes(area[-256:], 'big'),
                         cert.public_key().public_numbers().n)
        # Never the MA storage key: a different key, a different file.
        self.assertNotEqual(key.Public, self.service.GetMAKey().Public)

    def test_ma_key_matches_certificate_and_name(self):
        key = self.service.GetMAKey()
        self.assertEqual(key.KeyId, 'ma-1')
        cert = x509.load_der_x509_certificate(key.Certificate)
        with open(self.server.ma_cert, 'rb') as f:
            self.assertEqual(cert, x509.load_pem_x509_certificate(f.read()))
        # TPM2B_PUBLIC: size, then TPMT_PUBLIC (type, nameAlg, attributes, authPolicy, ...)
        size, = struct.unpack_from('>H', key.Public, 0)
        self.assertEqual(size + 2, len(key.Public))
        area = key.Public[2:]
        alg, name_alg, attrs = struct.unpack_from('>HHI', area, 0)
        self.assertEqual((alg, name_alg), (0x0001, 0x000B))  # RSA, SHA-256
        restricted, decrypt, sign = 1 << 16, 1 << 17, 1 << 18
        self.assertEqual(attrs & (restricted | decrypt | sign), restricted | decrypt)
        modulus = area[-256:]
        self.assertEqual(int.from_bytes(modulus, 'big'), cert.public_key().public_numbers().n)
        # TPM2B_NAME on the wire: size || nameAlg || digest
        expected = struct.pack('>H', 0x000B) + hashlib.sha256(area).digest()
        self.assertEqual(key.Name, struct.pack('>H', len(expected)) + expected)

    def test_unknown_key_is_a_fault_with_a_stable_code(self):
        with self.assertRaises(zeep.exceptions.Fault) as ctx:
            self.service.GetMAKey(KeyId='no-such-key')
        detail = ctx.exception.detail
        self.assertIsNotNone(detail)
        codes = [e.text for e in detail.iter() if e.tag.endswith('Code')]
        self.assertEqual(codes, ['NotFound'])

    def test_session_operations_refuse_a_bogus_token(self):
        with self.assertRaises(zeep.exceptions.Fault) as ctx:
            self.service.Delete(SessionToken='A' * 43,
                                PackageId='00000000-0000-4000-8000-000000000000')
        codes = [e.text for e in ctx.exception.detail.iter() if e.tag.endswith('Code')]
        self.assertEqual(codes, ['Unauthenticated'])


class RotatedMaTest(unittest.TestCase):
    """After `ma-admin ma-key rotate` (issue #16) the same stock client sees the new storage
    key with its approval, and the replaced one listed as retiring, from the WSDL alone."""

    @classmethod
    def setUpClass(cls):
        cls.server = MaServer(MA_ADMIN, MA_SERVER)
        subprocess.run([MA_ADMIN, 'ma-key', 'rotate', '--dir', cls.server.state], check=True,
                       capture_output=True)
        cls.server.restart()
        cls.service = stock_service(cls.server)

    @classmethod
    def tearDownClass(cls):
        rc = cls.server.stop()
        assert rc == 0, f'ma-server exited with {rc} after SIGTERM'

    def test_service_info_lists_the_retiring_key(self):
        info = self.service.GetMAServiceInfo()
        self.assertEqual(list(info.MAKeyId), ['ma-2', 'escrow-1'])
        self.assertEqual(list(info.RetiringMAKeyId), ['ma-1'])

    def test_current_key_is_approved_and_the_retiring_one_is_not(self):
        current = self.service.GetMAKey()
        self.assertEqual(current.KeyId, 'ma-2')
        self.assertIsNotNone(current.PolicySigningKey)
        self.assertIsNotNone(current.Approval)
        retiring = self.service.GetMAKey(KeyId='ma-1')
        self.assertEqual(retiring.KeyId, 'ma-1')
        self.assertIsNone(retiring.Approval)
        self.assertNotEqual(retiring.Name, current.Name)
        with open(self.server.ma_cert, 'rb') as f:  # ma-1's certificate, as init made it
            self.assertEqual(x509.load_der_x509_certificate(retiring.Certificate),
                             x509.load_pem_x509_certificate(f.read()))
        area = retiring.Public[2:]
        expected = struct.pack('>H', 0x000B) + hashlib.sha256(area).digest()
        self.assertEqual(retiring.Name, struct.pack('>H', len(expected)) + expected)


if __name__ == '__main__':
    unittest.main(verbosity=2)
