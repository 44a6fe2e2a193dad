import SwiftUI

/// Pick a bundle copied into the app's Documents (Finder / Files app file sharing), train N steps on
/// the folder data set in Documents/data, show the loss. Checkpoints go to Library/checkpoints/<bundle>.
@main
struct MobilePeftDemoApp: App {
    var body: some Scene { WindowGroup { ContentView() } }
}

struct ContentView: View {
    @State private var bundles: [String] = []
    @State private var selected = ""
    @State private var steps = 20
    @State private var log = ""
    @State private var running = false

    private var documents: URL { FileManager.default.urls(for: .documentDirectory, in: .userDomainMask)[0] }
    private var bundleRoot: URL { documents.appendingPathComponent("bundles") }

    var body: some View {
        VStack(alignment: .leading, spacing: 12) {
            Picker("Bundle", selection: $selected) { ForEach(bundles, id: \.self) { Text($0) } }
            Stepper("Steps: \(steps)", value: $steps, in: 1...10_000)
            Button(running ? "Training..." : "Train") { train() }.disabled(running || selected.isEmpty)
            ScrollView { Text(log).font(.system(.footnote, design: .monospaced)).frame(maxWidth: .infinity, alignment: .leading) }
        }
        .padding()
        .onAppear {
            let names = (try? FileManager.default.contentsOfDirectory(atPath: bundleRoot.path)) ?? []
            bundles = names.filter { FileManager.default.fileExists(atPath: bundleRoot.appendingPathComponent($0).appendingPathComponent(Contract.manifestFile).path) }.sorted()
            selected = bundles.first ?? ""
            if bundles.isEmpty { log = "No bundle in \(bundleRoot.path); copy one there (README.md).\n" }
        }
    }

    private func say(_ line: String) { DispatchQueue.main.async { log += line + "\n" } }

    private func train() {
        running = true
        let dir = bundleRoot.appendingPathComponent(selected), n = steps
        DispatchQueue.global(qos: .userInitiated).async {
            defer { DispatchQueue.main.async { running = false } }
            do { try run(dir, steps: n) } catch { say("error: \(error)") }
        }
    }

    private func run(_ bundleDir: URL, steps: Int) throws {
        let manifest = try Manifest.load(bundleDir)
        try manifest.verifyFiles()
        say("bundle \(bundleDir.lastPathComponent): format \(manifest.format), \(manifest.trainable.count) trainable tensors, \(manifest.schedule.masks.count) rank masks; sha256 ok")
        let tokenizer = try WordTokenizer.load(manifest.file(manifest.inputSpec.tokenizerFile))
        let pre = try Preprocessor(spec: manifest.inputSpec, tokenizer: tokenizer)
        let examples = try Preprocessor.loadFolder(documents.appendingPathComponent("data"))
        guard !examples.isEmpty else { throw BundleError("no examples in Documents/data") }
        let library = FileManager.default.urls(for: .libraryDirectory, in: .userDomainMask)[0]
        let ckpt = library.appendingPathComponent("checkpoints").appendingPathComponent(bundleDir.lastPathComponent)
        let (trainer, start) = try Trainers.open(manifest, checkpointDir: ckpt)
        if start > 0 { say("resumed at step \(start)") }
        let b = manifest.inputSpec.batchSize
        var phase = -1
        for step in start..<(start + steps) {
            let p = manifest.schedule.phaseIndex(at: step)
            if p != phase { say("step \(step): rank phase \(p)"); phase = p }
            let batch = try pre.batch((0..<b).map { examples[(step * b + $0) % examples.count] })
            let t0 = Date()
            let loss = try trainer.step(step, batch: batch)
            say(String(format: "step %ld  loss %.4f  %.0f ms", step, loss, Date().timeIntervalSince(t0) * 1000))
            if (step + 1) % 10 == 0 { try trainer.saveCheckpoint(ckpt, step: step + 1) }
        }
        try trainer.saveCheckpoint(ckpt, step: start + steps)
        say("checkpoint: \(ckpt.path)")
    }
}
