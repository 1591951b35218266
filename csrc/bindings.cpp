// pybind11 module tsprune._C. Thin: unpack integers into the job structs,
// release the GIL, call the kernels. Python (tsprune/ops/_ext.py) owns every
// tensor check; the kernels re-check what would otherwise corrupt memory
// (index ranges on the CPU, dtype codes).
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <array>
#include <tuple>

#include "ops.h"

namespace py = pybind11;
using tsprune::GatherJob;

namespace {

// (src, dst, rows, cols, R, C, s0, s1, src_rows, src_cols, src_code, dst_code)
using JobTuple = std::tuple<uintptr_t, uintptr_t, uintptr_t, uintptr_t, int64_t, int64_t, int64_t,
                            int64_t, int64_t, int64_t, int, int>;
using Strides3 = std::array<int64_t, 3>;
using Strides2 = std::array<int64_t, 2>;

std::vector<GatherJob> to_jobs(const std::vector<JobTuple>& in) {
  std::vector<GatherJob> jobs;
  jobs.reserve(in.size());
  for (const auto& t : in) {
    GatherJob j;
    j.src = reinterpret_cast<const void*>(std::get<0>(t));
    j.dst = reinterpret_cast<void*>(std::get<1>(t));
    j.rows = reinterpret_cast<const int64_t*>(std::get<2>(t));
    j.cols = reinterpret_cast<const int64_t*>(std::get<3>(t));
    j.R = std::get<4>(t);
    j.C = std::get<5>(t);
    j.s0 = std::get<6>(t);
    j.s1 = std::get<7>(t);
    j.src_rows = std::get<8>(t);
    j.src_cols = std::get<9>(t);
    j.src_code = std::get<10>(t);
    j.dst_code = std::get<11>(t);
    jobs.push_back(j);
  }
  return jobs;
}

int num_threads() { return tsprune::resolve_threads(0); }

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "tsprune compiled kernels (raw-pointer bindings; use tsprune.ops, not this module)";

  m.def("build_info", []() {
    py::dict d;
#ifdef TSPRUNE_VERSION
    d["version"] = TSPRUNE_VERSION;
#endif
#ifdef TSPRUNE_WITH_CUDA
    d["cuda"] = true;
#else
    d["cuda"] = false;
#endif
#ifdef _OPENMP
    d["openmp"] = true;
#else
    d["openmp"] = false;
#endif
    d["threads"] = num_threads();
    return d;
  });

  m.def(
      "gather_cpu",
      [](const std::vector<JobTuple>& jobs, int nthreads) {
        auto js = to_jobs(jobs);
        py::gil_scoped_release nogil;
        tsprune::gather_cpu(js, nthreads);
      },
      py::arg("jobs"), py::arg("nthreads") = 0,
      "Gather rows/cols of each job (see csrc/common.h GatherJob), one parallel region.");

  m.def(
      "importance_cpu",
      [](uintptr_t x, int x_code, Strides3 xs, uintptr_t g, int g_code, Strides3 gs, int64_t B,
         int64_t T, int64_t d, uintptr_t imp, uintptr_t out, double alpha, bool first,
         int nthreads) {
        py::gil_scoped_release nogil;
        tsprune::importance_cpu(reinterpret_cast<const void*>(x), x_code, xs.data(),
                                reinterpret_cast<const void*>(g), g_code, gs.data(), B, T, d,
                                reinterpret_cast<float*>(imp), reinterpret_cast<float*>(out),
                                alpha, first, nthreads);
      },
      py::arg("x"), py::arg("x_code"), py::arg("x_strides"), py::arg("g"), py::arg("g_code"),
      py::arg("g_strides"), py::arg("B"), py::arg("T"), py::arg("d"), py::arg("imp"),
      py::arg("out"), py::arg("alpha"), py::arg("first"), py::arg("nthreads") = 0);

  m.def(
      "importance_from_grad_cpu",
      [](uintptr_t gb, int code, Strides2 s, int64_t B, int64_t d, uintptr_t imp, uintptr_t out,
         double alpha, bool first, int nthreads) {
        py::gil_scoped_release nogil;
        tsprune::importance_from_grad_cpu(reinterpret_cast<const void*>(gb), code, s.data(), B, d,
                                          reinterpret_cast<float*>(imp),
                                          reinterpret_cast<float*>(out), alpha, first, nthreads);
      },
      py::arg("gb"), py::arg("code"), py::arg("strides"), py::arg("B"), py::arg("d"),
      py::arg("imp"), py::arg("out"), py::arg("alpha"), py::arg("first"),
      py::arg("nthreads") = 0);

#ifdef TSPRUNE_WITH_CUDA
  m.attr("MAX_CUDA_JOBS") = tsprune::kMaxCudaJobs;

  m.def("cuda_check", &tsprune::cuda_check,
        "'' if the CUDA kernels can run in this process, else the reason (probes the driver).");

  m.def(
      "gather_cuda",
      [](const std::vector<JobTuple>& jobs, uintptr_t stream) {
        auto js = to_jobs(jobs);
        py::gil_scoped_release nogil;
        tsprune::gather_cuda(js, stream);
      },
      py::arg("jobs"), py::arg("stream"));

  m.def(
      "importance_cuda",
      [](uintptr_t x, int x_code, Strides3 xs, uintptr_t g, int g_code, Strides3 gs, int64_t B,
         int64_t T, int64_t d, uintptr_t imp, uintptr_t out, double alpha, bool first,
         int64_t nsplit, uintptr_t workspace, uintptr_t stream) {
        py::gil_scoped_release nogil;
        tsprune::importance_cuda(reinterpret_cast<const void*>(x), x_code, xs.data(),
                                 reinterpret_cast<const void*>(g), g_code, gs.data(), B, T, d,
                                 reinterpret_cast<float*>(imp), reinterpret_cast<float*>(out),
                                 alpha, first, nsplit, reinterpret_cast<float*>(workspace),
                                 stream);
      },
      py::arg("x"), py::arg("x_code"), py::arg("x_strides"), py::arg("g"), py::arg("g_code"),
      py::arg("g_strides"), py::arg("B"), py::arg("T"), py::arg("d"), py::arg("imp"),
      py::arg("out"), py::arg("alpha"), py::arg("first"), py::arg("nsplit"),
      py::arg("workspace"), py::arg("stream"));

  m.def(
      "importance_from_grad_cuda",
      [](uintptr_t gb, int code, Strides2 s, int64_t B, int64_t d, uintptr_t imp, uintptr_t out,
         double alpha, bool first, int64_t nsplit, uintptr_t workspace, uintptr_t stream) {
        py::gil_scoped_release nogil;
        tsprune::importance_from_grad_cuda(reinterpret_cast<const void*>(gb), code, s.data(), B,
                                           d, reinterpret_cast<float*>(imp),
                                           reinterpret_cast<float*>(out), alpha, first, nsplit,
                                           reinterpret_cast<float*>(workspace), stream);
      },
      py::arg("gb"), py::arg("code"), py::arg("strides"), py::arg("B"), py::arg("d"),
      py::arg("imp"), py::arg("out"), py::arg("alpha"), py::arg("first"), py::arg("nsplit"),
      py::arg("workspace"), py::arg("stream"));
#endif
}
