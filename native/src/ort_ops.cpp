// libedgevit_ort: edgevit's attention kernels as ONNX Runtime custom ops in the ai.edgevit
// domain (XCA, SLA, RLMHSA), for any ONNX Runtime process:
//   Python: SessionOptions.register_custom_ops_library("libedgevit_ort.so")
//   C++:    Ort::SessionOptions::RegisterCustomOpsLibrary(ORT_TSTR("libedgevit_ort.so"))
// Written against ONNX Runtime's C API headers only: it links nothing of ONNX Runtime and
// takes the API from the OrtApiBase that RegisterCustomOps receives, asking for version 17
// (ONNX Runtime 1.17 and newer). Every input is checked before a kernel reads it; a bad
// input fails the run with an ORT_INVALID_ARGUMENT status naming the node's op.
#include <onnxruntime_c_api.h>

#include <atomic>
#include <climits>
#include <cstring>
#include <exception>
#include <mutex>
#include <new>
#include <stdexcept>
#include <string>
#include <vector>

#include "attention.hpp"

static_assert(ORT_API_VERSION >= 17, "libedgevit_ort needs ONNX Runtime headers of version 1.17 or newer");

namespace {

using edgevit::Attention;
using edgevit::AttentionShape;

constexpr uint32_t kApiVersion = 17;  // KernelContext_ParallelFor, CreateKernelV2, KernelComputeV2
constexpr const char* kDomain = "ai.edgevit";
constexpr int64_t kMaxHeads = 1 << 16;
// ONNX Runtime's intra-op threads spin between ops: a batch of work is worth handing to one
// from this much work on (measured in benchmarks/native_attention.py --part nodes).
constexpr double kMinFlopsPerBatch = 1e6;

// A bad input: becomes an ORT_INVALID_ARGUMENT status.
struct BadInput : std::runtime_error {
    using std::runtime_error::runtime_error;
};

struct Tensor {
    const float* data;
    std::vector<int64_t> dims;
    int64_t elements() const {
        int64_t n = 1;
        for (int64_t d : dims) n *= d;
        return n;
    }
};

std::string shape_text(const std::vector<int64_t>& dims) {
    std::string text = "(";
    for (size_t i = 0; i < dims.size(); ++i) text += (i ? ", " : "") + std::to_string(dims[i]);
    return text + (dims.size() == 1 ? ",)" : ")");
}

// Converts an OrtStatus from the API into an exception (and releases it).
void check(const OrtApi* api, OrtStatus* status) {
    if (status == nullptr) return;
    std::string message = api->GetErrorMessage(status);
    api->ReleaseStatus(status);
    throw std::runtime_error(message);
}

Tensor input(const OrtApi* api, OrtKernelContext* context, size_t index, const char* op, const char* name) {
    const OrtValue* value = nullptr;
    check(api, api->KernelContext_GetInput(context, index, &value));
    if (value == nullptr) throw BadInput(std::string(op) + ": input " + name + " is missing");
    int is_tensor = 0;
    check(api, api->IsTensor(value, &is_tensor));
    if (!is_tensor) throw BadInput(std::string(op) + ": input " + name + " is not a tensor");
    OrtTensorTypeAndShapeInfo* info = nullptr;
    check(api, api->GetTensorTypeAndShape(value, &info));
    ONNXTensorElementDataType type = ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED;
    size_t rank = 0;
    OrtStatus* status = api->GetTensorElementType(info, &type);
    if (status == nullptr) status = api->GetDimensionsCount(info, &rank);
    Tensor tensor{nullptr, std::vector<int64_t>(rank)};
    if (status == nullptr && rank > 0) status = api->GetDimensions(info, tensor.dims.data(), rank);
    api->ReleaseTensorTypeAndShapeInfo(info);
    check(api, status);
    if (type != ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT)
        throw BadInput(std::string(op) + ": input " + name + " must be float32");
    for (int64_t d : tensor.dims)
        if (d < 0) throw BadInput(std::string(op) + ": input " + name + " has a negative dimension");
    void* data = nullptr;
    check(api, api->GetTensorMutableData(const_cast<OrtValue*>(value), &data));
    tensor.data = static_cast<const float*>(data);
    return tensor;
}

// dims[from:] multiplied, or BadInput when the product overflows.
int64_t product_of(const std::vector<int64_t>& dims, size_t from, const char* op) {
    int64_t n = 1;
    for (size_t i = from; i < dims.size(); ++i) {
        if (__builtin_mul_overflow(n, dims[i], &n))
            throw BadInput(std::string(op) + ": a dimension of " + shape_text(dims) + " is too large");
    }
    return n;
}

// XCA / SLA: qkv (B, N, 3C) with C divisible by heads, and a table of `table_elements` floats.
AttentionShape tokens_shape(const Tensor& qkv, const Tensor& table, int64_t heads, Attention op) {
    const char* name = op == Attention::xca ? "XCA" : "SLA";
    if (qkv.dims.size() != 3)
        throw BadInput(std::string(name) + ": qkv must have rank 3 (batch, tokens, 3 x channels), got " +
                       shape_text(qkv.dims));
    product_of(qkv.dims, 0, name);
    const int64_t batch = qkv.dims[0], tokens = qkv.dims[1], width = qkv.dims[2];
    if (batch == 0 || tokens == 0 || width == 0) throw BadInput(std::string(name) + ": qkv must not be empty");
    if (width % (3 * heads) != 0)
        throw BadInput(std::string(name) + ": qkv's last dimension " + std::to_string(width) +
                       " is not 3 x heads x head_dim for heads=" + std::to_string(heads));
    const int64_t channels = width / 3;
    product_of(table.dims, 0, name);
    if (op == Attention::xca && table.elements() != heads)
        throw BadInput("XCA: temperature must hold one value per head (" + std::to_string(heads) + "), got " +
                       shape_text(table.dims));
    if (op == Attention::sla && table.elements() != tokens * channels)
        throw BadInput("SLA: positional must have tokens x channels = " + std::to_string(tokens) + " x " +
                       std::to_string(channels) + " values, got " + shape_text(table.dims));
    return AttentionShape{batch, tokens, heads, channels / heads};
}

// RLMHSA: q (B, C, ...) and kv (B, 2C, ...) channels first, C divisible by heads.
AttentionShape pooled_shape(const Tensor& q, const Tensor& kv, int64_t heads) {
    if (q.dims.size() < 3 || q.dims.size() > 4 || kv.dims.size() < 3 || kv.dims.size() > 4)
        throw BadInput("RLMHSA: q and kv must have rank 3 or 4 (batch, channels, tokens...), got " +
                       shape_text(q.dims) + " and " + shape_text(kv.dims));
    product_of(q.dims, 0, "RLMHSA");
    product_of(kv.dims, 0, "RLMHSA");
    const int64_t batch = q.dims[0], channels = q.dims[1];
    const int64_t tokens = product_of(q.dims, 2, "RLMHSA"), keys = product_of(kv.dims, 2, "RLMHSA");
    if (batch == 0 || channels == 0 || tokens == 0 || keys == 0)
        throw BadInput("RLMHSA: q and kv must not be empty, got " + shape_text(q.dims) + " and " +
                       shape_text(kv.dims));
    if (channels % heads != 0)
        throw BadInput("RLMHSA: q's " + std::to_string(channels) + " channels are not heads x head_dim for heads=" +
                       std::to_string(heads));
    if (kv.dims[0] != batch || kv.dims[1] != 2 * channels)
        throw BadInput("RLMHSA: kv must have batch " + std::to_string(batch) + " and " +
                       std::to_string(2 * channels) + " channels, got " + shape_text(kv.dims));
    return AttentionShape{batch, tokens, heads, channels / heads, keys};
}

struct Kernel {
    Attention op;
    int64_t heads;
};

struct Op : OrtCustomOp {
    Attention attention;
    const char* name;
};

struct Call {
    const edgevit::AttentionJob* job;
    const float *a, *b;
    float* out;
    const AttentionShape* shape;
    std::atomic<bool> failed{false};
};

// One task on an ONNX Runtime pool thread: no exception may cross back into ONNX Runtime.
void run_task(void* data, size_t task) {
    Call* call = static_cast<Call*>(data);
    try {
        call->job->task(call->a, call->b, call->out, *call->shape, static_cast<int64_t>(task));
    } catch (...) {
        call->failed.store(true);
    }
}

OrtStatus* status_of(const OrtApi* api, OrtErrorCode code, const std::string& message) {
    return api->CreateStatus(code, message.c_str());
}

const OrtApi* g_api = nullptr;

void compute(const Kernel& kernel, OrtKernelContext* context) {
    const OrtApi* api = g_api;
    const char* op = kernel.op == Attention::xca ? "XCA" : kernel.op == Attention::sla ? "SLA" : "RLMHSA";
    size_t inputs = 0;
    check(api, api->KernelContext_GetInputCount(context, &inputs));
    if (inputs != 2) throw BadInput(std::string(op) + ": expects 2 inputs, got " + std::to_string(inputs));
    const Tensor first = input(api, context, 0, op, kernel.op == Attention::rlmhsa ? "q" : "qkv");
    const Tensor second = input(api, context, 1, op, kernel.op == Attention::xca ? "temperature"
                                                     : kernel.op == Attention::sla ? "positional" : "kv");
    const AttentionShape shape = kernel.op == Attention::rlmhsa ? pooled_shape(first, second, kernel.heads)
                                                                : tokens_shape(first, second, kernel.heads, kernel.op);
    const std::string error = edgevit::shape_error(kernel.op, shape);
    if (!error.empty()) throw BadInput(error);
    std::vector<int64_t> out_dims = first.dims;
    if (kernel.op != Attention::rlmhsa) out_dims[2] = shape.channels();
    OrtValue* output = nullptr;
    check(api, api->KernelContext_GetOutput(context, 0, out_dims.data(), out_dims.size(), &output));
    void* out = nullptr;
    check(api, api->GetTensorMutableData(output, &out));

    const edgevit::AttentionJob job = edgevit::plan(kernel.op, shape);
    Call call;
    call.job = &job;
    call.a = first.data;
    call.b = second.data;
    call.out = static_cast<float*>(out);
    call.shape = &shape;
    const size_t batches = static_cast<size_t>(job.threads_for(kMinFlopsPerBatch));
    if (batches <= 1) {
        for (int64_t t = 0; t < job.tasks; ++t) run_task(&call, static_cast<size_t>(t));
    } else {
        check(api, api->KernelContext_ParallelFor(context, run_task, static_cast<size_t>(job.tasks), batches, &call));
    }
    if (call.failed.load()) throw std::bad_alloc();
}

OrtStatus* ORT_API_CALL create_kernel(const OrtCustomOp* base, const OrtApi* api, const OrtKernelInfo* info,
                                      void** kernel) {
    const Op* op = static_cast<const Op*>(base);
    int64_t heads = 0;
    if (OrtStatus* status = api->KernelInfoGetAttribute_int64(info, "heads", &heads)) {
        api->ReleaseStatus(status);
        return status_of(api, ORT_INVALID_ARGUMENT, std::string(op->name) + ": the integer attribute heads is missing");
    }
    if (heads <= 0 || heads > kMaxHeads)
        return status_of(api, ORT_INVALID_ARGUMENT,
                         std::string(op->name) + ": heads must be between 1 and " + std::to_string(kMaxHeads) +
                             ", got " + std::to_string(heads));
    try {
        *kernel = new Kernel{op->attention, heads};
    } catch (const std::bad_alloc&) {
        return status_of(api, ORT_FAIL, std::string(op->name) + ": out of memory");
    }
    return nullptr;
}

OrtStatus* ORT_API_CALL compute_kernel(void* kernel, OrtKernelContext* context) {
    const Kernel& k = *static_cast<Kernel*>(kernel);
    try {
        compute(k, context);
        return nullptr;
    } catch (const BadInput& exc) {
        return status_of(g_api, ORT_INVALID_ARGUMENT, exc.what());
    } catch (const std::bad_alloc&) {
        return status_of(g_api, ORT_FAIL, "edgevit attention: out of memory");
    } catch (const std::exception& exc) {
        return status_of(g_api, ORT_FAIL, std::string("edgevit attention: ") + exc.what());
    } catch (...) {
        return status_of(g_api, ORT_FAIL, "edgevit attention: unknown error");
    }
}

void ORT_API_CALL destroy_kernel(void* kernel) { delete static_cast<Kernel*>(kernel); }

const char* ORT_API_CALL op_name(const OrtCustomOp* op) { return static_cast<const Op*>(op)->name; }
const char* ORT_API_CALL cpu_provider(const OrtCustomOp*) { return nullptr; }
ONNXTensorElementDataType ORT_API_CALL float_type(const OrtCustomOp*, size_t) {
    return ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT;
}
size_t ORT_API_CALL two(const OrtCustomOp*) { return 2; }
size_t ORT_API_CALL one(const OrtCustomOp*) { return 1; }
OrtCustomOpInputOutputCharacteristic ORT_API_CALL required(const OrtCustomOp*, size_t) {
    return INPUT_OUTPUT_REQUIRED;
}
OrtMemType ORT_API_CALL default_memory(const OrtCustomOp*, size_t) { return OrtMemTypeDefault; }
int ORT_API_CALL arity_one(const OrtCustomOp*) { return 1; }
int ORT_API_CALL homogeneous(const OrtCustomOp*) { return 1; }
int ORT_API_CALL first_version(const OrtCustomOp*) { return 1; }
int ORT_API_CALL last_version(const OrtCustomOp*) { return INT_MAX; }

Op make_op(Attention attention, const char* name) {
    Op op;
    std::memset(static_cast<OrtCustomOp*>(&op), 0, sizeof(OrtCustomOp));
    op.version = kApiVersion;  // ONNX Runtime reads only the fields of that version
    op.attention = attention;
    op.name = name;
    op.GetName = op_name;
    op.GetExecutionProviderType = cpu_provider;
    op.GetInputType = float_type;
    op.GetInputTypeCount = two;
    op.GetOutputType = float_type;
    op.GetOutputTypeCount = one;
    op.KernelDestroy = destroy_kernel;
    op.GetInputCharacteristic = required;
    op.GetOutputCharacteristic = required;
    op.GetInputMemoryType = default_memory;
    op.GetVariadicInputMinArity = arity_one;
    op.GetVariadicInputHomogeneity = homogeneous;
    op.GetVariadicOutputMinArity = arity_one;
    op.GetVariadicOutputHomogeneity = homogeneous;
    op.CreateKernelV2 = create_kernel;
    op.KernelComputeV2 = compute_kernel;
    op.GetStartVersion = first_version;
    op.GetEndVersion = last_version;
    return op;
}

Op g_ops[] = {make_op(Attention::xca, "XCA"), make_op(Attention::sla, "SLA"), make_op(Attention::rlmhsa, "RLMHSA")};

// One domain for every session of the process: ONNX Runtime needs it alive as long as any
// session that uses it, so it is created once and never released.
OrtCustomOpDomain* g_domain = nullptr;
std::mutex g_domain_mutex;

}  // namespace

extern "C" __attribute__((visibility("default"))) OrtStatus* ORT_API_CALL
RegisterCustomOps(OrtSessionOptions* options, const OrtApiBase* api_base) {
    const OrtApi* api = api_base->GetApi(kApiVersion);
    if (api == nullptr) {  // an ONNX Runtime older than 1.17: version 1 of the API still makes a status
        const OrtApi* oldest = api_base->GetApi(1);
        const std::string message = std::string("libedgevit_ort needs ONNX Runtime 1.17 or newer, this is ") +
                                    api_base->GetVersionString();
        return oldest == nullptr ? nullptr : oldest->CreateStatus(ORT_FAIL, message.c_str());
    }
    std::lock_guard<std::mutex> lock(g_domain_mutex);
    g_api = api;
    if (g_domain == nullptr) {
        OrtCustomOpDomain* domain = nullptr;
        if (OrtStatus* status = api->CreateCustomOpDomain(kDomain, &domain)) return status;
        for (Op& op : g_ops) {
            if (OrtStatus* status = api->CustomOpDomain_Add(domain, &op)) {
                api->ReleaseCustomOpDomain(domain);
                return status;
            }
        }
        g_domain = domain;
    }
    return api->AddCustomOpDomain(options, g_domain);
}
