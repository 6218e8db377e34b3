{
  "targets": [
    {
      "target_name": "vgg_native",
      "sources": [
        "native/binding.cc",
        "native/batchnorm.cc",
        "native/bf16.cc",
        "native/bf16_conv.cc",
        "native/bf16_gemm.cc",
        "native/conv2d.cc",
        "native/elementwise.cc",
        "native/gemm.cc",
        "native/gemm_avx512.cc",
        "native/isa.cc",
        "native/kernel_cache.cc",
        "native/loss.cc",
        "native/png.cc",
        "native/pool.cc",
        "native/sgd.cc",
        "native/sparse_gemm.cc",
        "native/threadpool.cc",
        "native/winograd.cc",
        "native/winograd4.cc",
        "native/winograd_avx512.cc"
      ],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")"],
      "defines": ["NAPI_VERSION=8", "NAPI_CPP_EXCEPTIONS"],
      "cflags!": ["-fno-exceptions", "-O2"],
      "cflags_cc!": ["-fno-exceptions", "-std=gnu++1y", "-std=gnu++17", "-O2"],
      "cflags_cc": ["-std=c++17", "-O3", "-fexceptions", "-pthread"],
      "ldflags": ["-pthread"],
      "xcode_settings": {
        "GCC_ENABLE_CPP_EXCEPTIONS": "YES",
        "CLANG_CXX_LANGUAGE_STANDARD": "c++17",
        "OTHER_CPLUSPLUSFLAGS": ["-O3"]
      },
      "msvs_settings": { "VCCLCompilerTool": { "ExceptionHandling": 1 } }
    }
  ],
  "variables": { "vgg_mpi_found": "<!(node native/mpi/detect.cjs found)" },
  "conditions": [
    [
      "vgg_mpi_found==1",
      {
        "targets": [
          {
            "target_name": "vgg_mpi",
            "sources": ["native/mpi/mpi_binding.cc", "native/mpi/comm.cc"],
            "include_dirs": [
              "<!(node -p \"require('node-addon-api').include_dir\")",
              "<!@(node native/mpi/detect.cjs include)"
            ],
            "libraries": ["<!@(node native/mpi/detect.cjs libs)", "-ldl"],
            "defines": ["NAPI_VERSION=8", "NAPI_CPP_EXCEPTIONS", "OMPI_SKIP_MPICXX"],
            "cflags!": ["-fno-exceptions"],
            "cflags_cc!": ["-fno-exceptions", "-std=gnu++1y", "-std=gnu++17"],
            "cflags_cc": ["-std=c++17", "-fexceptions", "-pthread"],
            "ldflags": ["-pthread"]
          }
        ]
      }
    ]
  ]
}
