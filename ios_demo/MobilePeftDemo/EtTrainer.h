// ExecuTorch training from Swift, through Objective-C++ (optional: `pte` bundles only).
//
// ExecuTorch ships no Swift/Objective-C training API (its iOS frameworks wrap inference only), so this
// class owns the C++ `executorch::extension::training::TrainingModule` and
// `executorch::extension::training::optimizer::SGD` and exposes Foundation types to Swift; the Swift
// `EtTrainer` puts it behind PersonalizationCore's `Trainer`.
// Read in pytorch/executorch (tag v1.4.1 and main): extension/training/module/training_module.h
// (5th constructor argument: the data-map loader of the `.ptd`), extension/training/optimizer/sgd.h
// (`SGDOptions(lr, momentum, dampening, weight_decay, nesterov)`, `SGD(named_parameters, options)`,
// `step(named_gradients)`), extension/flat_tensor/serialize/serialize.h (`save_ptd(path, map, alignment)`).

#import <Foundation/Foundation.h>

NS_ASSUME_NONNULL_BEGIN

@interface MPETTrainer : NSObject

- (instancetype)init NS_UNAVAILABLE;

/// Loads `model.pte` with its external trainable tensors (`adapters.ptd`, or a checkpoint `.ptd`
/// written by -saveParametersToPTD:) and creates SGD over the joint method's parameters.
- (nullable instancetype)initWithProgramPath:(NSString*)programPath
                                    dataPath:(NSString*)dataPath
                                      method:(NSString*)method
                                learningRate:(double)learningRate
                                    momentum:(double)momentum
                                 weightDecay:(double)weightDecay
                                       error:(NSError**)error NS_DESIGNATED_INITIALIZER;

/// One forward+backward, no update. Inputs in the contract's order: pixel values (float32),
/// input ids and labels (int64), then one float32 rank mask per manifest mask input.
/// Returns the loss (output 0), or NaN with `error` set.
- (float)forwardBackwardWithPixelValues:(NSData*)pixelValues
                             pixelShape:(NSArray<NSNumber*>*)pixelShape
                               inputIds:(NSData*)inputIds
                                 labels:(NSData*)labels
                              textShape:(NSArray<NSNumber*>*)textShape
                                  masks:(NSArray<NSData*>*)masks
                                  error:(NSError**)error __attribute__((swift_error(nonnull_error)));

/// Runs a plain (non-training) method such as the bundle's eval method on the same inputs; every
/// output as float32 bytes (the eval method's outputs are the loss and the logits).
- (nullable NSArray<NSData*>*)runMethod:(NSString*)method
                            pixelValues:(NSData*)pixelValues
                             pixelShape:(NSArray<NSNumber*>*)pixelShape
                               inputIds:(NSData*)inputIds
                                 labels:(NSData*)labels
                              textShape:(NSArray<NSNumber*>*)textShape
                                  masks:(NSArray<NSData*>*)masks
                                  error:(NSError**)error;

/// The SGD step with the gradients of the last forward+backward.
- (BOOL)applyStepWithError:(NSError**)error;

/// Copies of the trainable tensors (float32 bytes) by fully qualified name.
- (nullable NSDictionary<NSString*, NSData*>*)parametersWithError:(NSError**)error;

/// Copies of the gradients of the last forward+backward by fully qualified name.
- (nullable NSDictionary<NSString*, NSData*>*)gradientsWithError:(NSError**)error;

/// Overwrites the named trainable tensors in place (the runtime's own memory); sizes must match.
- (BOOL)setParameters:(NSDictionary<NSString*, NSData*>*)values error:(NSError**)error;

/// Writes the trainable tensors as a `.ptd` (ExecuTorch's flat tensor file) to `path`, which a later
/// run passes as `dataPath` to resume.
- (BOOL)saveParametersToPTD:(NSString*)path error:(NSError**)error;

@end

NS_ASSUME_NONNULL_END
