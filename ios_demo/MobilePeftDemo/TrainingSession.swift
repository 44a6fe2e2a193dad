import BackgroundTasks
import Foundation
import PersonalizationCore
import UIKit

/// The app's one training run, driving PersonalizationCore's `TrainingLoop`: everything that is
/// logic (validation, encoding, the data split, batches, masks, checkpoints, resume, eval,
/// re-allocation, the PEFT files) is the core's; this class picks the engine, decodes images,
/// keeps the UI informed and asks iOS for background time.
@MainActor
final class TrainingSession: ObservableObject {
    static let backgroundTaskId = "org.mobilepeft.demo.train" // Info.plist BGTaskSchedulerPermittedIdentifiers
    static let sampleBundle = "SampleBundle" // a bundle directory added to the app's resources (README)

    @Published var bundles: [URL] = []
    @Published var selected: URL?
    @Published var steps = 30
    @Published var onDeviceRealloc = false
    @Published private(set) var running = false
    @Published private(set) var step = 0
    @Published private(set) var losses: [Float] = []
    @Published private(set) var stepMillis: Double = 0
    @Published private(set) var memory = ""
    @Published private(set) var accuracyBefore: Evaluate.Report?
    @Published private(set) var accuracyAfter: Evaluate.Report?
    @Published private(set) var adapterFiles: [URL] = []
    @Published private(set) var log: [String] = []

    private let cancelFlag = CancelFlag()
    private var backgroundTask: UIBackgroundTaskIdentifier = .invalid

    let documents = FileManager.default.urls(for: .documentDirectory, in: .userDomainMask)[0]
    var dataFolder: URL { documents.appendingPathComponent("data") }
    private var library: URL { FileManager.default.urls(for: .libraryDirectory, in: .userDomainMask)[0] }

    /// Bundles under Documents/bundles (Finder / Files), plus the sample shipped in the app.
    func refresh() {
        let root = documents.appendingPathComponent("bundles")
        let names = (try? FileManager.default.contentsOfDirectory(atPath: root.path)) ?? []
        var found = names.sorted().map { root.appendingPathComponent($0) }
            .filter { FileManager.default.fileExists(atPath: $0.appendingPathComponent(Contract.manifestFile).path) }
        if let sample = Bundle.main.url(forResource: TrainingSession.sampleBundle, withExtension: nil) { found.insert(sample, at: 0) }
        bundles = found
        if selected == nil { selected = found.first }
    }

    /// A bundle folder picked in Files: copied into Documents/bundles (security-scoped access ends with the picker).
    func importBundle(_ picked: URL) {
        let scoped = picked.startAccessingSecurityScopedResource()
        defer { if scoped { picked.stopAccessingSecurityScopedResource() } }
        let target = documents.appendingPathComponent("bundles").appendingPathComponent(picked.lastPathComponent)
        do {
            try FileManager.default.createDirectory(at: target.deletingLastPathComponent(), withIntermediateDirectories: true)
            try? FileManager.default.removeItem(at: target)
            try FileManager.default.copyItem(at: picked, to: target)
            refresh()
            selected = target
        } catch { say("import failed: \(errorMessage(error))") }
    }

    /// A photo with its question and answer, appended to the data folder in the SDK's format.
    func addExample(imageData: Data, question: String, answer: String) {
        do {
            let images = dataFolder.appendingPathComponent(FolderDataset.imagesDir)
            try FileManager.default.createDirectory(at: images, withIntermediateDirectories: true)
            let name = "photo-\(UUID().uuidString.prefix(8)).jpg"
            try imageData.write(to: images.appendingPathComponent(name))
            let line: JSON = [FolderDataset.image: .string(name), FolderDataset.question: .string(question), FolderDataset.answer: .string(answer)]
            let file = dataFolder.appendingPathComponent(FolderDataset.annotationsFile)
            if !FileManager.default.fileExists(atPath: file.path) { FileManager.default.createFile(atPath: file.path, contents: nil) }
            let handle = try FileHandle(forWritingTo: file)
            handle.seekToEndOfFile()
            handle.write(Data((Json.dumps(line) + "\n").utf8))
            handle.closeFile()
            say("added \(name): \(question) -> \(answer)")
        } catch { say("could not add the photo: \(errorMessage(error))") }
    }

    /// Stop after the current step (any thread: iOS calls it from background-time expiry handlers).
    nonisolated func cancel() { cancelFlag.set() }

    func say(_ line: String) { log.append(line) }

