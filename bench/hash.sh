#!/usr/bin/env bash
# Hashing benchmark: `lodestone create` against `sha1sum` on the same 1 GiB
# file in tmpfs, alternating, several runs in one invocation. Prints MiB/s
# per run, the medians and the ratios. Usage: bench/hash.sh [RUNS] [SIZE_MIB]
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-3}
size_mib=${2:-1024}

cargo build --release -q -p lodestone
bin=target/release/lodestone
dir=$(mktemp -d /dev/shm/lodestone-bench.XXXXXX)
trap 'rm -rf "$dir"' EXIT
file="$dir/payload.bin"
head -c "$((size_mib << 20))" /dev/urandom > "$file"
cat "$file" > /dev/null

calc() { awk "BEGIN { print $1 }"; }
secs() { local t0 t1; t0=$(date +%s.%N); "$@" > /dev/null; t1=$(date +%s.%N); calc "$t1 - $t0"; }
mibs() { calc "$size_mib / $1"; }

declare -a sha ossl lode1 lode
for i in $(seq 1 "$runs"); do
  s=$(secs sha1sum "$file");                                                   sha+=("$(mibs "$s")")
  s=$(secs openssl dgst -sha1 "$file");                                        ossl+=("$(mibs "$s")")
  s=$(secs "$bin" create "$file" --piece-size 1M --threads 1 -f -o "$dir/t1.torrent");  lode1+=("$(mibs "$s")")
  s=$(secs "$bin" create "$file" --piece-size 1M -f -o "$dir/t.torrent");       lode+=("$(mibs "$s")")
  printf 'run %d: sha1sum %6.0f MiB/s | openssl sha1 %6.0f MiB/s | lodestone 1 thread %6.0f MiB/s | lodestone all cores (%d) %6.0f MiB/s\n' \
    "$i" "${sha[-1]}" "${ossl[-1]}" "${lode1[-1]}" "$(nproc)" "${lode[-1]}"
done
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
m_sha=$(median "${sha[@]}"); m_ossl=$(median "${ossl[@]}"); m_l1=$(median "${lode1[@]}"); m_l=$(median "${lode[@]}")
printf 'median: sha1sum %.0f MiB/s, openssl %.0f MiB/s, lodestone 1 thread %.0f MiB/s (%.2fx), all cores %.0f MiB/s (%.2fx)\n' \
  "$m_sha" "$m_ossl" "$m_l1" "$(calc "$m_l1 / $m_sha")" "$m_l" "$(calc "$m_l / $m_sha")"
