#!/bin/sh
# No object of the build was compiled against the committed C++ stubs (sdk-stubs/cpp/veil/,
# sdk-stubs/cpp/google/): every C++ target uses the stubs the build generates from proto/, so
# a stale committed header can never be what runs. Reads the compiler's dependency list of each
# object (OBJECT.o.d, written at each compile; CMake's consolidated lists lag a build behind).
# no_committed_stubs_test.sh SOURCE_DIR BUILD_DIR
set -eu
src=$1
build=$2
lists=$(find "$build" -name '*.o.d' -path '*CMakeFiles*' | head -1)
[ -n "$lists" ] || { echo "no dependency lists under $build: build first" >&2; exit 1; }
found=$(find "$build" -name '*.o.d' -path '*CMakeFiles*' \
          -exec grep -l -e "$src/sdk-stubs/cpp/veil/" -e "$src/sdk-stubs/cpp/google/" {} + || true)
if [ -n "$found" ]; then
  echo "compiled against committed stubs (sdk-stubs/cpp/veil or google/):" >&2
  echo "$found" >&2
  exit 1
fi
count=$(find "$build" -name '*.o.d' -path '*CMakeFiles*' | wc -l)
echo "ok: $count objects, none against the committed stubs"
