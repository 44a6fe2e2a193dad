import Charts
import PhotosUI
import PersonalizationCore
import SwiftUI
import UniformTypeIdentifiers

/// Open a bundle (the bundled sample, Documents/bundles, or a folder from Files), add photos with
/// their answer, train with progress, loss chart, step time and memory, cancel and resume, see the
/// held-out accuracy before and after, share the personal adapter.
@main
struct MobilePeftDemoApp: App {
    @StateObject private var session: TrainingSession

    init() {
        let s = TrainingSession()
        _session = StateObject(wrappedValue: s)
        TrainingSession.registerBackgroundTask { s }
    }

    var body: some Scene { WindowGroup { ContentView(session: session) } }
}

struct ContentView: View {
    @ObservedObject var session: TrainingSession
    @State private var importing = false
    @State private var photo: PhotosPickerItem?
    @State private var question = "what is in the picture ?"
    @State private var answer = ""

    var body: some View {
        NavigationStack {
            Form {
                Section("Bundle") {
                    Picker("Bundle", selection: $session.selected) {
                        ForEach(session.bundles, id: \.self) { Text($0.lastPathComponent).tag(Optional($0)) }
                    }
                    Button("Open a bundle folder from Files…") { importing = true }
                }
                Section("Your examples (\(session.dataFolder.lastPathComponent)/)") {
                    TextField("Question", text: $question)
                    TextField("Answer", text: $answer)
                    PhotosPicker("Pick a photo for this answer", selection: $photo, matching: .images)
                }
                Section("Train") {
                    Stepper("Steps: \(session.steps)", value: $session.steps, in: 1...10_000)
                    Toggle("Re-allocate ranks on device (hydra-rank, pte)", isOn: $session.onDeviceRealloc)
                    if session.running {
                        ProgressView(value: Double(session.step), total: Double(session.steps))
                        Button("Cancel", role: .destructive) { session.cancel() }
                    } else {
                        Button("Train (resumes from the last checkpoint)") { session.train() }.disabled(session.selected == nil)
                    }
                    Text(String(format: "step %ld · %.0f ms/step · %@", session.step, session.stepMillis, session.memory)).font(.footnote)
                    if !session.losses.isEmpty {
                        Chart(Array(session.losses.enumerated()), id: \.offset) { LineMark(x: .value("Step", $0.offset + 1), y: .value("Loss", Double($0.element))) }
                            .frame(height: 160)
                    }
                }
                Section("Held-out accuracy") {
                    Text("before: \(percent(session.accuracyBefore)) · after: \(percent(session.accuracyAfter))")
                }
                if !session.adapterFiles.isEmpty {
                    Section("Personal adapter") {
                        ForEach(session.adapterFiles, id: \.self) { url in ShareLink(item: url) { Label(url.lastPathComponent, systemImage: "square.and.arrow.up") } }
                    }
                }
                Section("Log") {
                    ForEach(Array(session.log.suffix(200).enumerated()), id: \.offset) { Text($0.element).font(.system(.footnote, design: .monospaced)) }
                }
            }
            .navigationTitle("mobile-peft")
        }
        .onAppear { session.refresh() }
        .fileImporter(isPresented: $importing, allowedContentTypes: [.folder]) { picked in
            if case .success(let url) = picked { session.importBundle(url) }
        }
        .onChange(of: photo) { item in
            guard let item else { return }
            Task {
                if let data = try? await item.loadTransferable(type: Data.self), !answer.isEmpty {
                    session.addExample(imageData: data, question: question, answer: answer)
                } else {
                    session.say("pick a photo after typing its answer")
                }
                photo = nil
            }
        }
    }

    private func percent(_ r: Evaluate.Report?) -> String { r.map { String(format: "%.1f%% (%ld)", $0.accuracy * 100, $0.examples) } ?? "–" }
}
