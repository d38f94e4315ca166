#!/usr/bin/env bash
# Run every chapter notebook under nbval again, once per CPU kernel path named
# on the command line, each time against the same stored outputs:
#
#   scripts/test_kernel_paths.sh avx2 default
#
# PyTorch's CPU kernels choose their code path at run time; these variables
# pin it, so one machine can stand in for another CPU:
#   ATEN_CPU_CAPABILITY  ATen's vectorized kernels (default, avx2, avx512)
#   ONEDNN_MAX_CPU_ISA   oneDNN's JIT kernels (LSTM, matmuls): SSE41, AVX2, ...
#   MKL_ENABLE_INSTRUCTIONS  MKL's BLAS: SSE4_2, AVX2, AVX512
# A path is one of:
#   avx2     AVX2 everywhere: what a CPU without AVX-512 runs (many AMD EPYC)
#   default  no AVX at all: ATen's scalar kernels, oneDNN at SSE4.1
#   avx512   AVX-512 everywhere (fails on a CPU without it)
# Before the notebooks, the script checks that the path took effect (ATen's
# capability as torch reports it, oneDNN's ISA as its verbose log shows it).
# Time budgets are not checked here (a narrower path is slower); `make test`
# checks them on the machine's own path.
#
# KERNEL_SKIP (space-separated notebook paths) leaves notebooks out, e.g. CI
# leaves out the longest chapter to stay well within its time limit.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin}
(( $# )) || { echo "usage: $0 PATH... (avx2, default, avx512)" >&2; exit 2; }

# Notebooks left out of every path, checked before any path runs.
skip=()
for nb in ${KERNEL_SKIP:-}; do
  [[ -f $nb ]] || { echo "$0: KERNEL_SKIP names no notebook '$nb'" >&2; exit 2; }
  skip+=("--ignore=$nb")
  echo "::: left out: $nb"
done

# The CPU's own ATen path, as `make test` just ran it.
native=$("$BIN/python" -c 'import torch; print(torch.backends.cpu.get_cpu_capability())')

for path in "$@"; do
  if [[ ${native,,} == "${path,,}" && -z ${KERNEL_PATHS_FORCE:-} ]]; then
    # e.g. avx2 on a CPU without AVX-512: the notebooks would run the
    # same kernels as in `make test` a second time (KERNEL_PATHS_FORCE=1 does).
    echo "::: kernel path '$path' is this CPU's own ($native): tested by make test, skipped"
    continue
  fi
  case $path in
    avx2)    aten=avx2    onednn=AVX2       mkl=AVX2   want_isa="AVX2" ;;
    default) aten=default onednn=SSE41      mkl=SSE4_2 want_isa="SSE4.1" ;;
    avx512)  aten=avx512  onednn=AVX512_CORE mkl=AVX512 want_isa="AVX-512" ;;
    *) echo "$0: unknown kernel path '$path' (avx2, default, avx512)" >&2
       exit 2 ;;
  esac
  export ATEN_CPU_CAPABILITY=$aten ONEDNN_MAX_CPU_ISA=$onednn \
         MKL_ENABLE_INSTRUCTIONS=$mkl
  echo "::: kernel path '$path': ATEN_CPU_CAPABILITY=$aten" \
       "ONEDNN_MAX_CPU_ISA=$onednn MKL_ENABLE_INSTRUCTIONS=$mkl"
  # The LSTM forward goes through oneDNN; its verbose log names the ISA.
  check=$(ONEDNN_VERBOSE=1 "$BIN/python" -c '
import torch
print("aten", torch.backends.cpu.get_cpu_capability())
torch.nn.LSTM(8, 8)(torch.randn(3, 2, 8))
')
  aten_got=$(sed -n 's/^aten //p' <<<"$check")
  isa_got=$(grep -m1 -o 'isa:[^,]*' <<<"$check" || true)
  echo "    torch reports ATen capability $aten_got; oneDNN $isa_got"
  if [[ ${aten_got,,} != "${aten,,}" ]]; then
    echo "$0: ATen runs '$aten_got', not '$aten'" >&2; exit 1
  fi
  if [[ $isa_got != *"$want_isa"* ]]; then
    echo "$0: oneDNN runs '$isa_got', not $want_isa" >&2; exit 1
  fi
  "$BIN/pytest" book -p no:nbtimes --nbval --nbval-current-env \
      --nbval-cell-timeout=900 --nbval-sanitize-with tests/nbval_sanitize.cfg \
      "${skip[@]}"
done
