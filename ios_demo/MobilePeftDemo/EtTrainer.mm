#import "EtTrainer.h"

#include <cmath>
#include <cstring>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <executorch/extension/data_loader/file_data_loader.h>
#include <executorch/extension/flat_tensor/serialize/serialize.h>
#include <executorch/extension/tensor/tensor.h>
#include <executorch/extension/training/module/training_module.h>
#include <executorch/extension/training/optimizer/sgd.h>

using executorch::aten::ScalarType;
using executorch::aten::SizesType;
using executorch::aten::Tensor;
using executorch::extension::FileDataLoader;
using executorch::extension::make_tensor_ptr;
using executorch::extension::TensorPtr;
using executorch::extension::training::TrainingModule;
using executorch::extension::training::optimizer::SGD;
using executorch::extension::training::optimizer::SGDOptions;
using executorch::runtime::Error;
using executorch::runtime::EValue;

static NSString* const kErrorDomain = @"org.mobilepeft.demo.executorch";

static BOOL Fail(NSError** error, NSString* message, Error code = Error::Internal) {
  if (error) {
    *error = [NSError errorWithDomain:kErrorDomain
                                 code:static_cast<NSInteger>(code)
                             userInfo:@{NSLocalizedDescriptionKey : message}];
  }
  return NO;
}

static std::vector<SizesType> Sizes(NSArray<NSNumber*>* shape) {
  std::vector<SizesType> out;
  for (NSNumber* n in shape) out.push_back(static_cast<SizesType>(n.longLongValue));
  return out;
}

template <typename Map>
static NSDictionary<NSString*, NSData*>* Copies(const Map& tensors) {
  NSMutableDictionary<NSString*, NSData*>* out = [NSMutableDictionary dictionary];
  for (const auto& [name, tensor] : tensors) {
    NSString* key = [[NSString alloc] initWithBytes:name.data() length:name.size() encoding:NSUTF8StringEncoding];
    out[key] = [NSData dataWithBytes:tensor.const_data_ptr() length:tensor.nbytes()];
  }
  return out;
}

@implementation MPETTrainer {
  std::unique_ptr<TrainingModule> _module;
  std::unique_ptr<SGD> _sgd;
  std::string _method;
  double _learningRate;
  double _momentum;
  double _weightDecay;
}

- (nullable instancetype)initWithProgramPath:(NSString*)programPath
                                    dataPath:(NSString*)dataPath
                                      method:(NSString*)method
                                learningRate:(double)learningRate
                                    momentum:(double)momentum
                                 weightDecay:(double)weightDecay
                                       error:(NSError**)error {
  if ((self = [super init]) == nil) return nil;
  _method = method.UTF8String;
  _learningRate = learningRate;
  _momentum = momentum;
  _weightDecay = weightDecay;
  auto program = FileDataLoader::from(programPath.fileSystemRepresentation);
  if (program.error() != Error::Ok) {
    Fail(error, [NSString stringWithFormat:@"cannot open %@", programPath], program.error());
    return nil;
  }
  auto data = FileDataLoader::from(dataPath.fileSystemRepresentation);
  if (data.error() != Error::Ok) {
    Fail(error, [NSString stringWithFormat:@"cannot open %@", dataPath], data.error());
    return nil;
  }
  // Constructor order (training_module.h): program loader, memory allocator, temp allocator,
  // event tracer, data-map loader (the .ptd holding the trainable tensors).
  _module = std::make_unique<TrainingModule>(
      std::make_unique<FileDataLoader>(std::move(program.get())), nullptr, nullptr, nullptr,
      std::make_unique<FileDataLoader>(std::move(data.get())));
  return self;
}

static std::vector<TensorPtr> Inputs(NSData* pixelValues, NSArray<NSNumber*>* pixelShape, NSData* inputIds, NSData* labels,
                                     NSArray<NSNumber*>* textShape, NSArray<NSData*>* masks) {
  // make_tensor_ptr over caller memory does not copy; the NSData objects outlive the call that uses them.
  std::vector<TensorPtr> tensors;
  tensors.push_back(make_tensor_ptr(Sizes(pixelShape), const_cast<void*>(pixelValues.bytes), ScalarType::Float));
  tensors.push_back(make_tensor_ptr(Sizes(textShape), const_cast<void*>(inputIds.bytes), ScalarType::Long));
  tensors.push_back(make_tensor_ptr(Sizes(textShape), const_cast<void*>(labels.bytes), ScalarType::Long));
  for (NSData* mask in masks) {
    SizesType rMax = static_cast<SizesType>(mask.length / sizeof(float));
    tensors.push_back(make_tensor_ptr({rMax}, const_cast<void*>(mask.bytes), ScalarType::Float));
  }
  return tensors;
}

