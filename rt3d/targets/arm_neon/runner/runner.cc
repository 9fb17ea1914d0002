// rt3d runner: loads an exported rt3d artifact (model.so + weights.bin + io.txt + params.txt) with the TVM
// runtime, runs it on inputs read from raw files and writes the outputs as raw files.
//
//   rt3d_runner ARTIFACT_DIR [--input FILE]... [--output-prefix PREFIX] [--repeat N] [--warmup N] [--threads N]
//
// Without --input the inputs are zeros. Every input/output file is the tensor's raw little-endian bytes in C
// order (numpy: x.astype(dtype).tofile(path) / np.fromfile(path, dtype).reshape(shape)). Prints one line per run
// with its latency and a summary line "median_ms=...".
#include <tvm/ffi/container/tensor.h>
#include <tvm/ffi/extra/module.h>
#include <tvm/ffi/function.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace ffi = tvm::ffi;

namespace {

struct AlignedAlloc {  // what ffi::Tensor::FromNDAlloc needs: 64-byte aligned host memory
  void AllocData(DLTensor* t) {
    size_t n = (t->dtype.bits * t->dtype.lanes + 7) / 8;
    for (int i = 0; i < t->ndim; ++i) n *= static_cast<size_t>(t->shape[i]);
    void* p = nullptr;
    if (posix_memalign(&p, 64, std::max<size_t>(n, 64)) != 0) throw std::runtime_error("out of memory");
    std::memset(p, 0, std::max<size_t>(n, 64));
    t->data = p;
  }
  void FreeData(DLTensor* t) { std::free(t->data); }
};

struct Spec {
  std::string name;
  DLDataType dtype;
  std::vector<int64_t> shape;
  size_t offset = 0, nbytes = 0;
};

DLDataType ParseDtype(const std::string& s) {
  if (s == "float32") return DLDataType{kDLFloat, 32, 1};
  if (s == "float16") return DLDataType{kDLFloat, 16, 1};
  if (s == "int32") return DLDataType{kDLInt, 32, 1};
  if (s == "int64") return DLDataType{kDLInt, 64, 1};
  if (s == "int8") return DLDataType{kDLInt, 8, 1};
  throw std::runtime_error("unsupported dtype '" + s + "'");
}

size_t Bytes(const Spec& s) {
  size_t n = (s.dtype.bits + 7) / 8;
  for (int64_t d : s.shape) n *= static_cast<size_t>(d);
  return n;
}

// io.txt lines: "input|output NAME DTYPE NDIM D0 D1 ..."; params.txt lines: "DTYPE OFFSET NBYTES NDIM D0 D1 ..."
std::vector<Spec> ReadSpecs(const std::string& path, const std::string& kind) {
  std::ifstream f(path);
  if (!f) throw std::runtime_error("cannot open " + path);
  std::vector<Spec> out;
  std::string line;
  while (std::getline(f, line)) {
    if (line.empty() || line[0] == '#') continue;
    std::istringstream is(line);
    Spec s;
    std::string dtype;
    int ndim = 0;
    if (kind == "param") {
      is >> dtype >> s.offset >> s.nbytes >> ndim;
    } else {
      std::string k;
      is >> k >> s.name >> dtype >> ndim;
      if (k != kind) continue;
    }
    s.dtype = ParseDtype(dtype);
    s.shape.resize(ndim);
    for (int i = 0; i < ndim; ++i) is >> s.shape[i];
    if (!is) throw std::runtime_error("malformed line in " + path + ": " + line);
    out.push_back(s);
  }
  return out;
}

ffi::Tensor Make(const Spec& s) {
  return ffi::Tensor::FromNDAlloc(AlignedAlloc(), ffi::ShapeView(s.shape.data(), s.shape.size()), s.dtype,
                                  DLDevice{kDLCPU, 0});
}

void ReadInto(const std::string& path, ffi::Tensor& t, size_t nbytes, size_t offset = 0) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw std::runtime_error("cannot open " + path);
  f.seekg(static_cast<std::streamoff>(offset));
  f.read(static_cast<char*>(t.data_ptr()), static_cast<std::streamsize>(nbytes));
  if (f.gcount() != static_cast<std::streamsize>(nbytes))
    throw std::runtime_error(path + ": expected " + std::to_string(nbytes) + " bytes at offset " +
                             std::to_string(offset));
}

}  // namespace

