// SPDX-License-Identifier: GPL-2.0-or-later
#include "tpm/wrap.h"

#include <openssl/core_names.h>
#include <openssl/rand.h>
#include <openssl/rsa.h>

#include <cstring>
#include <string>

#include "common/openssl.h"
#include "tpm/kdf.h"
#include "tpm/marshal.h"
#include "tpm/public.h"

namespace tpmma::tpm {

namespace {

struct SymParams {
  const EVP_CIPHER* cipher;
  size_t bits;
};

Result<SymParams> ParentSym(const TPMT_PUBLIC& parent) {
  const TPMT_SYM_DEF_OBJECT& sym = parent.type == TPM2_ALG_RSA
                                       ? parent.parameters.rsaDetail.symmetric
                                       : parent.parameters.eccDetail.symmetric;
  if (sym.algorithm != TPM2_ALG_AES || sym.mode.aes != TPM2_ALG_CFB) {
    return Error(Code::kUnsupported, "parent symmetric algorithm must be AES-CFB");
  }
  switch (sym.keyBits.aes) {
    case 128:
      return SymParams{EVP_aes_128_cfb128(), 128};
    case 192:
      return SymParams{EVP_aes_192_cfb128(), 192};
    case 256:
      return SymParams{EVP_aes_256_cfb128(), 256};
    default:
      return Error(Code::kUnsupported, "unsupported AES key size in parent");
  }
}

template <typename Out>
Result<Out> AesCfb(const EVP_CIPHER* cipher, ByteView key, ByteView in, bool encrypt) {
  EvpCipherCtxPtr ctx(EVP_CIPHER_CTX_new());
  const uint8_t iv[16] = {};
  if (!ctx || EVP_CipherInit_ex(ctx.get(), cipher, nullptr, key.data(), iv, encrypt ? 1 : 0) != 1) {
    return Error(OpensslError("EVP_CipherInit_ex(AES-CFB)"));
  }
  Out out(in.size() + 16);
  int len = 0, fin = 0;
  if (EVP_CipherUpdate(ctx.get(), out.data(), &len, in.data(), static_cast<int>(in.size())) != 1 ||
      EVP_CipherFinal_ex(ctx.get(), out.data() + len, &fin) != 1) {
    return Error(OpensslError("EVP_Cipher(AES-CFB)"));
  }
  out.resize(static_cast<size_t>(len + fin));
  return out;
}

Result<Bytes> Hmac(TPMI_ALG_HASH hash, ByteView key, ByteView a, ByteView b) {
  TPMMA_ASSIGN_OR_RETURN(const EVP_MD* md, HashMd(hash));
  EvpMacPtr mac(EVP_MAC_fetch(nullptr, "HMAC", nullptr));
  if (!mac) return Error(OpensslError("EVP_MAC_fetch(HMAC)"));
  EvpMacCtxPtr ctx(EVP_MAC_CTX_new(mac.get()));
  OSSL_PARAM params[] = {
      OSSL_PARAM_utf8_string(OSSL_MAC_PARAM_DIGEST, const_cast<char*>(EVP_MD_get0_name(md)), 0),
      OSSL_PARAM_END};
  Bytes out(EVP_MD_get_size(md));
  size_t len = 0;
  if (!ctx || EVP_MAC_init(ctx.get(), key.data(), key.size(), params) != 1 ||
      EVP_MAC_update(ctx.get(), a.data(), a.size()) != 1 ||
      EVP_MAC_update(ctx.get(), b.data(), b.size()) != 1 ||
      EVP_MAC_final(ctx.get(), out.data(), &len, out.size()) != 1) {
    return Error(OpensslError("HMAC"));
  }
  out.resize(len);
  return out;
}

Bytes OaepLabel(std::string_view label) {
  Bytes l(label.begin(), label.end());
  l.push_back(0);
  return l;
}

}  // namespace

Status SetOaepParameters(EVP_PKEY_CTX* ctx, const EVP_MD* md, std::string_view label) {
  if (EVP_PKEY_CTX_set_rsa_padding(ctx, RSA_PKCS1_OAEP_PADDING) != 1 ||
      EVP_PKEY_CTX_set_rsa_oaep_md(ctx, md) != 1 || EVP_PKEY_CTX_set_rsa_mgf1_md(ctx, md) != 1) {
    return OpensslError("RSA-OAEP parameters");
  }
  Bytes l = OaepLabel(label);
  // set0 takes ownership of an OPENSSL_malloc'ed buffer.
  void* owned = OPENSSL_memdup(l.data(), l.size());
  if (owned == nullptr ||
      EVP_PKEY_CTX_set0_rsa_oaep_label(ctx, owned, static_cast<int>(l.size())) != 1) {
    OPENSSL_free(owned);
    return OpensslError("EVP_PKEY_CTX_set0_rsa_oaep_label");
  }
  return Status::Ok();
}

namespace {

Result<SecureBytes> EcdhX(EVP_PKEY* priv, EVP_PKEY* peer) {
  EvpPkeyCtxPtr ctx(EVP_PKEY_CTX_new_from_pkey(nullptr, priv, nullptr));
  size_t len = 0;
  if (!ctx || EVP_PKEY_derive_init(ctx.get()) != 1 ||
      EVP_PKEY_derive_set_peer(ctx.get(), peer) != 1 ||
      EVP_PKEY_derive(ctx.get(), nullptr, &len) != 1) {
    return Error(OpensslError("ECDH"));
  }
  SecureBytes z(len);
  if (EVP_PKEY_derive(ctx.get(), z.data(), &len) != 1)
    return Error(OpensslError("EVP_PKEY_derive"));
  z.resize(len);
  return z;
}

Result<size_t> CurveBytes(TPMI_ECC_CURVE curve) {
  switch (curve) {
    case TPM2_ECC_NIST_P256:
      return size_t{32};
    case TPM2_ECC_NIST_P384:
      return size_t{48};
    default:
      return Error(Code::kUnsupported, "unsupported ECC curve");
  }
}

}  // namespace

Result<Seed> CreateSeed(const TPMT_PUBLIC& parent, std::string_view label) {
  TPMMA_ASSIGN_OR_RETURN(const EVP_MD* md, HashMd(parent.nameAlg));
  const size_t dsize = static_cast<size_t>(EVP_MD_get_size(md));
  TPMMA_ASSIGN_OR_RETURN(EvpPkeyPtr pub, PublicToEvp(parent));
  Seed out;
  if (parent.type == TPM2_ALG_RSA) {
    out.seed.resize(dsize);
    if (RAND_bytes(out.seed.data(), static_cast<int>(dsize)) != 1) {
      return Error(OpensslError("RAND_bytes(seed)"));
    }
    EvpPkeyCtxPtr ctx(EVP_PKEY_CTX_new_from_pkey(nullptr, pub.get(), nullptr));
    if (!ctx || EVP_PKEY_encrypt_init(ctx.get()) != 1)
      return Error(OpensslError("EVP_PKEY_encrypt_init"));
    TPMMA_RETURN_IF_ERROR(SetOaepParameters(ctx.get(), md, label));
    size_t len = 0;
    if (EVP_PKEY_encrypt(ctx.get(), nullptr, &len, out.seed.data(), out.seed.size()) != 1) {
      return Error(OpensslError("EVP_PKEY_encrypt"));
    }
    out.encrypted.resize(len);
    if (EVP_PKEY_encrypt(ctx.get(), out.encrypted.data(), &len, out.seed.data(), out.seed.size()) !=
        1) {
      return Error(OpensslError("EVP_PKEY_encrypt"));
    }
    out.encrypted.resize(len);
    return out;
  }
  // ECC: a fresh key pair on the parent's curve; only its public point travels.
  TPMMA_ASSIGN_OR_RETURN(size_t cbytes, CurveBytes(parent.parameters.eccDetail.curveID));
  EvpPkeyCtxPtr gctx(EVP_PKEY_CTX_new_from_pkey(nullptr, pub.get(), nullptr));
  EVP_PKEY* eph_raw = nullptr;
  if (!gctx || EVP_PKEY_keygen_init(gctx.get()) != 1 ||
      EVP_PKEY_keygen(gctx.get(), &eph_raw) != 1) {
    return Error(OpensslError("EVP_PKEY_keygen(ephemeral EC)"));
  }
  EvpPkeyPtr eph(eph_raw);
  TPMMA_ASSIGN_OR_RETURN(SecureBytes z, EcdhX(eph.get(), pub.get()));
  TPMS_ECC_POINT point{};
  BIGNUM* x_raw = nullptr;
  BIGNUM* y_raw = nullptr;
  if (EVP_PKEY_get_bn_param(eph.get(), OSSL_PKEY_PARAM_EC_PUB_X, &x_raw) != 1 ||
      EVP_PKEY_get_bn_param(eph.get(), OSSL_PKEY_PARAM_EC_PUB_Y, &y_raw) != 1) {
    BN_free(x_raw);
    return Error(OpensslError("EVP_PKEY_get_bn_param(ephemeral)"));
  }
  BignumPtr x(x_raw), y(y_raw);
  const int n = static_cast<int>(cbytes);
  if (BN_bn2binpad(x.get(), point.x.buffer, n) != n ||
      BN_bn2binpad(y.get(), point.y.buffer, n) != n) {
    return Error(OpensslError("BN_bn2binpad"));
  }
  point.x.size = point.y.size = static_cast<uint16_t>(cbytes);
  const auto& px = parent.unique.ecc.x;
  TPMMA_ASSIGN_OR_RETURN(out.seed, KDFe(parent.nameAlg, z, label, ByteView(point.x.buffer, cbytes),
                                        ByteView(px.buffer, px.size), dsize * 8));
  TPMMA_ASSIGN_OR_RETURN(out.encrypted, Marshal(point));
  return out;
}

Result<SecureBytes> RecoverSeed(EVP_PKEY* parent_private, const TPMT_PUBLIC& parent,
                                ByteView encrypted, std::string_view label) {
  TPMMA_ASSIGN_OR_RETURN(const EVP_MD* md, HashMd(parent.nameAlg));
  const size_t dsize = static_cast<size_t>(EVP_MD_get_size(md));
  if (parent.type == TPM2_ALG_RSA) {
    if (!EVP_PKEY_is_a(parent_private, "RSA")) {
      return Error(Code::kInvalidArgument, "parent is RSA but the private key is not");
    }
    EvpPkeyCtxPtr ctx(EVP_PKEY_CTX_new_from_pkey(nullptr, parent_private, nullptr));
    if (!ctx || EVP_PKEY_decrypt_init(ctx.get()) != 1)
      return Error(OpensslError("EVP_PKEY_decrypt_init"));
    TPMMA_RETURN_IF_ERROR(SetOaepParameters(ctx.get(), md, label));
    size_t len = 0;
    if (EVP_PKEY_decrypt(ctx.get(), nullptr, &len, encrypted.data(), encrypted.size()) != 1) {
      return Error(OpensslError("EVP_PKEY_decrypt"));
    }
    SecureBytes seed(len);
    if (EVP_PKEY_decrypt(ctx.get(), seed.data(), &len, encrypted.data(), encrypted.size()) != 1) {
      // Do not say more: OAEP failure details are a padding oracle.
      return Error(Code::kIntegrityFailure, "encrypted seed does not decrypt with this key");
    }
    seed.resize(len);
    if (seed.size() != dsize) {
      return Error(Code::kIntegrityFailure, "decrypted seed has the wrong size for the nameAlg");
    }
    return seed;
  }
  if (parent.type != TPM2_ALG_ECC || !EVP_PKEY_is_a(parent_private, "EC")) {
    return Error(Code::kInvalidArgument, "parent and private key types do not match");
  }
  TPMMA_ASSIGN_OR_RETURN(TPMS_ECC_POINT point, Unmarshal<TPMS_ECC_POINT>(encrypted));
  TPMT_PUBLIC eph_pub{};
  eph_pub.type = TPM2_ALG_ECC;
  eph_pub.nameAlg = parent.nameAlg;
  eph_pub.parameters.eccDetail.curveID = parent.parameters.eccDetail.curveID;
  eph_pub.unique.ecc = point;
  TPMMA_ASSIGN_OR_RETURN(EvpPkeyPtr eph, PublicToEvp(eph_pub));
  TPMMA_ASSIGN_OR_RETURN(SecureBytes z, EcdhX(parent_private, eph.get()));
  const auto& px = parent.unique.ecc.x;
  return KDFe(parent.nameAlg, z, label, ByteView(point.x.buffer, point.x.size),
              ByteView(px.buffer, px.size), dsize * 8);
}

Result<Bytes> OuterWrap(const TPMT_PUBLIC& parent, ByteView seed, ByteView name, ByteView inner) {
  TPMMA_ASSIGN_OR_RETURN(SymParams sym, ParentSym(parent));
  TPMMA_ASSIGN_OR_RETURN(size_t dsize, DigestSize(parent.nameAlg));
  TPMMA_ASSIGN_OR_RETURN(SecureBytes sym_key,
                         KDFa(parent.nameAlg, seed, "STORAGE", name, {}, sym.bits));
  TPMMA_ASSIGN_OR_RETURN(Bytes enc, AesCfb<Bytes>(sym.cipher, sym_key, inner, true));
  TPMMA_ASSIGN_OR_RETURN(SecureBytes hmac_key,
                         KDFa(parent.nameAlg, seed, "INTEGRITY", {}, {}, dsize * 8));
  TPMMA_ASSIGN_OR_RETURN(Bytes mac, Hmac(parent.nameAlg, hmac_key, enc, name));
  Bytes body;
  body.reserve(2 + mac.size() + enc.size());
  body.push_back(static_cast<uint8_t>(mac.size() >> 8));
  body.push_back(static_cast<uint8_t>(mac.size()));
  body.insert(body.end(), mac.begin(), mac.end());
  body.insert(body.end(), enc.begin(), enc.end());
  return body;
}

Result<SecureBytes> OuterUnwrap(const TPMT_PUBLIC& parent, ByteView seed, ByteView name,
                                ByteView body) {
  TPMMA_ASSIGN_OR_RETURN(SymParams sym, ParentSym(parent));
  TPMMA_ASSIGN_OR_RETURN(size_t dsize, DigestSize(parent.nameAlg));
  if (body.size() < 2)
    return Error(Code::kMalformed, "wrapped blob shorter than its HMAC size field");
  const size_t mac_len = (size_t{body[0]} << 8) | body[1];
  if (mac_len != dsize || body.size() < 2 + mac_len) {
    return Error(Code::kMalformed,
                 "wrapped blob: outer HMAC size does not match the parent nameAlg");
  }
  ByteView mac = body.subspan(2, mac_len);
  ByteView enc = body.subspan(2 + mac_len);
  TPMMA_ASSIGN_OR_RETURN(SecureBytes hmac_key,
                         KDFa(parent.nameAlg, seed, "INTEGRITY", {}, {}, dsize * 8));
  TPMMA_ASSIGN_OR_RETURN(Bytes expected, Hmac(parent.nameAlg, hmac_key, enc, name));
  if (!ConstantTimeEqual(mac, expected)) {
    return Error(Code::kIntegrityFailure,
                 "outer HMAC mismatch: the blob is damaged, or wrapped for another key or Name");
  }
  TPMMA_ASSIGN_OR_RETURN(SecureBytes sym_key,
                         KDFa(parent.nameAlg, seed, "STORAGE", name, {}, sym.bits));
  return AesCfb<SecureBytes>(sym.cipher, sym_key, enc, false);
}

}  // namespace tpmma::tpm