- (nullable NSArray<NSData*>*)runMethod:(NSString*)method
                            pixelValues:(NSData*)pixelValues
                             pixelShape:(NSArray<NSNumber*>*)pixelShape
                               inputIds:(NSData*)inputIds
                                 labels:(NSData*)labels
                              textShape:(NSArray<NSNumber*>*)textShape
                                  masks:(NSArray<NSData*>*)masks
                                  error:(NSError**)error {
  auto tensors = Inputs(pixelValues, pixelShape, inputIds, labels, textShape, masks);
  std::vector<EValue> inputs;
  for (auto& t : tensors) inputs.emplace_back(*t);
  auto outputs = _module->execute(method.UTF8String, inputs);
  if (outputs.error() != Error::Ok) {
    Fail(error, [NSString stringWithFormat:@"method '%@' failed", method], outputs.error());
    return nil;
  }
  NSMutableArray<NSData*>* out = [NSMutableArray array];
  for (const auto& v : outputs.get()) {
    const auto& t = v.toTensor();
    [out addObject:[NSData dataWithBytes:t.const_data_ptr() length:t.nbytes()]];
  }
  return out;
}

- (float)forwardBackwardWithPixelValues:(NSData*)pixelValues
                             pixelShape:(NSArray<NSNumber*>*)pixelShape
                               inputIds:(NSData*)inputIds
                                 labels:(NSData*)labels
                              textShape:(NSArray<NSNumber*>*)textShape
                                  masks:(NSArray<NSData*>*)masks
                                  error:(NSError**)error {
  auto tensors = Inputs(pixelValues, pixelShape, inputIds, labels, textShape, masks);
  std::vector<EValue> inputs;
  for (auto& t : tensors) inputs.emplace_back(*t);
  auto outputs = _module->execute_forward_backward(_method, inputs);
  if (outputs.error() != Error::Ok) {
    Fail(error, @"execute_forward_backward failed (input count, shapes or dtypes differ from the manifest?)", outputs.error());
    return NAN;
  }
  if (!_sgd) {  // named_parameters is valid only after a first forward_backward
    auto params = _module->named_parameters(_method);
    if (params.error() != Error::Ok) {
      Fail(error, @"named_parameters failed: is the method a joint training graph?", params.error());
      return NAN;
    }
    _sgd = std::make_unique<SGD>(params.get(), SGDOptions(_learningRate, _momentum, 0, _weightDecay, false));
  }
  return outputs.get()[0].toTensor().const_data_ptr<float>()[0];  // the loss is output 0
}

- (BOOL)applyStepWithError:(NSError**)error {
  auto gradients = _module->named_gradients(_method);
  if (gradients.error() != Error::Ok) return Fail(error, @"named_gradients failed (no forward_backward yet?)", gradients.error());
  Error stepped = _sgd->step(gradients.get());
  if (stepped != Error::Ok) return Fail(error, @"SGD step failed", stepped);
  return YES;
}

- (nullable NSDictionary<NSString*, NSData*>*)parametersWithError:(NSError**)error {
  auto params = _module->named_parameters(_method);
  if (params.error() != Error::Ok) {
    Fail(error, @"named_parameters failed", params.error());
    return nil;
  }
  return Copies(params.get());
}

- (nullable NSDictionary<NSString*, NSData*>*)gradientsWithError:(NSError**)error {
  auto gradients = _module->named_gradients(_method);
  if (gradients.error() != Error::Ok) {
    Fail(error, @"named_gradients failed", gradients.error());
    return nil;
  }
  return Copies(gradients.get());
}

- (BOOL)setParameters:(NSDictionary<NSString*, NSData*>*)values error:(NSError**)error {
  auto params = _module->named_parameters(_method);
  if (params.error() != Error::Ok) return Fail(error, @"named_parameters failed", params.error());
  for (const auto& [name, tensor] : params.get()) {
    NSString* key = [[NSString alloc] initWithBytes:name.data() length:name.size() encoding:NSUTF8StringEncoding];
    NSData* value = values[key];
    if (value == nil) continue;
    if (value.length != tensor.nbytes()) {
      return Fail(error, [NSString stringWithFormat:@"%@ has %zu bytes; %lu given", key, tensor.nbytes(), (unsigned long)value.length]);
    }
    // The parameters are the runtime's own memory (mutable data of the .ptd), as SGD writes them.
    std::memcpy(const_cast<void*>(tensor.const_data_ptr()), value.bytes, value.length);
  }
  return YES;
}

- (BOOL)saveParametersToPTD:(NSString*)path error:(NSError**)error {
  auto params = _module->named_parameters(_method);
  if (params.error() != Error::Ok) return Fail(error, @"named_parameters failed", params.error());
  std::map<std::string, Tensor> byName;
  for (const auto& [name, tensor] : params.get()) byName.emplace(std::string(name), tensor);
  // Same call as extension/training/examples/XOR/train.cpp (alignment 16).
  Error saved = executorch::extension::flat_tensor::save_ptd(path.fileSystemRepresentation, byName, 16);
  if (saved != Error::Ok) return Fail(error, [NSString stringWithFormat:@"save_ptd to %@ failed", path], saved);
  return YES;
}

@end
