// swift-tools-version:5.9
// PersonalizationCore: everything the iOS demo does as the SDK does (manifest validation,
// schedules and masks, encoding, data folders, the performance model, the training loop, the
// personal adapter files), Foundation only, so `swift test` runs on macOS and on Linux.
import PackageDescription

let package = Package(
    name: "PersonalizationCore",
    platforms: [.iOS(.v16), .macOS(.v13)],
    products: [
        .library(name: "PersonalizationCore", targets: ["PersonalizationCore"]),
    ],
    targets: [
        .target(name: "PersonalizationCore"),
        .testTarget(name: "PersonalizationCoreTests", dependencies: ["PersonalizationCore"]),
    ]
)
