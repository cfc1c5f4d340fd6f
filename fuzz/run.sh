#!/usr/bin/env bash
# Coverage-guided fuzzing (libFuzzer via cargo-fuzz) of the keyless codec,
# the configuration loader and the PKCS#11 URI parser, on stable Rust
# (`--sanitizer none`: coverage without sanitizers). Each target runs for
# SECONDS_PER_TARGET seconds (CI: 20) from the corpus kept here, which it
# grows; a crash stops the script and leaves the input in artifacts/.
#
#   fuzz/run.sh                          # 5 minutes per target
#   SECONDS_PER_TARGET=20 fuzz/run.sh    # CI
set -euo pipefail
cd "$(dirname "$0")"
SECONDS_PER_TARGET=${SECONDS_PER_TARGET:-300}
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
for target in codec config pkcs11_uri; do
  echo "fuzz: $target for ${SECONDS_PER_TARGET}s"
  cargo fuzz run --sanitizer none "$target" "corpus/$target" -- \
    -max_total_time="$SECONDS_PER_TARGET" -max_len=70000 -print_final_stats=1 2>&1 | tail -4
done
