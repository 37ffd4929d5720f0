// The schemas of every native op (one TORCH_LIBRARY block per namespace); the CPU kernels register
// themselves beside their code (TORCH_LIBRARY_IMPL), the fake kernels in tnops/_native_loader.py.
#include <pybind11/pybind11.h>
#include <torch/library.h>

TORCH_LIBRARY(tnops, m) {
  m.def("gumbel_noise(int seed, Tensor rows, int start, int stop) -> Tensor");
  m.def("mlm_head_native(Tensor inputs, Tensor? weight, Tensor? bias, Tensor labels, Tensor? row_ids, "
        "Tensor? syn_offsets, Tensor? syn_ids, int seed, bool sample, float temperature, bool disallow_correct, "
        "int ignore_index, bool want_inputs, bool want_weight, bool want_bias, int chunk_rows, float coef_a, "
        "float coef_b, float coef_c, float coef_d) -> (Tensor nll, Tensor lse, Tensor zmean, Tensor predictions, "
        "Tensor corrected, Tensor d_inputs, Tensor d_weight, Tensor d_bias)");
  m.def("mlm_head_native_backward(Tensor inputs, Tensor? weight, Tensor? bias, Tensor labels, Tensor lse, "
        "Tensor coef, bool want_inputs, bool want_weight, bool want_bias, int chunk_rows, Tensor? shard_other=None, "
        "int vocab_start=0, int vocab_all=0) -> (Tensor d_inputs, Tensor d_weight, Tensor d_bias)");
  m.def("mlm_shard_stats_native(Tensor inputs, Tensor? weight, Tensor? bias, Tensor labels, Tensor? row_ids, "
        "int seed, bool sample, float temperature, bool disallow_correct, int ignore_index, int vocab_start, "
        "int vocab_all, int chunk_rows) -> (Tensor stats, Tensor best_ids)");
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "tnops native CPU kernels (registered as torch.ops.tnops.*)";
}
