#!/usr/bin/env bash
# Build the `homa` command with profile-guided optimisation (PGO): an instrumented build
# runs the benchmarks' own workloads, and the final build lays its code out by what
# those runs executed. See BENCHMARKS.md ("A profile-guided build") for what it changes.
#
#   scripts/pgo-build.sh            # -> target/pgo/release/homa
#
# Needs rustup's `llvm-tools` component (installed here if missing): its llvm-profdata
# matches the compiler's LLVM, which a system llvm-profdata usually does not. The
# training runs use loopback, and the emulated switch of `homa testbed` where network
# namespaces are allowed (root, or unprivileged user namespaces); without them that part
# is skipped. Two release builds: about 10 minutes on 2 cores. RUSTFLAGS set in the
# environment are kept, with the profile flags added.
set -euo pipefail
case "${1-}" in
  "") ;;
  -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
  *) echo "error: unexpected argument '$1' (scripts/pgo-build.sh takes none; --help)" >&2; exit 2 ;;
esac
cd "$(dirname "$0")/.."

sysroot=$(rustc --print sysroot)
host=$(rustc -vV | sed -n 's/^host: //p')
profdata="$sysroot/lib/rustlib/$host/bin/llvm-profdata"
if [ ! -x "$profdata" ]; then
  rustup component add llvm-tools >/dev/null || true
fi
if [ ! -x "$profdata" ]; then
  echo "error: no llvm-profdata at $profdata (rustup component add llvm-tools)" >&2
  exit 1
fi

# The instrumented build writes its profiles under one fixed directory, so that its flags
# stay the same and a second run of this script rebuilds only the sources that changed.
# The merged profile is named by its content: cargo tracks RUSTFLAGS, not the file, so a
# new profile is a new flag (and a whole new optimised build).
profiles="$PWD/target/pgo-gen/profiles"
rm -rf "$profiles"
mkdir -p "$profiles" target/pgo

echo "== instrumented build (target/pgo-gen)"
RUSTFLAGS="${RUSTFLAGS:-} -Cprofile-generate=$profiles" \
  cargo build --release -p homa-cli --target-dir target/pgo-gen
gen=target/pgo-gen/release/homa

echo "== training runs"
# What runs most is laid out best, so the runs are weighted: the testbed's mixed load
# (the CPU comparison with TCP, both transports) counts ten times as much as the
# loopback lanes (small RPCs with both APIs, streaming, one RPC at a time), which make
# ten to a hundred times as many calls a second and would otherwise decide alone what
# is hot. Each run writes its own profiles (%m: the processes of one run merge theirs).
train() {
  local name=$1
  shift
  LLVM_PROFILE_FILE="$profiles/$name-%m.profraw" "$gen" "$@" >/dev/null
}
train loopback perf tput --size 100 --response 100 --window 64 --seconds 2
train loopback perf tput --size 100 --response 100 --window 64 --seconds 2 --homa-api tokio
train loopback perf tput --size 1000000 --seconds 2
train loopback perf rtt --count 20000
testbed=0
for gbps in 1 3; do
  if train testbed testbed bench --workload w4 --load 0.8 --gbps "$gbps" --seconds 5 \
    --protos homa,tcp 2>/dev/null; then
    testbed=1
  else
    echo "note: the testbed could not run here (network namespaces refused?): the" \
      "profile has the loopback runs only" >&2
    break
  fi
done

# (Build scripts and proc macros, instrumented too, left `default_*` profiles of their
# own here while the first build ran: they are not merged.)
inputs=("$profiles"/loopback-*.profraw)
if [ "$testbed" = 1 ]; then
  for f in "$profiles"/testbed-*.profraw; do
    inputs+=("--weighted-input=10,$f")
  done
fi
"$profdata" merge -o "$profiles/merged.profdata" "${inputs[@]}"
merged="$PWD/target/pgo/$(sha256sum "$profiles/merged.profdata" | cut -c1-16).profdata"
rm -f target/pgo/*.profdata # an earlier run's
mv "$profiles/merged.profdata" "$merged"

echo "== optimised build (target/pgo)"
RUSTFLAGS="${RUSTFLAGS:-} -Cprofile-use=$merged" \
  cargo build --release -p homa-cli --target-dir target/pgo
echo "built target/pgo/release/homa"