int main(int argc, char** argv) {
  try {
    if (argc < 2) {
      std::cerr << "usage: rt3d_runner ARTIFACT_DIR [--input FILE]... [--output-prefix PREFIX] [--repeat N] "
                   "[--warmup N] [--threads N]\n";
      return 2;
    }
    std::string dir = argv[1], prefix;
    std::vector<std::string> inputs;
    int repeat = 1, warmup = 0;
    for (int i = 2; i < argc; ++i) {
      std::string a = argv[i];
      if (i + 1 >= argc) throw std::runtime_error("option " + a + " needs a value");
      std::string v = argv[++i];
      if (a == "--input") inputs.push_back(v);
      else if (a == "--output-prefix") prefix = v;
      else if (a == "--repeat") repeat = std::max(1, std::atoi(v.c_str()));
      else if (a == "--warmup") warmup = std::max(0, std::atoi(v.c_str()));
      else if (a == "--threads") setenv("TVM_NUM_THREADS", v.c_str(), 1);  // read when the thread pool starts
      else throw std::runtime_error("unknown option " + a);
    }
    std::vector<Spec> in_specs = ReadSpecs(dir + "/io.txt", "input");
    std::vector<Spec> out_specs = ReadSpecs(dir + "/io.txt", "output");
    std::vector<Spec> param_specs = ReadSpecs(dir + "/params.txt", "param");
    if (!inputs.empty() && inputs.size() != in_specs.size())
      throw std::runtime_error("the model takes " + std::to_string(in_specs.size()) + " input(s), got " +
                               std::to_string(inputs.size()));

    std::vector<ffi::Tensor> args;
    for (size_t i = 0; i < in_specs.size(); ++i) {
      args.push_back(Make(in_specs[i]));
      if (!inputs.empty()) ReadInto(inputs[i], args.back(), Bytes(in_specs[i]));
    }
    for (const Spec& s : param_specs) {
      if (Bytes(s) != s.nbytes) throw std::runtime_error("params.txt: size mismatch");
      args.push_back(Make(s));
      ReadInto(dir + "/weights.bin", args.back(), s.nbytes, s.offset);
    }

    ffi::Module lib = ffi::Module::LoadFromFile(dir + "/model.so");
    ffi::Function load = lib->GetFunction("vm_load_executable").value();
    ffi::Module vm = load().cast<ffi::Module>();
    // (device type, id, allocator kind 2 = pooled) for the compute device and for the host
    vm->GetFunction("vm_initialization").value()(static_cast<int>(kDLCPU), 0, 2, static_cast<int>(kDLCPU), 0, 2);
    ffi::Function run = vm->GetFunction("main").value();

    std::vector<ffi::AnyView> packed(args.begin(), args.end());
    ffi::Any result;
    std::vector<double> times;
    for (int r = 0; r < warmup + repeat; ++r) {
      auto t0 = std::chrono::steady_clock::now();
      run.CallPacked(packed.data(), static_cast<int32_t>(packed.size()), &result);
      double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
      if (r >= warmup) {
        times.push_back(ms);
        std::printf("run %d: %.3f ms\n", r - warmup, ms);
      }
    }
    std::vector<ffi::Tensor> outs;
    if (auto t = result.as<ffi::Tensor>()) {
      outs.push_back(*t);
    } else {
      for (const ffi::Any& x : result.cast<ffi::Array<ffi::Any>>()) outs.push_back(x.cast<ffi::Tensor>());
    }
    if (outs.size() != out_specs.size())
      throw std::runtime_error("the model returned " + std::to_string(outs.size()) + " output(s), io.txt names " +
                               std::to_string(out_specs.size()));
    if (!prefix.empty()) {
      for (size_t i = 0; i < outs.size(); ++i) {
        std::string path = prefix + std::to_string(i) + ".bin";
        std::ofstream f(path, std::ios::binary);
        f.write(static_cast<const char*>(outs[i].data_ptr()), static_cast<std::streamsize>(Bytes(out_specs[i])));
        if (!f) throw std::runtime_error("cannot write " + path);
      }
    }
    std::sort(times.begin(), times.end());
    std::printf("median_ms=%.3f runs=%zu\n", times[times.size() / 2], times.size());
    return 0;
  } catch (const std::exception& e) {
    std::cerr << "rt3d_runner: " << e.what() << "\n";
    return 1;
  }
}
