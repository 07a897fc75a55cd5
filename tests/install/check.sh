#!/bin/sh
# Installs the library from a configured build directory into a temporary
# folder and builds and runs tests/install/consumer.c against it three ways:
# through pkg-config with the shared libraries, through pkg-config --static
# with the archives, and as a meson subproject. Also checks the SONAMEs and
# that libautograd-nn.so names the engine it needs. Any failing step fails.
#
# tests/install/meson.build runs it with, in the environment:
#   SOURCE_ROOT BUILD_ROOT  this checkout and the build directory to install
#   PREFIX LIBDIR           that build's prefix and libdir options
#   ABI_VERSION             the SONAME's number
#   CC MESON PKG_CONFIG     the build's C compiler command, meson, pkg-config
#   SANITIZE COVERAGE       the build's b_sanitize and b_coverage, which the
#                           consumer must match to link its instrumented libs
set -eu

work=$(mktemp -d "${TMPDIR:-/tmp}/autograd-install.XXXXXX")
# A failed step keeps the folder for inspection; an interrupted run does not.
trap 'rm -rf "$work"; exit 1' HUP INT TERM
log=$work/log
step() { echo "== $*"; }
fail() {
    echo "check.sh: FAILED: $*" >&2
    [ -s "$log" ] && cat "$log" >&2
    echo "check.sh: the files are kept in $work" >&2
    exit 1
}

# The flags every consumer build gets: strict C11 (the headers must compile
# without a warning), and the build's instrumentation.
cflags="-std=c11 -Wall -Wextra -Wpedantic -Werror"
if [ "$SANITIZE" != none ]; then cflags="$cflags -fsanitize=$SANITIZE"; fi
if [ "$COVERAGE" = true ]; then cflags="$cflags --coverage"; fi
# An instrumented consumer's counts go here, not into the build's own.
export GCOV_PREFIX="$work/gcov"

# has_dynamic FILE PATTERN: whether FILE's dynamic section (readelf -d) has
# a line matching PATTERN, e.g. a NEEDED or SONAME entry.
has_dynamic() {
    entries=$(readelf -d "$1" 2>"$log") || fail "readelf -d $1"
    echo "$entries" | grep -q "$2"
}

# meson test builds only what tests run; meson install first builds the
# rest of what it installs (a no-op when the build is complete).
step "meson install into $work/stage"
stage=$work/stage
"$MESON" install -C "$BUILD_ROOT" --destdir "$stage" >"$log" 2>&1 ||
    fail "meson install"
case $LIBDIR in
/*) libdir=$stage$LIBDIR ;;
*) libdir=$stage$PREFIX/$LIBDIR ;;
esac
for header in autograd.h nn.h; do
    [ -f "$stage$PREFIX/include/autograd/$header" ] ||
        fail "no $PREFIX/include/autograd/$header installed"
done

step "SONAMEs libautograd.so.$ABI_VERSION and libautograd-nn.so.$ABI_VERSION, one engine"
has_dynamic "$libdir/libautograd.so" "soname: \[libautograd.so.$ABI_VERSION\]" ||
    fail "libautograd.so's SONAME is not libautograd.so.$ABI_VERSION"
has_dynamic "$libdir/libautograd-nn.so" "soname: \[libautograd-nn.so.$ABI_VERSION\]" ||
    fail "libautograd-nn.so's SONAME is not libautograd-nn.so.$ABI_VERSION"
has_dynamic "$libdir/libautograd-nn.so" "NEEDED.*\[libautograd.so.$ABI_VERSION\]" ||
    fail "libautograd-nn.so does not name libautograd.so.$ABI_VERSION as NEEDED"

# pkg_config STAGE ARGS: pkg-config on STAGE's .pc files, the sysroot
# putting STAGE in front of their -I and -L paths (set for these calls only:
# the subproject builds below must see the system's .pc files as they are).
pkg_config() {
    pc_stage=$1
    shift
    PKG_CONFIG_PATH="$pc_stage${libdir#"$stage"}/pkgconfig" PKG_CONFIG_SYSROOT_DIR="$pc_stage" \
        "$PKG_CONFIG" "$@" 2>"$log" || fail "pkg-config $*"
}
consumer=$SOURCE_ROOT/tests/install/consumer.c

shared_flags=$(pkg_config "$stage" --cflags --libs autograd autograd-nn)
step "pkg-config, shared: $shared_flags"
# shellcheck disable=SC2086 # the flags are a list
$CC $cflags "$consumer" -o "$work/consumer-shared" $shared_flags -lm \
    -Wl,-rpath,"$libdir" >"$log" 2>&1 ||
    fail "compiling and linking the consumer with pkg-config's flags"
has_dynamic "$work/consumer-shared" "NEEDED.*\[libautograd-nn.so.$ABI_VERSION\]" ||
    fail "the shared consumer does not load libautograd-nn.so.$ABI_VERSION"
"$work/consumer-shared" || fail "the shared consumer"

# The static link gets a copy of the stage without the shared libraries, as
# a system with only the archives installed; so pkg-config --static's flags
# alone must link them (a missing Libs.private is a link error).
static_stage=$work/static-stage
cp -R "$stage" "$static_stage"
rm -f "$static_stage${libdir#"$stage"}"/libautograd*.so*
static_flags=$(pkg_config "$static_stage" --static --cflags --libs autograd-nn)
step "pkg-config --static: $static_flags"
# shellcheck disable=SC2086
$CC $cflags "$consumer" -o "$work/consumer-static" $static_flags >"$log" 2>&1 ||
    fail "compiling and linking the consumer with pkg-config --static's flags"
if has_dynamic "$work/consumer-static" "NEEDED.*libautograd"; then
    fail "the static consumer loads a shared libautograd"
fi
"$work/consumer-static" || fail "the static consumer"

# The subproject builds use the same compiler, uninstrumented: they compile
# the library afresh, linked shared (meson's default) and static
# (default_library=static), and may not take an installed copy instead.
project=$work/subproject
mkdir -p "$project/subprojects"
cp "$SOURCE_ROOT/tests/install/subproject/meson.build" "$consumer" "$project/"
ln -s "$SOURCE_ROOT" "$project/subprojects/autograd"
for library in shared static; do
    step "meson subproject, default_library=$library"
    build=$work/subproject-$library
    CC="$CC" "$MESON" setup "$build" "$project" --force-fallback-for=autograd,autograd-nn \
        -Dautograd:default_library="$library" >"$log" 2>&1 ||
        fail "meson setup of the subproject consumer"
    "$MESON" compile -C "$build" >"$log" 2>&1 || fail "building the subproject consumer"
    loads_shared=no
    if has_dynamic "$build/consumer" "NEEDED.*\[libautograd-nn.so.$ABI_VERSION\]"; then
        loads_shared=yes
    fi
    [ "$loads_shared" = "$([ "$library" = shared ] && echo yes || echo no)" ] ||
        fail "the default_library=$library consumer loads libautograd-nn.so: $loads_shared"
    "$build/consumer" || fail "the default_library=$library subproject consumer"
done

rm -rf "$work"
echo "check.sh: every consumer built and ran"
