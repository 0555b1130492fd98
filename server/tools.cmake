# ma-admin and ma-bench (included from server/CMakeLists.txt).

# PKI helpers and `ma-admin init`.
add_library(tpmma_admin STATIC admin_init.cc admin_audit.cc admin_commands.cc admin_platforms.cc admin_ek_trust.cc
            admin_vault.cc admin_ma_key.cc admin_reencipher.cc
            admin_enrollment.cc
            operator_client.cc)
tpmma_target(tpmma_admin)
target_link_libraries(tpmma_admin PUBLIC tpmma_common tpmma_ek_trust tpmma_tpm tpmma_storage
                      tpmma_server_config tpmma_soap tpmma_ma_service OpenSSL::SSL OpenSSL::Crypto
                      fmt::fmt)

add_executable(ma-admin admin_main.cc)
tpmma_target(ma-admin)
target_link_libraries(ma-admin PRIVATE tpmma_admin CLI11::CLI11)

# Load generator, see docs/benchmarks.md. Its TPM setup (authenticate, certify, sign
# packages) uses the ESAPI layer and the package library, as an LMS would.
add_executable(ma-bench bench/ma_bench.cc bench/bench_ops.cc bench/bench_http.cc
               bench/bench_tpm.cc bench/bench_soak.cc bench/bench_hostile.cc)
tpmma_target(ma-bench)
target_link_libraries(ma-bench PRIVATE tpmma_common tpmma_soap tpmma_esys tpmma_package tpmma_tpm
                      Boost::system OpenSSL::SSL OpenSSL::Crypto Threads::Threads CLI11::CLI11)
