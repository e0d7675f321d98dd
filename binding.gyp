{
  "variables": {
    # 1 where an MPI library is installed (scripts/find-mpi.cjs): then the optional fcn_mpi
    # addon is built beside the engine. Without MPI the project builds exactly as before.
    "fcn_mpi%": "<!(node scripts/find-mpi.cjs found)"
  },
  "targets": [{
    "target_name": "fcn_native",
    "sources": [
      "native/addon.cc", "native/args.cc", "native/engine.cc", "native/buffers.cc", "native/tensor.cc",
      "native/conv.cc", "native/conv_subpixel.cc", "native/conv_winograd.cc", "native/conv_int8.cc", "native/conv_weights.cc", "native/conv_input_grad.cc", "native/conv_weight_grad.cc",
      "native/pool.cc", "native/eltwise.cc", "native/loss.cc", "native/optim.cc"
    ],
    "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")", "<!(node scripts/find-onednn.cjs include)"],
    "libraries": ["-L<!(node scripts/find-onednn.cjs lib)", "-ldnnl"],
    "cflags!": ["-fno-exceptions"],
    "cflags_cc!": ["-fno-exceptions", "-std=gnu++17"],
    # -fno-math-errno: a sqrt that need not set errno, so loops using it (Adam's) vectorise.
    "cflags_cc": ["-std=c++17", "-O3", "-fopenmp", "-fexceptions", "-fno-math-errno"],
    # libmvec: glibc's vector exp, for the loss (native/loss.cc).
    "conditions": [
      ["target_arch==\"x64\"", { "cflags_cc": ["-mavx2", "-mfma", "-mf16c"] }],
      ["OS==\"linux\" and target_arch==\"x64\"", { "libraries": ["-lmvec"] }]
    ],
    "ldflags": ["-fopenmp", "-Wl,-z,nodelete", "-Wl,-rpath,<!(node scripts/find-onednn.cjs lib)"],
    "defines": ["NAPI_VERSION=8", "NODE_ADDON_API_CPP_EXCEPTIONS", "NODE_API_SWALLOW_UNTHROWABLE_EXCEPTIONS"],
    "xcode_settings": {
      "GCC_ENABLE_CPP_EXCEPTIONS": "YES", "CLANG_CXX_LANGUAGE_STANDARD": "c++17",
      "OTHER_CPLUSPLUSFLAGS": ["-O3", "-Xpreprocessor", "-fopenmp"]
    }
  }],
  "conditions": [["fcn_mpi==1", {
    "targets": [{
      "target_name": "fcn_mpi",
      "sources": ["native/mpi.cc", "native/args.cc"],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")", "<!@(node scripts/find-mpi.cjs include)"],
      "libraries": ["<!@(node scripts/find-mpi.cjs libs)", "-ldl"],
      # -z nodelete: MPI, once initialised, must outlive any environment that loaded the addon.
      "ldflags": ["-Wl,-z,nodelete", "<!@(node scripts/find-mpi.cjs ldflags)"],
      "cflags!": ["-fno-exceptions"],
      "cflags_cc!": ["-fno-exceptions", "-std=gnu++17"],
      "cflags_cc": ["-std=c++17", "-O3", "-fexceptions", "-Wall", "-Wextra"],
      "conditions": [["target_arch==\"x64\"", { "cflags_cc": ["-mavx2", "-mfma"] }]],
      # OMPI_SKIP_MPICXX / MPICH_SKIP_MPICXX: the C API only (the deprecated C++ bindings warn).
      "defines": ["NAPI_VERSION=8", "NODE_ADDON_API_CPP_EXCEPTIONS", "OMPI_SKIP_MPICXX=1", "MPICH_SKIP_MPICXX=1"],
      "xcode_settings": { "GCC_ENABLE_CPP_EXCEPTIONS": "YES", "CLANG_CXX_LANGUAGE_STANDARD": "c++17" }
    }]
  }]]
}
