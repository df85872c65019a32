#include "training/state_dict_io.h"

#include <torch/csrc/jit/serialization/export.h>
#include <torch/csrc/jit/serialization/pickler.h>
#include <torch/serialize.h>
#include <torch/torch.h>

#include <caffe2/serialize/inline_container.h>

#include <cstring>

#include "absl/strings/str_cat.h"
#include "storage/atomic_write.h"

namespace cohort::training {

absl::Status WriteStateDict(const core::ParameterSet& parameters, const std::string& path) {
  // The tensors view the set's bytes and the archive streams into the file as it is made:
  // writing a model costs no copy of it (a copy and a whole archive in memory were three
  // model sizes on top of the server's two at the end of a job).
  c10::Dict<std::string, at::Tensor> dict;
  std::vector<char> pickle;  // the archive's data.pkl: names and shapes, no tensor bytes
  try {
    const core::Manifest& manifest = parameters.manifest();
    for (size_t i = 0; i < manifest.size(); ++i) {
      const core::TensorSpec& spec = manifest.tensors()[i];
      if (spec.dtype != core::DType::kFloat32) {
        return absl::UnimplementedError(absl::StrCat("state_dict export supports float32 tensors; ", spec.name,
                                                     " is ", std::string(core::DTypeName(spec.dtype))));
      }
      // from_blob wants a mutable pointer; the writer only reads through it.
      auto* data = const_cast<std::byte*>(parameters.tensor_bytes(i).data());
      dict.insert(spec.name, torch::from_blob(data, spec.shape, torch::kFloat32));
    }
  } catch (const c10::Error& e) {
    return absl::InternalError(absl::StrCat("writing ", path, ": ", e.what_without_backtrace()));
  }
  return storage::WriteFileAtomically(path, [&](const storage::ByteSink& sink) -> absl::Status {
    absl::Status sunk;
    try {
      // Untagged pickle: Python's weights_only loader refuses TorchScript type tags.
      torch::jit::Pickler pickler([&](const char* data, size_t size) { pickle.insert(pickle.end(), data, data + size); },
                                  nullptr, nullptr, nullptr, nullptr, /*tag_aggregates=*/false);
      pickler.protocol();
      pickler.pushIValue(dict);
      pickler.stop();
      caffe2::serialize::PyTorchStreamWriter writer([&](const void* data, size_t size) -> size_t {
        if (sunk.ok()) sunk = sink(std::span(static_cast<const std::byte*>(data), size));
        return sunk.ok() ? size : 0;  // a short write makes the writer throw
      });
      torch::jit::writeArchiveAndTensors("data", pickle.data(), pickle.size(), pickler.tensorData(), writer);
      writer.writeEndOfFile();
    } catch (const c10::Error& e) {
      if (!sunk.ok()) return sunk;
      return absl::InternalError(absl::StrCat("writing ", path, ": ", e.what_without_backtrace()));
    }
    return sunk;
  });
}

absl::StatusOr<core::ParameterSet> ReadStateDict(const std::string& path) {
  absl::StatusOr<std::string> contents = storage::ReadFile(path);
  if (!contents.ok()) return contents.status();
  return ParseStateDict(*contents, path);
}

absl::StatusOr<core::ParameterSet> ParseStateDict(const std::string& contents, const std::string& path) {
  try {
    const torch::IValue value = torch::pickle_load(std::vector<char>(contents.begin(), contents.end()));
    if (!value.isGenericDict()) {
      return absl::InvalidArgumentError(absl::StrCat(path, ": expected a dict of tensors (save dict(state_dict))"));
    }
    std::vector<core::TensorSpec> specs;
    std::vector<torch::Tensor> tensors;
    for (const auto& entry : value.toGenericDict()) {
      if (!entry.key().isString() || !entry.value().isTensor()) {
        return absl::InvalidArgumentError(absl::StrCat(path, ": every entry must map a name to a tensor"));
      }
      torch::Tensor t = entry.value().toTensor().to(torch::kFloat32).contiguous();
      specs.push_back({entry.key().toStringRef(), core::DType::kFloat32, t.sizes().vec()});
      tensors.push_back(t);
    }
    core::ParameterSet out{core::Manifest(std::move(specs))};
    for (size_t i = 0; i < tensors.size(); ++i) {
      const auto bytes = out.tensor_bytes(i);
      std::memcpy(bytes.data(), tensors[i].data_ptr<float>(), bytes.size());
    }
    return out;
  } catch (const c10::Error& e) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": not a readable state_dict: ", e.what_without_backtrace()));
  }
}

absl::StatusOr<core::ParameterSet> ArrangeStateDict(const core::ParameterSet& loaded, const core::Manifest& layout,
                                                    const std::string& origin, const std::string& fix) {
  if (loaded.manifest().size() != layout.size()) {
    return absl::InvalidArgumentError(absl::StrCat(origin, ": holds ", loaded.manifest().size(), " tensors, the model has ",
                                                   layout.size(), "; ", fix));
  }
  core::ParameterSet out(layout);
  for (size_t i = 0; i < layout.size(); ++i) {
    const core::TensorSpec& want = layout.tensors()[i];
    const int found = loaded.Find(want.name);
    if (found < 0) {
      return absl::InvalidArgumentError(absl::StrCat(origin, ": no tensor ", want.name, " ", want.ShapeString(), "; ", fix));
    }
    const core::TensorSpec& have = loaded.manifest().tensors()[static_cast<size_t>(found)];
    if (have.shape != want.shape) {
      return absl::InvalidArgumentError(absl::StrCat(origin, ": ", want.name, " is ", have.ShapeString(),
                                                     ", the model needs ", want.ShapeString(), "; ", fix));
    }
    const auto from = loaded.tensor_bytes(static_cast<size_t>(found));
    std::memcpy(out.tensor_bytes(i).data(), from.data(), from.size());
  }
  if (absl::Status s = core::CheckFinite(core::DType::kFloat32, out.bytes()); !s.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(origin, ": ", s.message()));
  }
  return out;
}

}  // namespace cohort::training
