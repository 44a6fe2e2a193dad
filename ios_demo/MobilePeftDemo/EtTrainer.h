// ExecuTorch training from Swift, through Objective-C++.
//
// ExecuTorch ships no Swift/Objective-C training API (its iOS frameworks wrap inference only), so this
// class owns the C++ `executorch::extension::training::TrainingModule` and
// `executorch::extension::training::optimizer::SGD` and exposes plain Foundation types to Swift.
// Header read in pytorch/executorch: extension/training/module/training_module.h,
// extension/training/optimizer/sgd.h; usage as in extension/training/examples/XOR/train.cpp.

#import <Foundation/Foundation.h>

NS_ASSUME_NONNULL_BEGIN

@interface MPETTrainer : NSObject

- (instancetype)init NS_UNAVAILABLE;

/// Loads `model.pte` with its external trainable tensors (`adapters.ptd`, or a checkpoint `.ptd`
/// written by -saveParametersToPTD:) and creates plain SGD over the joint method's parameters.
- (nullable instancetype)initWithProgramPath:(NSString*)programPath
                                    dataPath:(NSString*)dataPath
                                      method:(NSString*)method
                                learningRate:(double)learningRate
                                       error:(NSError**)error NS_DESIGNATED_INITIALIZER;

/// One forward+backward and one SGD step. Inputs in the contract's order: pixel values (float32),
/// input ids and labels (int64), then one float32 rank mask per manifest mask slot.
/// Returns the loss, or NaN with `error` set.
- (float)stepWithPixelValues:(NSData*)pixelValues
                  pixelShape:(NSArray<NSNumber*>*)pixelShape
                    inputIds:(NSData*)inputIds
                      labels:(NSData*)labels
                   textShape:(NSArray<NSNumber*>*)textShape
                       masks:(NSArray<NSData*>*)masks
                       error:(NSError**)error __attribute__((swift_error(nonnull_error)));

/// Copies of the trainable tensors (float32 bytes) by fully qualified name.
- (nullable NSDictionary<NSString*, NSData*>*)parametersWithError:(NSError**)error;

/// Writes the trainable tensors as a `.ptd` (ExecuTorch's flat tensor file) to `path`, which a later
/// run passes as `dataPath` to resume. Not atomic by itself: the caller renames a temp file.
- (BOOL)saveParametersToPTD:(NSString*)path error:(NSError**)error;

@end

NS_ASSUME_NONNULL_END
