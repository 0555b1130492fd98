# Tests for ma-admin (included from tests/server/CMakeLists.txt).
tpmma_test(admin_init_test SOURCES admin_init_test.cc LIBS tpmma_admin LABELS server)
target_compile_definitions(admin_init_test PRIVATE MA_ADMIN_PATH="$<TARGET_FILE:ma-admin>")
add_dependencies(admin_init_test ma-admin)
