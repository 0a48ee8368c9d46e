#!/usr/bin/env bash
# Build llama-cpp-python from its PyPI source distribution for benchmarks/llamacpp.py (a benchmark peer only:
# epjax never imports it, and the default install never pulls it in).
#
# The sdist vendors llama.cpp and compiles it with CMake and the machine's C/C++ compiler (here: CMake 3.25.1,
# GCC 12.2, several minutes on 2 cores). CMAKE_ARGS defaults to -DGGML_NATIVE=ON: the CPU backend is compiled with
# -march=native (AVX2 / AVX-512 / VNNI where the CPU has them), and OpenMP threads the graph when the compiler
# provides it. The result runs only on CPUs with this machine's instruction set.
#
#   bash benchmarks/install_llama_cpp.sh                 # llama-cpp-python 0.3.36, CMAKE_ARGS=-DGGML_NATIVE=ON
#   CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX2=ON" bash benchmarks/install_llama_cpp.sh
#   LLAMA_CPP_PYTHON_VERSION=0.3.36 LOG=/tmp/llama-build.txt bash benchmarks/install_llama_cpp.sh
set -euo pipefail

VERSION="${LLAMA_CPP_PYTHON_VERSION:-0.3.36}"
export CMAKE_ARGS="${CMAKE_ARGS:--DGGML_NATIVE=ON}"
LOG="${LOG:-/dev/stdout}"
PYTHON="${PYTHON:-python}"

command -v cmake >/dev/null || { echo "install_llama_cpp.sh: cmake is needed (>= 3.21)" >&2; exit 1; }
command -v c++ >/dev/null || command -v g++ >/dev/null || command -v clang++ >/dev/null ||
  { echo "install_llama_cpp.sh: a C++ compiler is needed" >&2; exit 1; }

echo "building llama-cpp-python==${VERSION} from its sdist, CMAKE_ARGS=${CMAKE_ARGS}" >&2
# --no-binary: never a prebuilt wheel; --no-cache-dir: never a wheel built earlier with other CMAKE_ARGS
"$PYTHON" -m pip install -v --no-binary llama-cpp-python --no-cache-dir "llama-cpp-python==${VERSION}" >"$LOG" 2>&1
"$PYTHON" - <<'PY'
import llama_cpp

print("llama_cpp", llama_cpp.__version__, "|", llama_cpp.llama_print_system_info().decode().strip())
PY
