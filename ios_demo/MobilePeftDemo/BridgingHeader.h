// Objective-C(++) classes visible to Swift. Set as the target's "Objective-C Bridging Header".
// ONNX Runtime is imported as a module in Swift (`import onnxruntime_training_objc`), not here.
#import "EtTrainer.h"