    func train() {
        guard let bundle = selected, !running else { return }
        running = true
        losses = []
        adapterFiles = []
        accuracyBefore = nil
        accuracyAfter = nil
        cancelFlag.reset()
        let plan = RunPlan(bundle: bundle, steps: steps, onDeviceRealloc: onDeviceRealloc, dataFolder: dataFolder,
                           runs: library.appendingPathComponent("runs"))
        UserDefaults.standard.set(bundle.path, forKey: "lastBundle") // what a background resume continues
        UserDefaults.standard.set(steps, forKey: "lastSteps")
        backgroundTask = UIApplication.shared.beginBackgroundTask(withName: "training") { [weak self] in
            self?.cancel() // out of background time: stop after this step; the checkpoint keeps the run
        }
        let flag = cancelFlag
        Task.detached(priority: .userInitiated) { [weak self] in
            let listener = UIListener(self)
            let outcome = Result { try plan.run(cancelled: { flag.isSet }, listener: listener) }
            await self?.finish(outcome)
        }
    }

    private func finish(_ outcome: Result<RunPlan.Outcome, Error>) {
        running = false
        switch outcome {
        case .success(let o):
            accuracyBefore = o.result.evalBefore
            accuracyAfter = o.result.evalAfter
            adapterFiles = o.shared
            for line in o.skipped { say("left out: \(line)") }
            say(o.result.stop == .cancelled ? "stopped at step \(o.result.step); Train resumes from \(o.result.checkpoint?.lastPathComponent ?? "the start")"
                : "done: \(o.result.step) steps, \(o.result.badSteps) skipped; checkpoint \(o.result.checkpoint?.lastPathComponent ?? "-")")
            if o.result.stop == .cancelled { scheduleBackgroundResume() }
        case .failure(let error):
            say("error: \(errorMessage(error))") // an out-of-memory kill never gets here: the next start resumes
        }
        if backgroundTask != .invalid { UIApplication.shared.endBackgroundTask(backgroundTask) }
        backgroundTask = .invalid
    }

    fileprivate func progress(step: Int, loss: Float, millis: Double) {
        self.step = step
        losses.append(loss)
        stepMillis = millis
        memory = Memory.describe()
    }

    fileprivate func report(_ step: Int, _ r: Evaluate.Report) {
        if step == 0 { accuracyBefore = r } else { accuracyAfter = r }
        say(String(format: "accuracy %@: %.1f%% of %ld held-out examples (loss %.4f)", step == 0 ? "before" : "after", r.accuracy * 100, r.examples, r.loss))
    }

    // -- resuming after the app was suspended or killed (where iOS allows) ------------------------
    /// Registered at launch (before the app finishes launching, as BGTaskScheduler requires).
    static func registerBackgroundTask(_ session: @escaping () -> TrainingSession) {
        BGTaskScheduler.shared.register(forTaskWithIdentifier: backgroundTaskId, using: nil) { task in
            Task { @MainActor in
                let s = session()
                task.expirationHandler = { s.cancel() }
                s.refresh()
                if let path = UserDefaults.standard.string(forKey: "lastBundle") { s.selected = URL(fileURLWithPath: path) }
                s.steps = max(1, UserDefaults.standard.integer(forKey: "lastSteps"))
                s.train()
                while s.running { try? await Task.sleep(nanoseconds: 500_000_000) }
                task.setTaskCompleted(success: true)
            }
        }
    }

    private func scheduleBackgroundResume() {
        let request = BGProcessingTaskRequest(identifier: TrainingSession.backgroundTaskId)
        request.requiresExternalPower = true // long training only while charging, as iOS prefers
        do { try BGTaskScheduler.shared.submit(request) } catch { say("background resume not scheduled: \(errorMessage(error))") }
    }
}

/// A thread-safe stop flag the loop polls before every step.
final class CancelFlag: @unchecked Sendable {
    private let lock = NSLock()
    private var value = false
    var isSet: Bool { lock.lock(); defer { lock.unlock() }; return value }
    func set() { lock.lock(); value = true; lock.unlock() }
    func reset() { lock.lock(); value = false; lock.unlock() }
}

/// Forwards the loop's events to the UI (the loop runs off the main thread).
final class UIListener: TrainListener, @unchecked Sendable {
    private weak var session: TrainingSession?
    private var last = Date()
    init(_ session: TrainingSession?) { self.session = session }

    private func main(_ f: @escaping @MainActor (TrainingSession) -> Void) {
        Task { @MainActor [weak session] in if let session { f(session) } }
    }

    func onStep(_ step: Int, _ loss: Float) {
        let millis = Date().timeIntervalSince(last) * 1000
        last = Date()
        main { $0.progress(step: step, loss: loss, millis: millis) }
    }
    func onBadStep(_ step: Int, _ loss: Float, _ badSteps: Int) { main { $0.say("step \(step): loss \(loss), not applied (\(badSteps) so far)") } }
    func onPhase(_ step: Int, _ phase: Int) { main { $0.say("step \(step): rank phase \(phase)") } }
    func onCheckpoint(_ step: Int, _ dir: URL) { main { $0.say("checkpoint \(dir.lastPathComponent)") } }
    func onRealloc(_ step: Int, _ event: JSONObject) { main { $0.say("re-allocation: \(Json.dumps(.object(event)))") } }
    func onEval(_ step: Int, _ report: Evaluate.Report) { main { $0.report(step, report) } }
}
