// Objective-C(++) classes visible to Swift. Set as the target's "Objective-C Bridging Header"
// (project.yml does). ONNX Runtime is imported as a module in Swift (`import onnxruntime_training_objc`).
// EtTrainer.h needs only Foundation; its implementation (EtTrainer.mm) is compiled in the
// MobilePeftDemoET target only, which has the ExecuTorch headers and libraries.
#import "EtTrainer.h"
